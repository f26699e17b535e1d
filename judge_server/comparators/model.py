"""What every model-backed comparator shares: prompts, batch order, verdicts, errors, HTTP.

:class:`ModelComparator` is the base of the LLM judges (:mod:`.vllm`, :mod:`.openai`,
:mod:`.sglang`, :mod:`.transformers`). For a batch of comparisons it

1. starts the backend on first use (:meth:`~ModelComparator.start`: load the engine and the
   tokenizer, or open the connection pool); concurrent callers share one start, and a failed
   start is tried again by the next call;
2. renders every comparison with :class:`~.prompt.JudgePrompt` (off the event loop: the
   tokenizer works in a thread);
3. orders the batch so that prompts sharing prefixes are adjacent (:func:`~.prompt.prefix_order`)
   and hands it to the backend's ``_score``, which returns one ``p`` per prompt, read from the
   verdict token's log-probabilities (:mod:`.verdict`);
4. puts the answers back in the caller's order.

Whatever goes wrong inside (server down, timeout, malformed response, engine crash, a
missing package) leaves :meth:`~ModelComparator.compare` as :class:`JudgeError`; nothing else
does, cancellation apart.

:class:`HTTPModelComparator` adds what the HTTP backends share: one ``httpx.AsyncClient``
connection pool, at most ``max_concurrency`` requests in flight, a timeout per request, and
bounded retries (tenacity) with exponential backoff and full jitter for failures that may pass
(connection errors, timeouts, HTTP 408, 429, 500, 502, 503, 504; ``Retry-After``, in seconds or
as an HTTP date, is honoured up to :data:`MAX_BACKOFF_S`). Other HTTP errors and malformed
responses are not retried.

Heavy packages are imported when a backend starts, never at import time; :func:`require`
names the extra to install when one is missing.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import tenacity

from trainer_client.protocol import parse_retry_after

from ..errors import JudgeError
from .base import Comparator, Comparison, as_verdict
from .prompt import JudgeInput, JudgePrompt, PromptTemplate, prefix_order
from .verdict import NO_PREFERENCE, JudgeStats

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 10.0


class MissingDependency(ImportError):
    """A backend's package is not installed; the message says which extra to install."""


