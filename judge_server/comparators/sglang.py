"""A judge on SGLang: its native ``POST /generate`` API, or an in-process ``sglang.Engine``.

Both send, per comparison, the prompt (token ids when the tokenizer is known, else text) with
``sampling_params={"max_new_tokens": 1, "temperature": 0}``, ``return_logprob=True`` and
``logprob_start_len=-1`` (no prompt log-probabilities: they would cost the prefix cache), and

- ``token_ids_logprob=[id_A, id_B]`` when the verdict token ids are known: the answer's
  ``meta_info.output_token_ids_logprobs[0]`` lists ``[logprob, token_id, text]`` for exactly
  those ids;
- otherwise ``top_logprobs_num=k`` and ``return_text_in_logprobs=True``: the verdict comes
  from ``meta_info.output_top_logprobs[0]`` by token text (the top-k rule of
  :mod:`.verdict`).

``meta_info.prompt_tokens`` and ``meta_info.cached_tokens`` (prefix-cache hits) are counted
in :attr:`stats`. The request and response shapes are SGLang's documented
``GenerateReqInput`` and ``meta_info``; SGLang needs CUDA, so this project's tests check them
against a fake server and a fake engine only. SGLang's OpenAI-compatible server works with
:class:`~.openai.OpenAIComparator` too (top-k verdicts: it has no ``logprob_token_ids``).

The in-process engine sends a batch in calls of at most :data:`PROMPTS_PER_CALL` prompts, all at
once: the engine batches them together, and each call that returns is the progress the watch on
a hung judge sees (:mod:`.health`; the engine reports nothing finer), so a batch fails as hung
only when no call has returned for 1.5 x ``timeout_s``, however large the batch.

The HTTP backend needs nothing beyond the base install; the in-process engine needs
``pip install 'reasoning-arena[sglang]'`` and a GPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .model import (
    Call,
    HTTPModelComparator,
    MalformedAnswer,
    ModelComparator,
    Scored,
    load_tokenizer,
    malformed,
    require,
)
from .prompt import JudgeInput
from .verdict import JudgeStats, verdict_from_top

PROMPTS_PER_CALL = 64
"""Most prompts in one ``async_generate`` call of the in-process engine: the grain at which
its progress shows (a call of 64 prompts must end within 1.5 x the judge's timeout)."""


def generate_request(
    prompt: JudgeInput, verdict_ids: tuple[int, int] | None, top_logprobs: int
) -> dict[str, Any]:
    """The ``/generate`` (or ``Engine.async_generate``) arguments for one prompt."""
    request: dict[str, Any] = {
        "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
        "return_logprob": True,
        "logprob_start_len": -1,
    }
    if prompt.token_ids:
        request["input_ids"] = list(prompt.token_ids)
    else:
        request["text"] = prompt.text
    if verdict_ids is not None:
        request["token_ids_logprob"] = list(verdict_ids)
    else:
        request["top_logprobs_num"] = top_logprobs
        request["return_text_in_logprobs"] = True
    return request


def generate_verdict(
    name: str,
    answer: Any,
    verdict_ids: tuple[int, int] | None,
    verdict_texts: tuple[str, str],
    stats: JudgeStats,
) -> float:
    """``p`` from one ``/generate`` answer (``{"text", "meta_info": {...}}``)."""
    entries: list[tuple[int, float]] | list[tuple[str, float]]  # by token id, or by text
    try:
        meta = answer["meta_info"]
        if not isinstance(meta, dict):
            raise TypeError("meta_info is not an object")
        if verdict_ids is not None:
            rows = meta["output_token_ids_logprobs"][0]
            entries = [(int(row[1]), float(row[0])) for row in rows]
        else:
            rows = meta["output_top_logprobs"][0]
            entries = [(str(row[2]), float(row[0])) for row in rows if row[2] is not None]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise malformed(name, "no log-probabilities of the first output token", exc) from exc
    stats.add_tokens(meta.get("prompt_tokens"), meta.get("cached_tokens"))
    if verdict_ids is not None:
        a, b = verdict_ids
        found = dict(entries)
        if a in found and b in found:
            return stats.add_ids(found[a], found[b])
        return stats.add_top(verdict_from_top(entries, a, b))
    return stats.add_top(verdict_from_top(entries, *verdict_texts))


class SGLangComparator(HTTPModelComparator):
    """Judge with the model of an SGLang server, through its native ``/generate``.

    ``tokenizer``: the served model's tokenizer (name or path) to send token ids and read
    verdicts by id; ``None``: ``model`` when it is a local directory; ``False``: none.
    """

    name = "sglang"
    extra = "openai"  # the tokenizer (transformers); the HTTP client is a base dependency

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        tokenizer: str | Literal[False] | None = None,
        top_logprobs: int = 20,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.model = model
        self.tokenizer_name = tokenizer
        self.top_logprobs = top_logprobs

    async def _load(self) -> Any:
        self._open_client()
        name = self.tokenizer_name
        if name is None and self.model and Path(self.model).is_dir():
            name = self.model
        if not name:
            return None
        return await asyncio.to_thread(load_tokenizer, name, extra=self.extra)

    async def _healthy(self) -> bool:
        await self.request("GET", "/health", parse=False)  # an empty 200
        return True

    def _call(self, prompt: JudgeInput) -> tuple[str, dict[str, Any]]:
        return "/generate", generate_request(prompt, self.verdict_ids, self.top_logprobs)

    def _read(self, answer: Any) -> float:
        assert self.prompt is not None
        return generate_verdict(
            self.name, answer, self.verdict_ids, self.prompt.verdict_texts, self.stats
        )


class SGLangEngineComparator(ModelComparator):
    """Judge with ``model`` on an in-process ``sglang.Engine`` (needs a GPU).

    A batch goes to the engine in ``async_generate`` calls (lists of prompts) of at most
    :data:`PROMPTS_PER_CALL` prompts, sent at once.
    ``engine_args`` go to ``sglang.Engine`` (``mem_fraction_static``, ``tp_size``, ...);
    ``engine_factory`` replaces ``sglang.Engine`` (tests).
    """

    name = "sglang"
    extra = "sglang"
    requires = ("sglang",)

    def __init__(
        self,
        model: str,
        *,
        engine_args: Mapping[str, Any] | None = None,
        engine_factory: Callable[..., Any] | None = None,
        **prompt_options: Any,
    ) -> None:
        super().__init__(**prompt_options)
        self.model = model
        self.engine_args = dict(engine_args or {})
        self.engine_factory = engine_factory
        self.engine: Any = None

    async def _load(self) -> Any:
        factory = self.engine_factory
        if factory is None:
            factory = require("sglang", self.extra).Engine
        tokenizer = await asyncio.to_thread(load_tokenizer, self.model, extra=self.extra)
        self.engine = await asyncio.to_thread(factory, model_path=self.model, **self.engine_args)
        return tokenizer

    async def _close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    def _calls(self, inputs: Sequence[JudgeInput]) -> list[Call]:
        step = PROMPTS_PER_CALL
        return [Call(self._generate(inputs[k : k + step]), len(inputs[k : k + step]))
                for k in range(0, len(inputs), step)]

    async def _generate(self, inputs: Sequence[JudgeInput]) -> list[Scored]:
        """One ``async_generate`` call for ``inputs``."""
        requests = [generate_request(p, self.verdict_ids, 0) for p in inputs]
        batch: dict[str, Any] = {
            "input_ids": [r["input_ids"] for r in requests],
            "sampling_params": requests[0]["sampling_params"],
            "return_logprob": True,
            "logprob_start_len": -1,
            "token_ids_logprob": [r["token_ids_logprob"] for r in requests],
        }
        answers = await self.engine.async_generate(**batch)
        self.watch.answered()  # the engine made progress
        if isinstance(answers, dict):
            answers = [answers]
        if not isinstance(answers, list) or len(answers) != len(inputs):
            raise malformed(self.name, f"not one answer per prompt ({len(inputs)} prompts)")
        assert self.prompt is not None
        texts = self.prompt.verdict_texts
        out: list[Scored] = []
        for answer in answers:  # a malformed answer fails its comparison only
            try:
                out.append(generate_verdict(self.name, answer, self.verdict_ids, texts,
                                            self.stats))
            except MalformedAnswer as exc:
                out.append(exc)
        return out


__all__ = [
    "PROMPTS_PER_CALL",
    "SGLangComparator",
    "SGLangEngineComparator",
    "generate_request",
    "generate_verdict",
]
