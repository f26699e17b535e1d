"""``python -m judge_server``: the same command line as ``arena-judge``."""

import sys

from judge_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
