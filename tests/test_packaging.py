"""The built wheel ships the typing markers, the protobuf stubs and ``python -m judge_server``.

The repository is installed editable, so the installed package would show the source tree
whatever the packaging says; this builds a real wheel from a copy of the sources (no build
isolation: setuptools is in the test environment, so nothing is downloaded) and reads it.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_py_typed_the_stubs_and_main(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("judge_server", "trainer_client"):
        shutil.copytree(
            ROOT / package, source / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("reasoning_arena-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "judge_server/py.typed",
        "trainer_client/py.typed",
        "trainer_client/_proto/reasoning_arena/v1/arena_pb2.pyi",
        "judge_server/__main__.py",
    } <= names
    # The base install's entry point is the same command line.
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "arena-judge = judge_server.cli:main" in (
        zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_the_extras_that_load_a_tokenizer_can_apply_its_chat_template():
    """transformers applies a chat template with jinja2 but does not require it: without it a
    judge whose tokenizer has a template cannot start (issue 14)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in ("openai", "transformers"):
        assert any(r.replace(" ", "").startswith("jinja2>=3.1") for r in extras[extra]), extra
