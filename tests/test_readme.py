"""The README stays true: its options table and its test command."""

import pathlib
import re

from judge_server.settings import options_table

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_options_table_is_current():
    match = re.search(r"<!-- options-table.*?-->\n(.*?)\n<!-- /options-table -->", README, re.S)
    assert match, "README lost its options-table markers"
    assert match.group(1) == options_table(), "run `arena-judge config` and paste it in README.md"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert "bash scripts/test.sh" in blocks
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/test.sh$", ci, re.M)
