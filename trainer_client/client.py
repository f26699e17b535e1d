"""The trainer's clients of the judge: :class:`ArenaClient` (sync) and :class:`AsyncArenaClient`.

Both are thin. :class:`~trainer_client._core.ClientCore` does everything that needs no I/O
(checks, local advantages, request ids, retry decisions, fallbacks, counters) and one async
driver, :class:`_Runner`, sends plans through a transport until every dead group has an
outcome or the deadline has come. :class:`AsyncArenaClient` runs the driver in the caller's
event loop; :class:`ArenaClient` runs the same driver on an event loop of its own, in a daemon
thread started on first use, so the logic exists once and a sync trainer's ``submit`` overlaps
judging with generation. A judge failure never stops training: ``rank`` returns by
``deadline_s`` (plus at most :data:`~trainer_client._core.DEADLINE_SLACK_S`) with an outcome
for every group, and raises only :class:`~trainer_client.errors.InvalidGroup` (before sending
anything) or :class:`~trainer_client.errors.ClientClosed`.

Neither constructor does I/O; connections are made on the first send and closed by
``close()`` / ``aclose()`` (or the ``with`` / ``async with`` blocks). A client pickles as its
config (for trainers that ship reward functions to worker processes): the copy starts with no
connections and zeroed counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Sequence

from ._core import (
    DEADLINE_SLACK_S,
    BatchResult,
    ClientConfig,
    ClientCore,
    GroupOutcome,
    Plan,
    configure,
)
from .errors import ClientClosed, ServerUnavailable, TransportError
from .types import Group

logger = logging.getLogger("trainer_client")

# After the deadline, the sends in flight get this long to be cancelled cleanly.
CANCEL_WAIT_S = 0.1
# close() waits at most this long for the client's event loop to wind down.
CLOSE_WAIT_S = 5.0


class _Runner:
    """The one driver: sends plans through one transport, in one event loop."""

    def __init__(self, core: ClientCore, loop: asyncio.AbstractEventLoop) -> None:
        from ._transports import make_transport  # grpc and httpx load on first use

        config = core.config
        self.core = core
        self.loop = loop  # where it runs: the transport's connections belong to this loop
        self.transport = make_transport(config)
        self.closed = False
        self._drives: set[asyncio.Task] = set()
        self._runs = 0
        self._idle: asyncio.Event | None = None

    async def run(self, plan: Plan) -> None:
        """Send ``plan``'s dead groups, with retries, until each has an outcome or the
        deadline has come (then the plan is cut: its pending groups will fall back)."""
        if self.closed:
            plan.cut("closed")
            return
        self._runs += 1
        if self._idle is not None:
            self._idle.clear()
        drive = asyncio.ensure_future(self._drive(plan))
        self._drives.add(drive)
        try:
            try:
                done, _ = await asyncio.wait({drive}, timeout=plan.remaining())
            except BaseException:  # the caller was cancelled: so is the send
                drive.cancel()
                raise
            if not done:
                plan.cut("deadline")
                drive.cancel()
                await asyncio.wait({drive}, timeout=CANCEL_WAIT_S)
            elif drive.cancelled():  # by aclose()
                plan.cut("closed")
            elif drive.exception() is not None:  # a bug in the driver: fall back, say why
                logger.error("unexpected error while sending groups; they fall back",
                             exc_info=drive.exception())
                plan.fail(TransportError(f"unexpected error: {drive.exception()!r}"))
        finally:
            self._drives.discard(drive)
            self._runs -= 1
            if self._runs == 0 and self._idle is not None:
                self._idle.set()

    async def _drive(self, plan: Plan) -> None:
        config, core = self.core.config, self.core
        while plan.pending:
            groups = plan.begin_attempt()
            try:
                if not core.run_ready and config.run_settings is not None:
                    await self.transport.create_run(config.run_settings, timeout=plan.remaining())
                    core.run_ready = True
                async for result in self.transport.rank(
                    config.run_id, groups, timeout=plan.remaining()
                ):
                    plan.record(result)
                plan.end_attempt()
            except TransportError as exc:
                logger.debug("send of %d groups failed: %s", len(groups), exc)
                if isinstance(exc, ServerUnavailable) and config.run_settings is not None:
                    core.run_ready = False  # a restarted server may have lost the run
                plan.fail(exc)
            except Exception as exc:  # noqa: BLE001 - a client bug must not stop training
                logger.exception("unexpected error while sending groups; they fall back")
                plan.fail(TransportError(f"unexpected error: {exc!r}"))
            delay = plan.retry_delay()
            if delay is None:
                return
            if delay > 0:
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Cut every plan in flight (their groups fall back as "closed"), close the transport."""
        self.closed = True
        for drive in list(self._drives):
            drive.cancel()
        if self._runs:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT_S)
            except asyncio.TimeoutError:
                logger.warning("closing with %d batches still in flight", self._runs)
        await self.transport.aclose()


