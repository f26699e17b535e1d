"""The run registry: which runs exist, whose they are, and their settings.

A run is created explicitly (:meth:`RunRegistry.create`) or, when the server allows it, on its
first group with the server's defaults (:meth:`RunRegistry.open`). Its settings live in the
store; this process keeps a copy unless the store is shared with other replicas (then every
read goes to the store, so that a run deleted or changed elsewhere is seen at once).

Tenants: every call takes the caller's ``tenant`` (``None`` on a server without API keys: no
checks). A run belongs to the tenant that created it; any other tenant gets
:class:`PermissionDenied` for it, whatever the call.

Retention: with a store made with ``idle_ttl_s``, :meth:`RunRegistry.expire_idle` (called
every :attr:`RunRegistry.sweep_every_s` by the server) deletes the runs idle that long and
forgets them here: their statistics, their judge prompt and all their metric series.
Readiness (:func:`readiness`) asks the judge and the store.

A run's own judge prompt (``judge_template``) goes to the comparator when the run is created
or first seen by this process; a template the judge refuses is an error naming the field.

Every lookup of a run tells the store that it is in use (:meth:`Store.touch_run`), so that a
run in use never expires (the store writes that at most every few minutes).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence

from trainer_client.types import RunSettings

from ..comparators.base import Comparator
from ..errors import InvalidRequest, PermissionDenied, RunExists, RunNotFound
from ..store.base import Store, StoredRun
from .validation import Limits, check_id, check_settings

logger = logging.getLogger(__name__)


class RunRegistry:
    """Runs of one server (module doc). ``on_forget(run_id)`` is called when a run goes."""

    def __init__(
        self,
        store: Store,
        comparator: Comparator,
        *,
        limits: Limits,
        defaults: RunSettings,
        auto_create: bool = True,
        on_forget: Callable[[str], None] = lambda run_id: None,
        also_known: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.store = store
        self.comparator = comparator
        self.limits = limits
        self.defaults = defaults
        self.auto_create = auto_create
        self.on_forget = on_forget
        self.also_known = also_known  # runs this process keeps figures of elsewhere
        self._runs: dict[str, StoredRun] = {}  # this process's copy, unless the store is shared

    async def create(self, settings: RunSettings, *, tenant: str | None = None) -> RunSettings:
        check_settings(settings, self.limits)
        run = StoredRun(settings, tenant or "")
        if not await self.store.create_run(run):
            existing = await self.store.get_run(settings.run_id)
            if existing is not None:
                _authorise(existing, tenant)
            raise RunExists(settings.run_id)
        try:
            self._apply_template(settings)
        except InvalidRequest:
            await self.store.delete_run(settings.run_id)
            raise
        self._runs[settings.run_id] = run
        return settings

    async def get(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        """The run's settings, for ``tenant``; :class:`RunNotFound` when it does not exist."""
        check_id(run_id, "run_id")
        return (await self._stored(run_id, tenant)).settings

    async def open(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        """The run's settings for ``tenant``; a new run gets the defaults when allowed."""
        check_id(run_id, "run_id")
        try:
            return (await self._stored(run_id, tenant)).settings
        except RunNotFound:
            if not self.auto_create:
                raise
        try:
            await self.create(self.settings_for_new_run(run_id), tenant=tenant)
        except RunExists:  # created concurrently by another request
            pass
        return (await self._stored(run_id, tenant)).settings

    async def delete(self, run_id: str, *, tenant: str | None = None) -> bool:
        check_id(run_id, "run_id")
        try:
            await self._stored(run_id, tenant)
        except RunNotFound:
            return False
        self._forget(run_id)
        return await self.store.delete_run(run_id)

    async def list(self, *, tenant: str | None = None) -> list[RunSettings]:
        return [run.settings for run in await self.store.list_runs(tenant)]

    def settings_for_new_run(self, run_id: str) -> RunSettings:
        """The server's default settings under a new run id."""
        return dataclasses.replace(self.defaults, run_id=run_id)

    async def _stored(self, run_id: str, tenant: str | None) -> StoredRun:
        """The run, authorised for ``tenant``; read from the store unless this process has it."""
        run = None if self.store.shared else self._runs.get(run_id)
        if run is None:
            run = await self.store.get_run(run_id)
            if run is None:
                if run_id in self._runs:  # deleted by another replica
                    self._forget(run_id)
                raise RunNotFound(run_id)
            known = self._runs.get(run_id)
            if known is None or known.settings != run.settings:
                try:  # a run new to this process: its template goes to the judge
                    self._apply_template(run.settings)
                except InvalidRequest as exc:
                    logger.warning("run %s keeps the server's judge prompt: %s", run_id, exc)
            self._runs[run_id] = run
        _authorise(run, tenant)
        await self.store.touch_run(run_id)
        return run

    @property
    def sweep_every_s(self) -> float | None:
        """How often :meth:`expire_idle` should run; None: runs never expire."""
        ttl = self.store.idle_ttl_s
        return min(300.0, max(0.05, ttl / 10)) if ttl > 0 else None

    async def expire_idle(self) -> Sequence[str]:
        """Delete the runs idle longer than the store's ``idle_ttl_s`` and forget them here
        (their judge prompt, and through ``on_forget`` their statistics and metric series);
        with a shared store, also forget the runs another replica deleted or expired. Returns
        the ids forgotten."""
        known = set(self._runs) | set(self.also_known())
        gone = set(await self.store.expire_idle_runs())
        if gone:
            logger.info("%d runs idle for %.0f s expired: %s", len(gone),
                        self.store.idle_ttl_s, ", ".join(sorted(gone)[:20]))
        if self.store.shared and known - gone:
            alive = {run.run_id for run in await self.store.list_runs()}
            gone |= known - alive
        for run_id in sorted(gone):
            self._forget(run_id)
        return sorted(gone)

    def _forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self.comparator.forget_run(run_id)
        self.on_forget(run_id)

    def _apply_template(self, settings: RunSettings) -> None:
        try:
            self.comparator.set_run_template(settings.run_id, settings.judge_template or None)
        except ValueError as exc:
            raise InvalidRequest("settings.judge_template", str(exc)) from None


async def readiness(comparator: Comparator, store: Store) -> str | None:
    """None when the server is ready to rank: the judge answers and the store reads and
    writes; else what is not ("judge unavailable", "store unavailable"), logged with why."""
    try:
        judge = await comparator.check_health()
    except Exception:  # noqa: BLE001 - a failing health check means "not ready"
        logger.warning("judge health check failed", exc_info=True)
        judge = False
    if not judge:
        return "judge unavailable"
    try:
        await store.check_health()
    except Exception as exc:  # noqa: BLE001 - a failing health check means "not ready"
        logger.warning("store health check failed: %s", exc)
        return "store unavailable"
    return None


def _authorise(run: StoredRun, tenant: str | None) -> None:
    if tenant is not None and run.tenant != tenant:
        raise PermissionDenied(run.run_id)


__all__ = ["RunRegistry", "readiness"]
