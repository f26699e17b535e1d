"""What the integrations share: texts out of trainer data, stable ids, the per-sample route.

No trainer is imported here. :class:`SampleScorer` posts samples to the judge server's
per-sample route (``POST /v1/openrlhf/{run_id}``, :mod:`judge_server.transports.assembly`),
which buffers them into groups; on any failure it answers with the verifiable reward, so that
a judge that is down or slow never stops training.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger("trainer_client")

# The server's group timeout is 120 s by default; a sample's request waits for its group.
DEFAULT_SAMPLE_TIMEOUT_S = 150.0
_NO_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=64)


def digest(text: str) -> str:
    """A short stable id for a text (prompt ids must be short; prompts can be long)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or a list of parts (text parts kept)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return "" if content is None else str(content)


def completion_text(completion: Any) -> str:
    """A completion as text: a string as it is; chat messages joined (every message's text)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        return "\n".join(
            message_text(m.get("content")) if isinstance(m, dict) else str(m) for m in completion
        )
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """A prompt as the judge should read it: a string as it is; for chat messages, the last
    user message (the problem), or all messages joined when there is no user message."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return message_text(users[-1].get("content"))
        return completion_text(prompt)
    return str(prompt)


def prompt_key(prompt: Any) -> str:
    """A canonical string for a prompt (strings or chat messages), to tell prompts apart."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(prompt, sort_keys=True, default=str, ensure_ascii=False)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is None or not finite (TRL: None -> NaN)."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class SampleResult:
    """A sample's value from the per-sample route: ``value = verifiable + judge``."""

    value: float
    verifiable: float
    judge: float = 0.0
    judged: bool = False
    fell_back: bool = False
    reason: str = ""


class SampleScorer:
    """Posts one sample at a time to ``{url}/v1/openrlhf/{run_id}?group_size=G``.

    ``url`` is the judge server's HTTP base URL. Every failure (the server down, a timeout, an
    error status, a malformed answer) gives the sample its verifiable reward
    (``fell_back=True``), and is logged. Picklable: the HTTP clients are made on first use.
    """

    def __init__(
        self, url: str, *, run_id: str = "default", group_size: int,
        timeout_s: float = DEFAULT_SAMPLE_TIMEOUT_S,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: must start with http:// or https://, got {url!r}")
        if group_size < 2:
            raise ValueError(f"group_size: must be >= 2, got {group_size}")
        self.url = url.rstrip("/")
        self.run_id = run_id
        self.group_size = int(group_size)
        self.timeout_s = float(timeout_s)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1/openrlhf/{self.run_id}?group_size={self.group_size}"

    def __getstate__(self) -> dict:
        skip = ("_client", "_aclient", "_aloop", "_lock")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client = self._aclient = self._aloop = None
        self._lock = threading.Lock()

    @staticmethod
    def body(
        query: str, prompt: str, label: Any, *, group_id: str | None = None,
        reward: float | None = None,
    ) -> dict:
        body: dict[str, Any] = {"query": [query], "prompts": [prompt], "labels": [label]}
        if group_id is not None:
            body["group_ids"] = [group_id]
        if reward is not None:
            body["verifiable_rewards"] = [reward]
        return body

    def score(self, body: dict, fallback: float) -> SampleResult:
        """The sample's value (blocking), or ``fallback`` when the judge does not answer."""
        with self._lock:  # trainers call this from many threads at once
            if self._client is None:
                # Each waiting sample holds a connection until its group is judged: no limit.
                self._client = httpx.Client(
                    timeout=self.timeout_s, trust_env=False, limits=_NO_LIMITS
                )
        try:
            response = self._client.post(self.endpoint, json=body)
        except httpx.HTTPError as exc:
            return self._fallback(fallback, exc)
        return self._read(response, fallback)

    async def ascore(self, body: dict, fallback: float) -> SampleResult:
        """:meth:`score` for an event loop."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:  # a client belongs to one loop
            self._aclient = httpx.AsyncClient(
                timeout=self.timeout_s, trust_env=False, limits=_NO_LIMITS
            )
            self._aloop = loop
        try:
            response = await self._aclient.post(self.endpoint, json=body)
        except httpx.HTTPError as exc:
            return self._fallback(fallback, exc)
        return self._read(response, fallback)

    def _read(self, response: httpx.Response, fallback: float) -> SampleResult:
        if response.status_code != 200:
            return self._fallback(fallback, f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            value = float(data["rewards"][0])
            verifiable = float(data["scores"][0])
            logs = data.get("extra_logs") or {}
            judge = float((logs.get("arena_judge") or [0.0])[0])
            judged = bool((logs.get("arena_judged") or [0.0])[0])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return self._fallback(fallback, f"malformed answer: {exc}")
        if not (math.isfinite(value) and math.isfinite(verifiable)):
            return self._fallback(fallback, "malformed answer: not finite")
        return SampleResult(value, verifiable, judge, judged)

    @staticmethod
    def _fallback(fallback: float, why: object) -> SampleResult:
        logger.warning("judge server did not score a sample (%s); verifiable reward kept", why)
        return SampleResult(fallback, fallback, fell_back=True, reason=str(why)[:200])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None and self._aloop is asyncio.get_running_loop():
            await self._aclient.aclose()
        self._aclient = self._aloop = None
