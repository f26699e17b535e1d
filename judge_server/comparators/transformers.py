"""A judge on a local model through ``transformers`` and torch, on the CPU or a GPU.

No server, no engine: batched forward passes over the prompts (left-padded, with attention
mask and position ids, so padding changes nothing), and the verdict read from the last
position's logits directly: ``log_softmax`` over the vocabulary, then the two verdict token
ids. Only the last position's logits are computed (``logits_to_keep=1``) where the model
supports it. There is no prefix cache: every comparison pays its whole prefill. For
development, small judges, and as the reference the engine backends are checked against.

Forward passes run in a worker thread, one at a time; prompts are grouped by length so that
a batch pads little. ``pip install 'reasoning-arena[transformers]'``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, cast

from .model import ModelComparator, load_tokenizer, require
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
        self._logits_to_keep = True

    def __repr__(self) -> str:
        return f"TransformersComparator(model={self.model_name!r}, device={self.device!r})"

    async def _load(self) -> Any:
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

    async def _score(self, inputs: Sequence[JudgeInput]) -> list[float]:
        # Token ids: this judge always has its tokenizer.
        ids = cast("list[Sequence[int]]", [p.token_ids for p in inputs])
        logprobs = await asyncio.to_thread(self.verdict_logprobs, ids)
        return [self.stats.add_ids(a, b) for a, b in logprobs]

    def verdict_logprobs(self, prompts: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        """``(logprob A, logprob B)`` of the next token after each prompt (blocking)."""
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


__all__ = ["TransformersComparator"]