class AsyncArenaClient:
    """Ranks groups in the caller's event loop; see :class:`ArenaClient` for the semantics.

    ``async with AsyncArenaClient(target="judge:50051", run_id="exp") as arena:
    result = await arena.rank(groups)``. Options are :class:`ClientConfig` fields, given as a
    config, as keywords, or both (keywords win). Used from a new event loop (``asyncio.run``
    once per step), it makes new connections there.
    """

    def __init__(self, config: ClientConfig | None = None, **overrides: object) -> None:
        self.config = configure(config, overrides)
        self._core = ClientCore(self.config)
        self._runner: _Runner | None = None
        self._closed = False

    def _current_runner(self) -> _Runner:
        if self._closed:
            raise ClientClosed()
        loop = asyncio.get_running_loop()
        runner = self._runner
        if runner is None or runner.loop is not loop:
            if runner is not None:
                logger.debug("a new event loop: new connections to the judge")
            runner = self._runner = _Runner(self._core, loop)
        return runner

    async def rank(self, groups: Sequence[Group]) -> BatchResult:
        """One outcome per group, in order; returns by the deadline, whatever the server does.

        Raises :class:`~trainer_client.errors.InvalidGroup` (naming the field) before sending
        anything when a group is malformed.
        """
        runner = self._current_runner()
        plan = self._core.plan(groups)
        if plan.pending:
            await runner.run(plan)
        return self._core.finish(plan)

    async def rank_group(self, group: Group) -> GroupOutcome:
        """The outcome of one group (``rank([group])``)."""
        runner = self._current_runner()
        plan = self._core.plan([group], one=True)
        if plan.pending:
            await runner.run(plan)
        return self._core.finish(plan).outcomes[0]

    def submit(self, group: Group) -> asyncio.Future[GroupOutcome]:
        """Start ranking ``group`` now and return at once: a future of its outcome, which
        always resolves (by the deadline). Call it from a coroutine; checks the group first."""
        runner = self._current_runner()
        plan = self._core.plan([group], one=True)
        return asyncio.ensure_future(self._outcome(runner, plan))

    async def _outcome(self, runner: _Runner, plan: Plan) -> GroupOutcome:
        if plan.pending:
            await runner.run(plan)
        return self._core.finish(plan).outcomes[0]

    def stats(self) -> dict[str, float]:
        """Counters since the client was made (see :meth:`ClientCore.stats`)."""
        return self._core.stats()

    async def aclose(self) -> None:
        """Cut the batches in flight (their dead groups fall back as "closed") and close the
        connections. The client cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if runner.loop is running:
                await runner.aclose()

    async def __aenter__(self) -> AsyncArenaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["config"])

    def __repr__(self) -> str:
        return f"AsyncArenaClient({self.config!r})"


class _LoopThread:
    """An event loop in a daemon thread, with the sync client's runner.

    Kept by hand, not anyio's blocking portal: ``start_blocking_portal`` hangs a forked child
    that drops the parent's portal (its clean-up calls into a loop the child has not got) and
    joins its thread without a bound, and ``BlockingPortal.start_task_soon`` blocks its caller
    until the loop takes the task (refusing the loop's own thread), so ``rank`` would lose its
    deadline bound while the loop is busy (a slow callback of a submitted future); every wait
    here is bounded (``run_coroutine_threadsafe`` never blocks).
    """

    def __init__(self, core: ClientCore) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.runner = _Runner(core, self.loop)
        self.thread = threading.Thread(target=self._main, name="arena-client", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """Close the runner (bounded), stop the loop, join the thread (bounded)."""
        if self.pid != os.getpid():
            return  # a forked child: the thread and its loop are the parent's
        if threading.current_thread() is self.thread:  # close() from a future's callback
            self.submit(self._aclose_and_stop())
            return
        if self.thread.is_alive() and not self.loop.is_closed():
            try:
                self.submit(self.runner.aclose()).result(CLOSE_WAIT_S + 1.0)
            except Exception:  # noqa: BLE001 - closing goes on regardless
                logger.warning("the client's event loop did not close cleanly", exc_info=True)
            self.stop()
        self.thread.join(CLOSE_WAIT_S)

    async def _aclose_and_stop(self) -> None:
        try:
            await self.runner.aclose()
        finally:
            self.loop.stop()

    def stop(self) -> None:
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile
                pass


class ArenaClient:
    """Ranks groups for a trainer, synchronously; a judge failure never stops training.

    ``with ArenaClient(target="judge:50051", run_id="exp") as arena:
    result = arena.rank(groups)`` gives one :class:`GroupOutcome` per group, in order:
    diverse groups get group-relative advantages computed here (they are never sent), groups
    of one get zero, dead groups (all rewards equal) go to the judge. A dead group the judge
    does not answer in time (server down, hanging, overloaded, the connection broken, a bad
    answer) gets zeros, ``fell_back=True`` and a ``reason``; failures worth retrying are
    retried (``retries``, ``backoff_s``) within ``deadline_s``, with the group's request id,
    so the server judges a retried group once. ``result.stats.as_metrics()`` is a dict to log.

    ``submit(group)`` returns a ``concurrent.futures.Future`` at once, so judging overlaps
    generation. The sends run on an event loop in a daemon thread, started on first use;
    ``close()`` stops it. Safe to share between threads.
    """

    def __init__(self, config: ClientConfig | None = None, **overrides: object) -> None:
        self.config = configure(config, overrides)
        self._core = ClientCore(self.config)
        self._lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None
        self._submitted: dict[concurrent.futures.Future, Plan] = {}
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    def _thread(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise ClientClosed()
            thread = self._loop_thread
            if thread is None or thread.pid != os.getpid():  # first use, or a forked child
                thread = self._loop_thread = _LoopThread(self._core)
                if self._finalizer is not None:
                    self._finalizer.detach()
                self._finalizer = weakref.finalize(self, thread.stop)
                self._finalizer.atexit = False
            return thread

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed()

    def _run(self, plan: Plan) -> BatchResult:
        if plan.pending:
            thread = self._thread()
            future = thread.submit(thread.runner.run(plan))
            try:
                future.result(timeout=plan.remaining() + DEADLINE_SLACK_S)
            except concurrent.futures.TimeoutError:
                # The loop did not answer in time (it should have): fall back from here.
                logger.warning("the client's event loop is late; the batch falls back")
                plan.cut("deadline")
                future.cancel()
            except concurrent.futures.CancelledError:
                plan.cut("closed")
        return self._core.finish(plan)

    def rank(self, groups: Sequence[Group]) -> BatchResult:
        """One outcome per group, in order; returns by the deadline, whatever the server does.

        Raises :class:`~trainer_client.errors.InvalidGroup` (naming the field) before sending
        anything when a group is malformed.
        """
        self._check_open()
        return self._run(self._core.plan(groups))

    def rank_group(self, group: Group) -> GroupOutcome:
        """The outcome of one group (``rank([group])``)."""
        self._check_open()
        return self._run(self._core.plan([group], one=True)).outcomes[0]

    def submit(self, group: Group) -> concurrent.futures.Future[GroupOutcome]:
        """Start ranking ``group`` and return at once: a future of its outcome, which always
        resolves (by the deadline, or at ``close()``). Checks the group first."""
        self._check_open()
        plan = self._core.plan([group], one=True)
        future: concurrent.futures.Future[GroupOutcome] = concurrent.futures.Future()
        if not plan.pending:
            future.set_result(self._core.finish(plan).outcomes[0])
            return future
        thread = self._thread()
        with self._lock:
            self._submitted[future] = plan
        future.add_done_callback(self._forget)
        thread.submit(self._resolve(thread, plan, future))
        return future

    async def _resolve(self, thread: _LoopThread, plan: Plan,
                       future: concurrent.futures.Future) -> None:
        try:
            await thread.runner.run(plan)
        finally:
            _set_outcome(future, self._core.finish(plan).outcomes[0])

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._submitted.pop(future, None)

    def stats(self) -> dict[str, float]:
        """Counters since the client was made: batches, groups, dead, dead_fraction, judged,
        tied, fell_back, comparisons, cached_comparisons, judge_requests, judge_calls
        (deprecated: comparisons), retries, latency_s and fell_back/<reason>."""
        return self._core.stats()

    def close(self) -> None:
        """Cut the batches in flight (their dead groups fall back as "closed"; every submitted
        future resolves), close the connections and stop the client's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._loop_thread = self._loop_thread, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if thread is not None:
            thread.close()
        with self._lock:
            left = list(self._submitted.items())
        for future, plan in left:  # the loop could not resolve them: do it from here
            plan.cut("closed")
            _set_outcome(future, self._core.finish(plan).outcomes[0])

    def __enter__(self) -> ArenaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["config"])

    def __repr__(self) -> str:
        return f"ArenaClient({self.config!r})"


def _set_outcome(future: concurrent.futures.Future, outcome: GroupOutcome) -> None:
    if not future.done():
        try:
            future.set_result(outcome)
        except concurrent.futures.InvalidStateError:  # resolved or cancelled meanwhile
            pass


__all__ = ["ArenaClient", "AsyncArenaClient"]
