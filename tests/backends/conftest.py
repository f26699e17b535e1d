"""Real judge backends on a tiny local model: built once per session, one vLLM server shared.

The tiny model (:mod:`judge_server.bench.tiny_model`) is random: its verdicts mean nothing,
but they vary from prompt to prompt, so comparing a backend's ``p`` with what the model's
own logits give (``reference_p``: an unbatched transformers forward pass) checks the whole
path: prompt, tokens, engine, log-probabilities, verdict.

Without vLLM (or torch) installed these tests skip, unless ``ARENA_REQUIRE_BACKENDS=1`` (set
by ``scripts/test.sh``, so CI cannot skip them silently).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from judge_server.bench.process import stop

from ..optional import require
from ..ports import free_port

VLLM_START_TIMEOUT_S = 300
FIXED_NONCE_KEY = b"tests-nonce-key!"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    require("torch")
    require("transformers")
    from judge_server.bench import tiny_model

    return tiny_model.build(tmp_path_factory.mktemp("tiny-judge"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def reference_p(tiny_model):
    """``reference_p(token_ids, (id_a, id_b)) -> p`` from the model's own last logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()

    def p(token_ids, verdict_ids) -> float:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([list(token_ids)])).logits[0, -1]
            logprobs = torch.log_softmax(logits.double(), dim=-1)
        a, b = (float(logprobs[i]) for i in verdict_ids)
        return 1.0 / (1.0 + math.exp(b - a))

    return p


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """A vLLM OpenAI-compatible server on the tiny model: its base URL."""
    require("vllm")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
        "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager",
        "--gpu-memory-utilization", "0.1", "--host", "127.0.0.1", "--port", str(port),
        "--enable-prompt-tokens-details", "--disable-log-stats",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + VLLM_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)


HELPER = Path(__file__).with_name("vllm_engine_helper.py")


def run_engine_helper(model: Path, job: dict, tmp_path: Path) -> dict:
    """Run ``vllm_engine_helper.py`` (the in-process engine, in a process of its own)."""
    job_file, out_file = tmp_path / "job.json", tmp_path / "out.json"
    job_file.write_text(json.dumps({"model": str(model), **job}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [sys.executable, str(HELPER), str(job_file), str(out_file)],
        env=env, capture_output=True, text=True, timeout=VLLM_START_TIMEOUT_S,
    )
    if done.returncode != 0:
        pytest.fail(f"the engine helper failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(out_file.read_text())
