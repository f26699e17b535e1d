"""ARCHITECTURE.md stays true: every module and file it names exists, every name it says a
module defines is defined there, and every module of the service core is on the page."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
TOP = "judge_server|trainer_client|protos|tests|scripts"
PATHS = sorted(set(re.findall(rf"`((?:{TOP})/[\w/.]*)`", PAGE)))


def test_every_path_named_exists():
    assert len(PATHS) > 20
    missing = [p for p in PATHS if not (ROOT / p).exists()]
    assert not missing, f"ARCHITECTURE.md names what does not exist: {missing}"


def defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name for node in ast.walk(tree)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    } | {
        target.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }


def test_names_said_to_live_in_a_module_are_defined_there():
    # "`module.py` (`Name`" and "`Name` (`module.py`)": the pairs the page states
    pairs = re.findall(r"`([\w/]+\.py)`\s+\(`(\w+)`", PAGE)
    pairs += [(m, n) for n, m in re.findall(r"`(\w+)`\s+\(`([\w/]+\.py)`\)", PAGE)]
    assert len(pairs) >= 5
    wrong = [(m, n) for m, n in pairs if (ROOT / m).exists() and n not in defined(ROOT / m)]
    assert not wrong, f"ARCHITECTURE.md says these modules define names they do not: {wrong}"


def test_every_module_of_the_core_is_on_the_page():
    core = [
        p.relative_to(ROOT).as_posix()
        for folder in ("", "core", "transports", "arena")
        for p in (ROOT / "judge_server" / folder).glob("*.py")
    ]
    left_out = [m for m in core if not m.endswith("__init__.py") and not m.endswith("__main__.py")
                and m not in PAGE]
    assert not left_out, f"ARCHITECTURE.md does not say what these modules do: {left_out}"


def test_the_service_reads_in_one_sitting():
    lines = (ROOT / "judge_server/core/service.py").read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"judge_server/core/service.py has {lines} lines: give a part its module"
