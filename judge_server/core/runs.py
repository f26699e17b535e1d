"""The run registry: which runs exist, whose they are, and their settings.

A run is created explicitly (:meth:`RunRegistry.create`) or, when the server allows it, on its
first group with the server's defaults (:meth:`RunRegistry.open`). Its settings live in the
store; this process keeps a copy unless the store is shared with other replicas (then every
read goes to the store, so that a run deleted or changed elsewhere is seen at once).

Tenants: every call takes the caller's ``tenant`` (``None`` on a server without API keys: no
checks). Each tenant's runs are a namespace of its own: tenant A's run ``default`` and tenant
B's are two runs, and another tenant's run id is, to a caller, an id that does not exist
(:class:`RunNotFound`). Inside the server a run is known by its store id (:func:`run_key`:
the tenant's name, escaped, ``/`` and the run id; the run id itself on an open server), which
keys its store records, pool, statistics, metric series, judge prompt, verdict cache,
request ids and judge queue; the registry's public calls (``create``, ``get``, ``open``,
``list``) answer with the caller's own run id. A run stored before tenants had namespaces
(under its plain id) is found by the tenant recorded with it.

Retention: with a store made with ``idle_ttl_s``, :meth:`RunRegistry.expire_idle` (called
every :attr:`RunRegistry.sweep_every_s` by the server) deletes the runs idle that long and
forgets them here: their statistics, their judge prompt and all their metric series.
Readiness (:func:`readiness`) asks the judge and the store.

A run stored before its settings had bounds (or under a server with lower limits) is loaded with
each setting out of range brought into it (:func:`.validation.settings_in_range`: a number to
its bound, an unknown name to the default), logged once per process with the fields changed;
the store keeps what it has.

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
from ..errors import InvalidRequest, RunExists, RunNotFound
from ..store.base import Store, StoredRun
from .validation import Limits, check_id, check_settings, settings_in_range

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
        run_id = settings.run_id
        key = run_key(run_id, tenant)
        if key != run_id and await self._owned(run_id, tenant) is not None:
            raise RunExists(run_id)  # stored before tenants had namespaces
        stored = dataclasses.replace(settings, run_id=key)
        run = StoredRun(stored, tenant or "")
        if not await self.store.create_run(run):
            raise RunExists(run_id)
        try:
            self._apply_template(stored)
        except InvalidRequest:
            await self.store.delete_run(key)
            raise
        self._runs[key] = run
        return settings

    async def get(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        """The run's settings, for ``tenant``; :class:`RunNotFound` when it does not exist."""
        check_id(run_id, "run_id")
        return dataclasses.replace(await self.find(run_id, tenant=tenant), run_id=run_id)

    async def open(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        """The run's settings for ``tenant``; a new run gets the defaults when allowed."""
        check_id(run_id, "run_id")
        settings = await self.find(run_id, tenant=tenant, create=True)
        return dataclasses.replace(settings, run_id=run_id)

    async def find(
        self, run_id: str, *, tenant: str | None = None, create: bool = False
    ) -> RunSettings:
        """The run's settings under its store id (:func:`run_key`), for the server's own use;
        with ``create``, a new run gets the defaults when allowed."""
        try:
            return (await self._stored(run_id, tenant)).settings
        except RunNotFound:
            if not (create and self.auto_create):
                raise
        try:
            await self.create(self.settings_for_new_run(run_id), tenant=tenant)
        except RunExists:  # created concurrently by another request
            pass
        return (await self._stored(run_id, tenant)).settings

    async def delete(self, run_id: str, *, tenant: str | None = None) -> bool:
        check_id(run_id, "run_id")
        try:
            run = await self._stored(run_id, tenant)
        except RunNotFound:
            return False
        self._forget(run.run_id)
        return await self.store.delete_run(run.run_id)

    async def list(self, *, tenant: str | None = None) -> list[RunSettings]:
        runs = [self._in_range(run)[0] for run in await self.store.list_runs(tenant)]
        return [
            dataclasses.replace(run.settings, run_id=run_name(run.run_id, tenant)) for run in runs
        ]

    def settings_for_new_run(self, run_id: str) -> RunSettings:
        """The server's default settings under a new run id."""
        return dataclasses.replace(self.defaults, run_id=run_id)

    async def _stored(self, run_id: str, tenant: str | None) -> StoredRun:
        """``tenant``'s run ``run_id``: under its store id, else (a run stored before tenants
        had namespaces) under ``run_id`` when recorded as the tenant's."""
        key = run_key(run_id, tenant)
        run = await self._owned(key, tenant)
        if run is None and key != run_id:
            run = await self._owned(run_id, tenant)
        if run is None:
            raise RunNotFound(run_id)
        await self.store.touch_run(run.run_id)
        return run

    async def _owned(self, key: str, tenant: str | None) -> StoredRun | None:
        """The run stored under ``key`` when it is ``tenant``'s (any run's on an open server)."""
        run = await self._load(key)
        return run if run is not None and (tenant is None or run.tenant == tenant) else None

    async def _load(self, key: str) -> StoredRun | None:
        """The run stored under ``key``; read from the store unless this process has it."""
        run = None if self.store.shared else self._runs.get(key)
        if run is None:
            stored = await self.store.get_run(key)
            if stored is None:
                if key in self._runs:  # deleted by another replica
                    self._forget(key)
                return None
            run, changes = self._in_range(stored)
            known = self._runs.get(key)
            if known is None or known.settings != run.settings:  # new to this process
                if changes:
                    logger.warning("run %s was stored with settings out of range; using: %s",
                                   key, "; ".join(changes))
                try:  # its template goes to the judge
                    self._apply_template(run.settings)
                except InvalidRequest as exc:
                    logger.warning("run %s keeps the server's judge prompt: %s", key, exc)
            self._runs[key] = run
        return run

    def _in_range(self, run: StoredRun) -> tuple[StoredRun, Sequence[str]]:
        """``run`` with its settings in the server's ranges (stored before a bound, or under
        higher limits), and what was changed (:func:`.validation.settings_in_range`); the
        store keeps what it has."""
        settings, changes = settings_in_range(run.settings, self.limits)
        return (dataclasses.replace(run, settings=settings) if changes else run), changes

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


def run_key(run_id: str, tenant: str | None) -> str:
    """The store id of ``tenant``'s run ``run_id``: ``run_id`` on an open server (tenant None),
    else the tenant's name with ``%`` and ``/`` escaped (``%25``, ``%2F``), ``/``, ``run_id``;
    two tenants' ids never collide (the first ``/`` ends the tenant's name)."""
    if tenant is None:
        return run_id
    return f"{tenant.replace('%', '%25').replace('/', '%2F')}/{run_id}"


def run_name(key: str, tenant: str | None) -> str:
    """The id ``tenant`` knows the run stored under ``key`` by (the inverse of
    :func:`run_key`; a run stored before tenants had namespaces keeps its stored id)."""
    prefix = run_key("", tenant)
    return key[len(prefix):] if prefix and key.startswith(prefix) else key


__all__ = ["RunRegistry", "readiness", "run_key", "run_name"]