def require(module: str, extra: str) -> Any:
    """Import ``module``, or raise :class:`MissingDependency` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"this judge backend needs {module!r}: pip install 'reasoning-arena[{extra}]' "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def load_tokenizer(name_or_path: str, *, extra: str) -> Any:
    """A Hugging Face tokenizer (blocking; call it in a thread). One with a chat template
    needs jinja2 to apply it: a missing one is said now, naming ``extra``."""
    transformers = require("transformers", extra)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
    if getattr(tokenizer, "chat_template", None):
        require("jinja2", extra)
    return tokenizer


async def gather_all(aws: Sequence[Awaitable[Any]]) -> list[Any]:
    """Like ``asyncio.gather``, but the first failure cancels the others before it is raised."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class ModelComparator(Comparator, abc.ABC):
    """An LLM judge: one prefill and one scored verdict token per comparison.

    Subclasses implement :meth:`_load` (start the backend, return its tokenizer or ``None``)
    and :meth:`_score` (one ``p`` per rendered prompt, recording into :attr:`stats`), and may
    override :meth:`_healthy` and :meth:`_close`.

    Prompt options (every backend): ``template`` (a :class:`~.prompt.PromptTemplate` or its
    text), ``prompt_format`` (``"auto"``, ``"plain"``, ``"chat"``), ``nonce_key`` and
    ``chat_template_kwargs`` (see :class:`~.prompt.JudgePrompt`).
    """

    name = "model"
    extra = ""
    """The ``reasoning-arena`` extra that installs what this backend imports."""
    requires: tuple[str, ...] = ()
    """Modules this backend imports when it starts."""

    def __init__(
        self,
        *,
        template: PromptTemplate | str | None = None,
        prompt_format: Literal["auto", "plain", "chat"] = "auto",
        nonce_key: bytes | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(template, str):
            template = PromptTemplate(template)
        self._prompt_options: dict[str, Any] = {
            "template": template or PromptTemplate(),
            "format": prompt_format,
            "chat_template_kwargs": dict(chat_template_kwargs or {}),
        }
        if nonce_key is not None:
            self._prompt_options["nonce_key"] = nonce_key
        self.prompt: JudgePrompt | None = None
        self.verdict_ids: tuple[int, int] | None = None
        self.stats = JudgeStats()
        self._start_task: asyncio.Task | None = None
        self._run_templates: dict[str, PromptTemplate] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def check_installed(self) -> None:
        """Raise :class:`MissingDependency` when a package this backend needs is missing
        (cheap: nothing is imported)."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                raise MissingDependency(
                    f"the {self.name} judge needs {module!r}: "
                    f"pip install 'reasoning-arena[{self.extra}]'"
                )

    async def start(self) -> None:
        """Start the backend (idempotent). Raises :class:`JudgeError` when it cannot."""
        if self._start_task is None or (
            self._start_task.done()
            and (self._start_task.cancelled() or self._start_task.exception() is not None)
        ):
            self._start_task = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._start_task)
        except JudgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the judge is a JudgeError
            raise JudgeError(f"{self.name}: cannot start: {type(exc).__name__}: {exc}") from exc

    async def _start(self) -> None:
        tokenizer = await self._load()
        prompt = self._make_prompt(tokenizer)
        for run_id, template in self._run_templates.items():
            prompt.set_run_template(run_id, template)
        self.verdict_ids = prompt.verdict_token_ids()
        self.prompt = prompt
        logger.info(
            "%s judge ready: %s prompts, verdict tokens %s",
            self.name, prompt.format, self.verdict_ids or prompt.verdict_texts,
        )

    def _make_prompt(self, tokenizer: Any) -> JudgePrompt:
        return JudgePrompt(tokenizer=tokenizer, **self._prompt_options)

    def set_run_template(self, run_id: str, template: PromptTemplate | str | None) -> None:
        """Judge ``run_id``'s comparisons with its own template (checked now: raises
        :class:`~.prompt.InvalidTemplate`); ``None`` restores the server's. (A
        :class:`~.cached.CachedComparator` around it drops the run's cached verdicts.)"""
        if template is None:
            self._run_templates.pop(run_id, None)
        else:
            template = PromptTemplate(template) if isinstance(template, str) else template
            self._run_templates[run_id] = template
        if self.prompt is not None:
            self.prompt.set_run_template(run_id, template)

    def forget_run(self, run_id: str) -> None:
        self.set_run_template(run_id, None)

    @property
    def started(self) -> bool:
        task = self._start_task
        return bool(task and task.done() and not task.cancelled() and task.exception() is None)

    async def check_health(self) -> bool:
        """True once the backend has started and answers. The first call starts it in the
        background (a readiness probe thus loads the model), and says False until then."""
        if not self.started:
            if self._start_task is None or self._start_task.done():
                task = asyncio.ensure_future(self.start())
                task.add_done_callback(_retrieve)
            return False
        try:
            return await self._healthy()
        except Exception:  # noqa: BLE001 - a failing check is "not healthy"
            logger.warning("%s health check failed", self.name, exc_info=True)
            return False

    async def aclose(self) -> None:
        task, self._start_task = self._start_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close()

    # -- judging -----------------------------------------------------------------------------

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        if not comparisons:
            return []
        try:
            await self.start()
            assert self.prompt is not None
            inputs = await asyncio.to_thread(self.prompt.render_all, comparisons)
            order = prefix_order(inputs)
            answers = await self._score([inputs[i] for i in order])
            if len(answers) != len(order):
                raise JudgeError(
                    f"{self.name}: {len(answers)} verdicts for {len(order)} comparisons"
                )
        except JudgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the judge is a JudgeError
            raise JudgeError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        out = [NO_PREFERENCE] * len(comparisons)
        for k, i in enumerate(order):
            out[i] = as_verdict(answers[k])
        return out

    def render(self, comparisons: Sequence[Comparison]) -> list[JudgeInput]:
        """The prompts this judge sends for ``comparisons`` (after :meth:`start`)."""
        if self.prompt is None:
            raise RuntimeError(f"{self.name}: start() the comparator first")
        return self.prompt.render_all(comparisons)

    # -- for subclasses ----------------------------------------------------------------------

    @abc.abstractmethod
    async def _load(self) -> Any:
        """Start the backend; return its tokenizer (``None`` when unknown)."""

    @abc.abstractmethod
    async def _score(self, inputs: Sequence[JudgeInput]) -> list[float]:
        """One ``p`` per prompt, in order."""

    async def _healthy(self) -> bool:
        return True

    async def _close(self) -> None:
        return None


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # a failed background start is reported by the next call


