"""What every model-backed comparator shares: prompts, batch order, verdicts, errors, HTTP.

:class:`ModelComparator` is the base of the LLM judges (:mod:`.vllm`, :mod:`.openai`,
:mod:`.sglang`, :mod:`.transformers`). For a batch of comparisons it

1. starts the backend on first use (:meth:`~ModelComparator.start`: load the engine and the
   tokenizer, or open the connection pool); concurrent callers share one start, and a failed
   start is tried again by the next call;
2. renders every comparison with :class:`~.prompt.JudgePrompt` (off the event loop: the
   tokenizer works in a thread);
3. orders the batch so that prompts sharing prefixes are adjacent (:func:`~.prompt.prefix_order`)
   and hands it to the backend's ``_calls`` (:class:`Call`: one HTTP request, one engine
   request or call, one thread's forward passes), which give, per prompt, ``p`` read from the
   verdict token's log-probabilities (:mod:`.verdict`) or that prompt's :class:`JudgeError`;
4. asks again, up to ``malformed_retries`` times, for the prompts whose answer was malformed
   (:class:`MalformedAnswer`: a judge that garbles one answer in a thousand costs a request,
   not a group);
5. puts the answers back in the caller's order, with the requests each took.

A failure of one comparison fails that comparison only: when some fail, the others' answers
leave :meth:`~ModelComparator.compare_with_hits` in a :class:`~.base.FailedComparisons`, so
that only the groups that needed a failed one fail; a call that raises fails its own prompts.
Whatever else goes wrong (a missing package, an engine that cannot start) fails the batch.
Every failure is a :class:`JudgeError`; nothing else leaves, cancellation apart.

A hung judge fails every batch in a bounded time, whatever their size and number
(:mod:`.health`: one watch per judge). The backends tell the watch of their progress as finely
as they can: an HTTP response, a prompt the vLLM engine finishes, an SGLang engine call (at
most 64 prompts) that returns, a ``transformers`` forward pass. When the judge has owed
answers and shown no progress for :data:`STALL_FACTOR` times its ``timeout_s``
(:data:`DEFAULT_TIMEOUT_S` unless set: the server's ``judge_timeout_s``), every call still
waiting on it is given up at once and its prompts fail; for one timeout more the judge is
*down*: new batches fail without a call, and :meth:`~ModelComparator.check_health` says False.
A slow judge that makes progress is never given up, however long its batches take. An
in-process engine cannot be killed: a hung vLLM or SGLang request is cancelled (the engine
aborts it if it can); a hung ``transformers`` forward pass keeps the judge's one worker
thread and stays owed until it returns, so the batches after the cooldown fail at once, queued
behind it, and the judge reads as not healthy until then.

:class:`HTTPModelComparator` adds what the HTTP backends share: one ``httpx.AsyncClient``
connection pool, at most ``max_concurrency`` requests in flight, a timeout per request, and
bounded retries (tenacity) with exponential backoff and full jitter for failures that may pass
(connection errors, timeouts, HTTP 408, 429, 500, 502, 503, 504; ``Retry-After``, in seconds or
as an HTTP date, is honoured up to :data:`MAX_BACKOFF_S`). Other HTTP errors are not retried;
malformed responses are asked again as above. Progress is any response (an error status too)
or a refused connection, not a timeout; a hung model server's requests in flight or waiting
for a connection fail at once. Every request sent counts, per comparison and in
``stats.calls``. The scheduler sends batches of at most ``max_concurrency`` comparisons
(:attr:`~.base.Comparator.batch_limit`): a larger one would wait at the connection pool,
first come first served, behind other runs' batches.

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
from dataclasses import dataclass
from typing import Any, Literal

import tenacity

from trainer_client.protocol import parse_retry_after

from ..errors import JudgeError
from .base import Answers, Comparator, Comparison, FailedComparisons, as_verdict
from .health import JudgeWatch
from .prompt import JudgeInput, JudgePrompt, PromptTemplate, prefix_order
from .verdict import NO_PREFERENCE, JudgeStats

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 10.0
MALFORMED_RETRIES = 2
"""Times a prompt whose answer was malformed is asked again (by default)."""
DEFAULT_TIMEOUT_S = 60.0
"""A judge's ``timeout_s`` unless set: what one HTTP request may take; how long an in-process
engine may work without showing progress (a prompt, an engine call, a forward pass)."""
STALL_FACTOR = 1.5
"""A judge that has shown no progress for this many timeouts is taken as hung (:mod:`.health`)."""

Scored = float | JudgeError
"""A prompt's outcome from a backend: its ``p``, or its failure."""


class MalformedAnswer(JudgeError):
    """A response that lacks what a verdict needs; asking again may help."""


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


@dataclass
class Call:
    """Consecutive prompts of a batch that the judge answers together: one HTTP request, one
    engine request or call, one thread's forward passes.

    ``answers`` gives one :data:`Scored` per prompt, in order (raising fails them all);
    ``sent``: the requests each prompt took, counted as they are sent (HTTP counts its tries);
    ``None``: one each.
    """

    answers: Awaitable[Sequence[Scored]]
    prompts: int = 1
    sent: list[int] | None = None


