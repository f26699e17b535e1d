"""A judge behind any OpenAI-compatible server: ``/v1/completions`` or ``/v1/chat/completions``.

One request per comparison, ``max_tokens=1``, ``temperature=0``, asking for log-probabilities
of the next token; connections pooled, at most ``max_concurrency`` requests in flight,
timeouts and bounded retries (:class:`~.model.HTTPModelComparator`).

With the model's tokenizer (``tokenizer=``, or ``model`` when it is a local directory), the
prompt is sent as token ids (completions; exactly the tokens other backends see, and no
second BOS from the server) and the verdict is read by id: the request carries vLLM's
``logprob_token_ids=[id_A, id_B]`` and ``return_tokens_as_token_ids``, so the server returns
the log-probabilities of exactly the two verdict tokens (``logprob_token_ids=False`` turns
these extensions off for servers that refuse unknown fields). Without a tokenizer, the prompt
is text and the verdict comes from the top ``top_logprobs`` tokens by their text (see
:mod:`.verdict` for the rule when a verdict is not listed).

``endpoint="chat"`` sends the filled template as the user's message: the server applies the
model's chat template. The extra ``openai`` installs ``transformers`` for the tokenizer; the
HTTP client (httpx) is a base dependency.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from ..errors import JudgeError
from .model import HTTPModelComparator, load_tokenizer, malformed
from .prompt import JudgeInput, JudgePrompt
from .verdict import verdict_from_top

TOKEN_ID_PREFIX = "token_id:"


class OpenAIComparator(HTTPModelComparator):
    """Judge with a model served behind an OpenAI-compatible API (vLLM, SGLang, others).

    Parameters
    ----------
    base_url
        The server, e.g. ``http://judge:8000`` (``/v1`` is added).
    model
        The ``model`` field of requests; also the tokenizer when it is a local directory.
    endpoint
        ``"completions"`` (default) or ``"chat"``.
    tokenizer
        A tokenizer name or path; ``False`` for none (text prompts, top-k verdicts).
    logprob_token_ids
        Use vLLM's ``logprob_token_ids`` when the verdict token ids are known.
    top_logprobs
        ``k`` of the top-k fallback.
    """

    name = "openai"
    extra = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        endpoint: Literal["completions", "chat"] = "completions",
        tokenizer: str | Literal[False] | None = None,
        logprob_token_ids: bool = True,
        top_logprobs: int = 20,
        **options: Any,
    ) -> None:
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be completions or chat, not {endpoint!r}")
        if endpoint == "chat":
            options["prompt_format"] = "chat"
        super().__init__(base_url, **options)
        self.model = model
        self.endpoint = endpoint
        self.tokenizer_name = tokenizer
        self.logprob_token_ids = logprob_token_ids
        self.top_logprobs = top_logprobs

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"

    async def _load(self) -> Any:
        self._open_client()
        name = self.tokenizer_name
        if name is None and Path(self.model).is_dir():
            name = self.model
        if not name:
            return None
        return await asyncio.to_thread(load_tokenizer, name, extra=self.extra)

    def _make_prompt(self, tokenizer: Any) -> JudgePrompt:
        if self.endpoint == "chat" and not getattr(tokenizer, "chat_template", None):
            tokenizer = None  # the server applies its template; read verdicts by text
        return super()._make_prompt(tokenizer)

    async def reset_prefix_cache(self) -> bool:
        """Empty a vLLM server's prefix cache (benchmarks; only a server started with
        ``VLLM_SERVER_DEV_MODE=1`` has the endpoint). True when it did."""
        try:
            await self.request("POST", "/reset_prefix_cache", parse=False)
        except JudgeError:
            return False
        return True

    async def _healthy(self) -> bool:
        await self.request("GET", "/v1/models")
        return True

    def body(self, prompt: JudgeInput) -> dict[str, Any]:
        """The request for one prompt."""
        by_id = self.logprob_token_ids and self.verdict_ids is not None
        body: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt.message}]
            body["logprobs"] = True
            body["top_logprobs"] = 2 if by_id else self.top_logprobs
        else:
            body["prompt"] = list(prompt.token_ids) if prompt.token_ids else prompt.text
            body["logprobs"] = 2 if by_id else self.top_logprobs
        if by_id and self.verdict_ids is not None:  # by_id says so; again for the type
            body["logprob_token_ids"] = list(self.verdict_ids)
            body["return_tokens_as_token_ids"] = True
        if prompt.cache_salt:  # vLLM: this run's prompts share no cached prefix with others
            body["cache_salt"] = prompt.cache_salt
        return body

    def _call(self, prompt: JudgeInput) -> tuple[str, dict[str, Any]]:
        return self.path, self.body(prompt)

    def _read(self, answer: Any) -> float:
        return self.verdict(answer)

    def verdict(self, answer: Any) -> float:
        """``p`` from one response (and its token counts into :attr:`stats`)."""
        try:
            choice = answer["choices"][0]
            logprobs = choice["logprobs"]
            if self.endpoint == "chat":
                first = logprobs["content"][0]["top_logprobs"]
                entries = [(_key(e["token"]), float(e["logprob"])) for e in first]
            else:
                first = logprobs["top_logprobs"][0]
                entries = [(_key(token), float(lp)) for token, lp in first.items()]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(self.name, "no log-probabilities of the first token", exc) from exc
        usage = answer.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        self.stats.add_tokens(usage.get("prompt_tokens"), details.get("cached_tokens"))
        by_id = dict(e for e in entries if isinstance(e[0], int))
        if self.verdict_ids is not None and by_id:
            a, b = self.verdict_ids
            if a in by_id and b in by_id:
                return self.stats.add_ids(by_id[a], by_id[b])
            return self.stats.add_top(verdict_from_top(entries, a, b))
        assert self.prompt is not None
        a_text, b_text = self.prompt.verdict_texts
        return self.stats.add_top(verdict_from_top(entries, a_text, b_text))


def _key(token: Any) -> str | int:
    """A token id from vLLM's ``token_id:N`` keys; the token text otherwise."""
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX) :])
        except ValueError:
            return token
    if not isinstance(token, str):
        raise TypeError(f"token {token!r} is not text")
    return token


__all__ = ["OpenAIComparator"]