class HTTPModelComparator(ModelComparator):
    """A judge behind an HTTP server: pooled connections, bounded concurrency, retries.

    ``base_url`` is the server's root (``http://host:8000``; a trailing ``/v1`` is dropped).
    ``api_key``, when given, is sent as ``Authorization: Bearer ...`` and never logged or
    shown. ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        transport: Any = None,
        **prompt_options: Any,
    ) -> None:
        super().__init__(**prompt_options)
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be positive, retries and backoff_s not negative")
        base_url = base_url.rstrip("/")
        if base_url.endswith("/v1"):
            base_url = base_url[: -len("/v1")]
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._api_key = api_key
        self._transport = transport
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        # How retries wait (tests put a recorder here, so that they never sleep).
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _open_client(self) -> None:
        if self._client is not None:
            return
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            ),
            transport=self._transport,
            trust_env=False,  # a judge server is on the cluster's network, not behind a proxy
        )
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
        parse: bool = True,
    ) -> Any:
        """The JSON answer to one request (``parse=False``: the raw text), with retries;
        :class:`JudgeError` when it fails."""
        self._open_client()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=_retry_after_or(
                tenacity.wait_random_exponential(multiplier=self.backoff_s, max=MAX_BACKOFF_S)
            ),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._count_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return await retrying(self._send, method, path, body, parse)
        except _Retryable as exc:  # the last try's failure: tenacity stopped
            raise JudgeError(
                f"{self.name}: {method} {path}: {exc} (after {self.retries + 1} tries)"
            ) from exc

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, parse: bool
    ) -> Any:
        """One try: the answer; :class:`_Retryable` when trying again may help, else
        :class:`JudgeError`."""
        import httpx

        assert self._client is not None and self._slots is not None
        self.stats.calls += 1
        async with self._slots:
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            failure = f"HTTP {response.status_code}: {_short(response.text)}"
            if response.status_code in RETRY_STATUS:
                hint = parse_retry_after(response.headers.get("retry-after"))
                raise _Retryable(failure, retry_after=hint)
            raise JudgeError(f"{self.name}: {method} {path}: {failure}")
        if not parse:
            return response.text
        try:
            return response.json()
        except ValueError as exc:
            raise JudgeError(
                f"{self.name}: {method} {path}: malformed response (not JSON: {exc})"
            ) from exc

    def _count_retry(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        failure = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.debug("%s: %s %s failed (%s); retry in %.2fs", self.name, state.args[0],
                     state.args[1], failure, delay)


class _Retryable(Exception):
    """A failure that may pass (a connection error, a timeout, an HTTP status in
    :data:`RETRY_STATUS`); ``retry_after``: the server's ``Retry-After``, in seconds."""

    def __init__(self, failure: str, *, retry_after: float | None = None) -> None:
        super().__init__(failure)
        self.retry_after = retry_after


def _retry_after_or(
    backoff: Callable[[tenacity.RetryCallState], float],
) -> Callable[[tenacity.RetryCallState], float]:
    """A tenacity wait: the failed try's ``Retry-After`` (at most :data:`MAX_BACKOFF_S`) when
    the server gave one, else ``backoff``."""

    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Retryable) and failure.retry_after is not None:
            return min(failure.retry_after, MAX_BACKOFF_S)
        return backoff(state)

    return wait


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def malformed(name: str, what: str, exc: Exception | None = None) -> JudgeError:
    """The error of a response that lacks what a verdict needs."""
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return JudgeError(f"{name}: malformed response: {what}{detail}")


__all__ = [
    "MAX_BACKOFF_S",
    "RETRY_STATUS",
    "HTTPModelComparator",
    "MissingDependency",
    "ModelComparator",
    "gather_all",
    "load_tokenizer",
    "malformed",
    "require",
]
