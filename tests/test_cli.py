"""The command line: its parser, the options table and a small benchmark run."""

import json
import subprocess
import sys

import pytest

from judge_server.cli import main
from judge_server.settings import options_table


def test_config_prints_the_options_table(capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr().out.strip() == options_table()


def test_bench_tournaments_prints_json(capsys):
    assert main(["bench", "tournaments", "--sizes", "8", "--trials", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sizes"][0]["n_traces"] == 8
    assert "tau_fraction_of_round_robin_both" in result["sizes"][0]["checks"]


def test_serve_refuses_a_bad_option_with_its_name(capsys):
    assert main(["serve", "--design", "knockout"]) == 2
    assert "design" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["judge-everything"])


def test_python_m_judge_server_runs_the_same_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "judge_server", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "arena-judge" in done.stdout
    for command in ("serve", "config", "hash-key", "bench"):
        assert command in done.stdout
