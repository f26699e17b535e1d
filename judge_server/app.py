"""Builds the service core from settings; the transports and the CLI start from here."""

from __future__ import annotations

from .comparators.base import Comparator
from .service import ArenaService
from .settings import ServerSettings
from .store.base import Store


def build_comparator(settings: ServerSettings) -> Comparator:
    if settings.comparator == "builtin":
        from .comparators.builtin import BuiltinComparator

        return BuiltinComparator()
    from .comparators.simulated import SimulatedComparator, instant_comparator

    if settings.comparator == "instant":
        return instant_comparator()
    return SimulatedComparator()


def build_store(settings: ServerSettings) -> Store:
    if settings.store == "memory":
        from .store.memory import MemoryStore

        return MemoryStore()
    from .store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path)


def build_service(
    settings: ServerSettings,
    *,
    comparator: Comparator | None = None,
    store: Store | None = None,
) -> ArenaService:
    """The service core for ``settings``; tests pass their own comparator or store."""
    return ArenaService(
        comparator=comparator or build_comparator(settings),
        store=store or build_store(settings),
        limits=settings.limits(),
        defaults=settings.run_defaults(),
        auto_create_runs=settings.auto_create_runs,
        max_batch=settings.max_batch,
        batch_window_s=settings.batch_window_ms / 1e3,
    )


__all__ = ["build_comparator", "build_service", "build_store"]