class ModelComparator(Comparator, abc.ABC):
    """An LLM judge: one prefill and one scored verdict token per comparison.

    Subclasses implement :meth:`_load` (start the backend, return its tokenizer or ``None``)
    and :meth:`_calls` (the :class:`Call` objects that answer the rendered prompts, recording
    into :attr:`stats` and telling :attr:`watch` of their progress), and may override
    :meth:`_healthy` and :meth:`_close`.

    Options of every backend: ``template`` (a :class:`~.prompt.PromptTemplate` or its text),
    ``prompt_format`` (``"auto"``, ``"plain"``, ``"chat"``), ``nonce_key`` and
    ``chat_template_kwargs`` (see :class:`~.prompt.JudgePrompt`); ``malformed_retries``: times
    a prompt whose answer was malformed is asked again; ``timeout_s``: the judge is taken as
    hung after :data:`STALL_FACTOR` times it without progress (module doc).
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
        malformed_retries: int = MALFORMED_RETRIES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if malformed_retries < 0:
            raise ValueError("malformed_retries must not be negative")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.malformed_retries = malformed_retries
        self.timeout_s = timeout_s
        self.watch = JudgeWatch(STALL_FACTOR * timeout_s, cooldown_s=timeout_s)
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
        """True once the backend has started and answers, and while the judge is neither
        down nor silent (:mod:`.health`). The first call starts the backend in the background
        (a readiness probe thus loads the model), and says False until then."""
        if not self.started:
            if self._start_task is None or self._start_task.done():
                task = asyncio.ensure_future(self.start())
                task.add_done_callback(_retrieve)
            return False
        if self.watch.down_for() > 0 or self.watch.silent():
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
        return (await self.compare_with_hits(comparisons)).p

    async def compare_with_hits(self, comparisons: Sequence[Comparison]) -> Answers:
        """The answers (none cached) and the requests each took; raises
        :class:`~.base.FailedComparisons` when some comparisons failed (module doc)."""
        if not comparisons:
            return Answers([], [], [])
        try:
            await self.start()
            assert self.prompt is not None
            inputs = await asyncio.to_thread(self.prompt.render_all, comparisons)
            order = prefix_order(inputs)
            scored, requests = await self._score_again([inputs[i] for i in order])
        except JudgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the judge is a JudgeError
            raise JudgeError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        n = len(comparisons)
        out = [NO_PREFERENCE] * n
        errors: list[JudgeError | None] = [None] * n
        each = [0] * n
        for k, i in enumerate(order):
            answer = scored[k]
            if isinstance(answer, JudgeError):
                errors[i] = answer
            else:
                out[i] = as_verdict(answer)
            each[i] = requests[k]
        answers = Answers(out, [False] * n, each)
        if any(e is not None for e in errors):
            raise FailedComparisons(answers, errors)
        return answers

    async def _score_again(self, inputs: list[JudgeInput]) -> tuple[list[Scored], list[int]]:
        """:meth:`_score_counted`, asking again for malformed answers (at most
        ``malformed_retries`` times each)."""
        scored: list[Scored] = [NO_PREFERENCE] * len(inputs)
        requests = [0] * len(inputs)
        todo = list(range(len(inputs)))
        for attempt in range(self.malformed_retries + 1):
            if attempt:
                self.stats.malformed_retries += len(todo)
                logger.debug("%s: %d malformed answers; asking again", self.name, len(todo))
            answers, sent = await self._score_counted([inputs[k] for k in todo])
            if len(answers) != len(todo) or len(sent) != len(todo):
                raise JudgeError(f"{self.name}: {len(answers)} verdicts for {len(todo)} prompts")
            for k, answer, n in zip(todo, answers, sent):
                scored[k] = answer
                requests[k] += n
            todo = [k for k in todo if isinstance(scored[k], MalformedAnswer)]
            if not todo:
                break
        return scored, requests

    @property
    def stall_s(self) -> float:
        """How long the judge may owe answers without progress before it is taken as hung."""
        return self.watch.stall_s

    async def _score_counted(self, inputs: Sequence[JudgeInput]) -> tuple[list[Scored], list[int]]:
        """Each prompt's outcome from the backend's calls, and the requests it took. When the
        judge is silent (:mod:`.health`), the calls still waiting fail now; while it is down,
        every prompt fails unsent."""
        if (left := self.watch.down_for()) > 0:
            down = JudgeError(
                f"{self.name}: the judge answered nothing for {self.stall_s:g}s; new batches "
                f"fail unsent for {left:.1f}s more"
            )
            return [down] * len(inputs), [0] * len(inputs)
        calls = self._calls(inputs)
        answers = await self._watched(calls)
        sent = [n for call in calls for n in (call.sent or [1] * call.prompts)]
        return answers, sent

    async def _watched(self, calls: Sequence[Call]) -> list[Scored]:
        """The calls' outcomes, prompt by prompt: they run concurrently until done, or until
        the judge is silent (this batch trips the watch) or down (another batch did)."""
        watch = self.watch
        tasks = [asyncio.ensure_future(self._owed(call.answers)) for call in calls]
        pending: set[asyncio.Future] = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, watch.deadline() - watch.clock()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if done:
                    continue
                if watch.silent():
                    if watch.down_for() == 0:
                        logger.warning(
                            "%s: no progress for %.1fs with %d calls owed: the judge is taken "
                            "as hung; new batches fail unsent for %.1fs", self.name,
                            self.stall_s, watch.outstanding, watch.cooldown_s,
                        )
                    watch.trip()
                    break
                if watch.down_for() > 0:
                    break  # another batch found the judge silent
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        stalled = JudgeError(
            f"{self.name}: the judge answered no request in {self.stall_s:g}s (it seems hung)"
        )
        out: list[Scored] = []
        for call, task in zip(calls, tasks):
            out += self._outcomes(call, task, stalled)
        return out

    async def _owed(self, answers: Awaitable[Sequence[Scored]]) -> Sequence[Scored]:
        """``answers``, owed by the judge meanwhile."""
        self.watch.asked()
        try:
            return await answers
        finally:
            self.watch.settled()

    def _outcomes(self, call: Call, task: asyncio.Future, stalled: JudgeError) -> list[Scored]:
        """One outcome per prompt of a finished ``call``: its answers, or its failure."""
        if task.cancelled():
            return [stalled] * call.prompts
        if (exc := task.exception()) is not None:
            error = exc if isinstance(exc, JudgeError) else JudgeError(
                f"{self.name}: {type(exc).__name__}: {exc}"
            )
            return [error] * call.prompts
        answers = list(task.result())
        if len(answers) != call.prompts:
            short = JudgeError(f"{self.name}: {len(answers)} answers for {call.prompts} prompts")
            return [short] * call.prompts
        return answers

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
    def _calls(self, inputs: Sequence[JudgeInput]) -> list[Call]:
        """The calls that answer ``inputs``, in order: per prompt, ``p`` or its failure
        (:class:`MalformedAnswer` when asking again may help). Each tells :attr:`watch` of the
        judge's progress (``answered()``) as finely as the backend can (module doc)."""

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

    Subclasses say what to send for one prompt (:meth:`_call`) and how to read the answer
    (:meth:`_read`); this class sends one request per prompt, with retries, and tells the
    watch of every response.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.25,
        transport: Any = None,
        **prompt_options: Any,
    ) -> None:
        super().__init__(timeout_s=timeout_s, **prompt_options)
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        base_url = base_url.rstrip("/")
        if base_url.endswith("/v1"):
            base_url = base_url[: -len("/v1")]
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.batch_limit = max_concurrency  # requests at once: the scheduler's batches fit
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

    def _call(self, prompt: JudgeInput) -> tuple[str, Mapping[str, Any]]:
        """The path and JSON body of the request for one prompt."""
        raise NotImplementedError

    def _read(self, answer: Any) -> float:
        """``p`` from one answer; :class:`MalformedAnswer` when it has none."""
        raise NotImplementedError

    def _calls(self, inputs: Sequence[JudgeInput]) -> list[Call]:
        """One request per prompt, concurrently; each counts its tries."""
        calls = []
        for prompt in inputs:
            sent = [0]
            calls.append(Call(self._ask(prompt, sent), sent=sent))
        return calls

    async def _ask(self, prompt: JudgeInput, sent: list[int]) -> list[Scored]:
        path, body = self._call(prompt)
        return [self._read(await self.request("POST", path, body, sent=sent))]

    async def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
        parse: bool = True, sent: list[int] | None = None,
    ) -> Any:
        """The JSON answer to one request (``parse=False``: the raw text), with retries;
        :class:`JudgeError` when it fails. ``sent[0]`` counts the tries sent."""
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
            return await retrying(self._send, method, path, body, parse, sent)
        except _Retryable as exc:  # the last try's failure: tenacity stopped
            raise JudgeError(
                f"{self.name}: {method} {path}: {exc} (after {self.retries + 1} tries)"
            ) from exc

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, parse: bool,
        sent: list[int] | None = None,
    ) -> Any:
        """One try: the answer; :class:`_Retryable` when trying again may help, else
        :class:`JudgeError`."""
        import httpx

        assert self._client is not None and self._slots is not None
        async with self._slots:
            self.stats.calls += 1
            if sent is not None:
                sent[0] += 1
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if not isinstance(exc, httpx.TimeoutException):
                    self.watch.answered()  # refused or reset: a reaction, not a hang
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            self.watch.answered()
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
            raise MalformedAnswer(
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


def malformed(name: str, what: str, exc: Exception | None = None) -> MalformedAnswer:
    """The error of a response that lacks what a verdict needs."""
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return MalformedAnswer(f"{name}: malformed response: {what}{detail}")


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MALFORMED_RETRIES",
    "MAX_BACKOFF_S",
    "RETRY_STATUS",
    "STALL_FACTOR",
    "Call",
    "HTTPModelComparator",
    "MalformedAnswer",
    "MissingDependency",
    "ModelComparator",
    "load_tokenizer",
    "malformed",
    "require",
    "Scored",
]
