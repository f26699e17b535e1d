"""A judge on a local model through ``transformers`` and torch, on the CPU or a GPU.

No server, no engine: batched forward passes over the prompts (left-padded, with attention
mask and position ids, so padding changes nothing), and the verdict read from the last
position's logits directly: ``log_softmax`` over the vocabulary, then the two verdict token
ids. Only the last position's logits are computed (``logits_to_keep=1``) where the model
supports it. There is no prefix cache: every comparison pays its whole prefill. For
development, small judges, and as the reference the engine backends are checked against.

Forward passes run in the judge's one worker thread, one at a time; prompts are grouped by
length so that a batch pads little. Each forward pass is progress for the watch on a hung judge
(:mod:`.health`; the thread tells the event loop): a batch fails as hung only when no forward
pass has ended for 1.5 x ``timeout_s`` (on the CPU, raise the timeout above a forward pass of
``batch_size`` long prompts). A hung forward pass cannot be stopped: it keeps the worker thread,
and its batch stays owed to the watch until it returns, so the batches queued behind it, and
those sent after the cooldown, fail as hung (without a forward pass) and the judge reads as not
healthy until then; no other thread is taken meanwhile. ``pip install
'reasoning-arena[transformers]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from .model import Call, ModelComparator, Scored, load_tokenizer, require
from .prompt import JudgeInput


class TransformersComparator(ModelComparator):
    """Judge with ``model`` (a path or a Hugging Face name) loaded in this process.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``...;
    ``dtype``: ``"auto"`` (the checkpoint's), ``"float32"``, ``"bfloat16"``...;
    ``batch_size``: prompts per forward pass.
    """

    name = "transformers"
    extra = "transformers"
    requires = ("torch", "transformers")

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        **prompt_options: Any,
    ) -> None:
        super().__init__(**prompt_options)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.model: Any = None
        self._pad_id = 0
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None  # forward passes, one at a time
        self._logits_to_keep = True

    def __repr__(self) -> str:
        return f"TransformersComparator(model={self.model_name!r}, device={self.device!r})"

    async def _load(self) -> Any:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-judge")
        tokenizer = await asyncio.to_thread(load_tokenizer, self.model_name, extra=self.extra)
        self.model = await asyncio.to_thread(self._load_model)
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        return tokenizer

    def _load_model(self) -> Any:
        torch = require("torch", self.extra)
        transformers = require("transformers", self.extra)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        model = transformers.AutoModelForCausalLM.from_pretrained(self.model_name, dtype=dtype)
        return model.to(device).eval()

    async def _close(self) -> None:
        self.model = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)  # a hung forward pass stays

    def _calls(self, inputs: Sequence[JudgeInput]) -> list[Call]:
        return [Call(self._score(inputs), len(inputs))]

    async def _score(self, inputs: Sequence[JudgeInput]) -> list[Scored]:
        """The batch's forward passes in the worker thread, each one progress for the watch;
        the batch is owed until the thread is done with it, given up or not (module doc)."""
        # Token ids: this judge always has its tokenizer.
        ids = cast("list[Sequence[int]]", [p.token_ids for p in inputs])
        assert self._worker is not None  # started
        watch, loop = self.watch, asyncio.get_running_loop()
        work = self._worker.submit(self.verdict_logprobs, ids, _threadsafe(loop, watch.answered))
        watch.asked()
        work.add_done_callback(_threadsafe(loop, watch.settled))
        logprobs = await asyncio.wrap_future(work)  # cancelled: a work not begun is dropped
        return [self.stats.add_ids(a, b) for a, b in logprobs]

    def verdict_logprobs(
        self, prompts: Sequence[Sequence[int]], progress: Callable[[], None] | None = None
    ) -> list[tuple[float, float]]:
        """``(logprob A, logprob B)`` of the next token after each prompt (blocking);
        ``progress()`` after each forward pass."""
        torch = require("torch", self.extra)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[tuple[float, float]] = [(0.0, 0.0)] * len(prompts)
        ids = torch.tensor(self.verdict_ids)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                rows = [list(prompts[i]) for i in chunk]
                pairs = self._forward(torch, rows, ids).tolist()
                for i, (a, b) in zip(chunk, pairs):
                    out[i] = (a, b)
                if progress is not None:
                    progress()
        for prompt in prompts:
            self.stats.add_tokens(len(prompt), 0)
        return out

    def _forward(self, torch: Any, rows: list[list[int]], ids: Any) -> Any:
        width = max(map(len, rows))
        device = self.model.device
        tokens = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):  # left padding: every prompt ends at the last column
            tokens[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = dict(
            input_ids=tokens.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
        )
        if self._logits_to_keep:
            try:
                logits = self.model(**kwargs, logits_to_keep=1).logits
            except TypeError:  # a model without logits_to_keep
                self._logits_to_keep = False
                logits = self.model(**kwargs).logits
        else:
            logits = self.model(**kwargs).logits
        last = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        return last[:, ids.to(last.device)].cpu()


def _threadsafe(loop: asyncio.AbstractEventLoop, f: Callable[[], None]) -> Callable[..., None]:
    """A callable that any thread may call (with any arguments: a future's done callback) to
    run ``f()`` in ``loop``'s thread; nothing once the loop is closed."""

    def call(*_: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(f)

    return call


__all__ = ["TransformersComparator"]
