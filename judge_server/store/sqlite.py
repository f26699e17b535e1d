"""The single-node default store: one SQLite file, written through on every change.

Calls run in a worker thread (``asyncio.to_thread``) behind a lock, so the event loop never
blocks on the disk. Every write is a transaction; a failure raises :class:`StoreError`. One
process owns the file (it is not shared between replicas: that is the Redis store's job), so
the store keeps each run's anchor count in memory instead of counting on every update.

Each pool row keeps its oldest anchor's step (``oldest``, indexed), so that a run over its
capacity gives up its oldest anchors by visiting only the prompts it takes them from. Each run
keeps when it was last used (``last_used``, wall-clock seconds); with ``idle_ttl_s`` set,
:meth:`SqliteStore.expire_idle_runs` deletes the runs idle longer, with their pools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..arena.pools import Anchor, RunPool, drop_oldest, oldest_step
from ..errors import StoreError
from .base import (
    PoolUpdate,
    Store,
    StoredRun,
    anchors_from_json,
    anchors_to_json,
    pool_from_json,
    settings_from_dict,
    touch_every_s,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
    run_id    TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    anchors   TEXT NOT NULL,
    PRIMARY KEY (run_id, prompt_id)
);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL
);
"""
# Columns added since the first files: (table, column, declaration).
ADDED_COLUMNS = (
    ("runs", "tenant", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "last_used", "REAL NOT NULL DEFAULT 0"),
    ("pools", "oldest", "INTEGER"),
)
INDEXES = """
CREATE INDEX IF NOT EXISTS pools_oldest ON pools (run_id, oldest, prompt_id);
CREATE INDEX IF NOT EXISTS runs_last_used ON runs (last_used);
"""


class SqliteStore(Store):
    """``idle_ttl_s``: seconds a run may go unused before :meth:`expire_idle_runs` deletes it
    (0: never); ``clock``: wall-clock seconds (tests pass their own)."""

    def __init__(
        self, path: str | Path, *, idle_ttl_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.idle_ttl_s = idle_ttl_s
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # anchors per run, counted on first use
        self._touched: dict[str, float] = {}  # run id -> when this process last wrote last_used

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            for table, column, declaration in ADDED_COLUMNS:  # a file from before the column
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(  # pools written before the column
                    "UPDATE pools SET oldest = (SELECT MIN(json_extract(value, '$.step')) "
                    "FROM json_each(pools.anchors)) WHERE oldest IS NULL"
                )
                conn.execute(  # runs stored before the column: used from now on
                    "UPDATE runs SET last_used = ? WHERE last_used = 0", (self.clock(),)
                )
            conn.executescript(INDEXES)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def locked() -> Any:
            with self._lock:
                try:
                    return work(self._connection())
                except (sqlite3.Error, OSError) as exc:
                    raise StoreError(f"sqlite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(locked)

    @staticmethod
    def _row_to_run(row) -> StoredRun:
        return StoredRun(settings_from_dict(json.loads(row[0])), row[1])

    async def get_run(self, run_id: str) -> StoredRun | None:
        def work(c):
            row = c.execute(
                "SELECT settings, tenant FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return None if row is None else self._row_to_run(row)

        return await self._run(work)

    async def create_run(self, run: StoredRun) -> bool:
        settings = json.dumps(dataclasses.asdict(run.settings))

        def work(c):
            cur = c.execute(
                "INSERT OR IGNORE INTO runs (run_id, settings, tenant, last_used) "
                "VALUES (?, ?, ?, ?)",
                (run.run_id, settings, run.tenant, self.clock()),
            )
            return cur.rowcount == 1

        return await self._run(work)

    async def delete_run(self, run_id: str) -> bool:
        def work(c):
            with c:
                c.execute("BEGIN")
                c.execute("DELETE FROM pools WHERE run_id = ?", (run_id,))
                self._sizes.pop(run_id, None)
                self._touched.pop(run_id, None)
                return c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount == 1

        return await self._run(work)

    async def list_runs(self, tenant: str | None = None) -> list[StoredRun]:
        def work(c):
            if tenant is None:
                rows = c.execute("SELECT settings, tenant FROM runs ORDER BY run_id")
            else:
                rows = c.execute(
                    "SELECT settings, tenant FROM runs WHERE tenant = ? ORDER BY run_id",
                    (tenant,),
                )
            return [self._row_to_run(r) for r in rows.fetchall()]

        return await self._run(work)

    async def load_anchors(self, run_id: str, prompt_id: str) -> list[Anchor]:
        def work(c):
            row = c.execute(
                "SELECT anchors FROM pools WHERE run_id = ? AND prompt_id = ?", (run_id, prompt_id)
            ).fetchone()
            return anchors_from_json(row[0] if row else None)

        return await self._run(work)

    def _size(self, c: sqlite3.Connection, run_id: str) -> int:
        if run_id not in self._sizes:
            row = c.execute(
                "SELECT COALESCE(SUM(json_array_length(anchors)), 0) FROM pools WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            self._sizes[run_id] = int(row[0])
        return self._sizes[run_id]

    async def update_anchors(
        self, run_id: str, prompt_id: str, update: PoolUpdate, *, per_run: int
    ) -> tuple[list[Anchor], int] | None:
        def work(c: sqlite3.Connection) -> tuple[list[Anchor], int] | None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                now = self.clock()
                if c.execute(
                    "UPDATE runs SET last_used = ? WHERE run_id = ?", (now, run_id)
                ).rowcount == 0:
                    return None
                row = c.execute(
                    "SELECT anchors FROM pools WHERE run_id = ? AND prompt_id = ?",
                    (run_id, prompt_id),
                ).fetchone()
                before = anchors_from_json(row[0] if row else None)
                after = update(before)
                size = self._size(c, run_id) - len(before) + len(after)
                self._write(c, run_id, prompt_id, after)
                written = after
                while size > per_run:  # over the run's capacity: its oldest anchors leave
                    row = c.execute(
                        "SELECT prompt_id, anchors FROM pools WHERE run_id = ? "
                        "ORDER BY oldest, prompt_id LIMIT 1",
                        (run_id,),
                    ).fetchone()
                    if row is None:
                        break
                    current = anchors_from_json(row[1])
                    kept = drop_oldest(current, size - per_run)
                    size -= len(current) - len(kept)
                    self._write(c, run_id, row[0], kept)
                    if row[0] == prompt_id:
                        written = kept
            self._sizes[run_id] = size  # only once the transaction committed
            self._touched[run_id] = now
            return written, size

        try:
            return await self._run(work)
        except StoreError:
            self._sizes.pop(run_id, None)  # count again next time
            raise

    @staticmethod
    def _write(c: sqlite3.Connection, run_id: str, prompt_id: str, anchors: list[Anchor]) -> None:
        if anchors:
            c.execute(
                "INSERT OR REPLACE INTO pools (run_id, prompt_id, anchors, oldest) "
                "VALUES (?, ?, ?, ?)",
                (run_id, prompt_id, anchors_to_json(anchors), oldest_step(anchors)),
            )
        else:
            c.execute("DELETE FROM pools WHERE run_id = ? AND prompt_id = ?", (run_id, prompt_id))

    @staticmethod
    def _load_pool(c: sqlite3.Connection, run_id: str) -> RunPool:
        rows = c.execute("SELECT prompt_id, anchors FROM pools WHERE run_id = ?", (run_id,))
        return pool_from_json(rows.fetchall())

    async def load_pool(self, run_id: str) -> RunPool:
        return await self._run(lambda c: self._load_pool(c, run_id))

    async def pool_size(self, run_id: str) -> tuple[int, int]:
        def work(c):
            row = c.execute("SELECT COUNT(*) FROM pools WHERE run_id = ?", (run_id,)).fetchone()
            return int(row[0]), self._size(c, run_id)

        return await self._run(work)

    async def touch_run(self, run_id: str) -> None:
        if not self.idle_ttl_s:
            return
        now = self.clock()
        if now - self._touched.get(run_id, float("-inf")) < touch_every_s(self.idle_ttl_s):
            return

        def work(c: sqlite3.Connection) -> None:
            c.execute("UPDATE runs SET last_used = ? WHERE run_id = ?", (now, run_id))

        await self._run(work)
        self._touched[run_id] = now

    async def expire_idle_runs(self) -> list[str]:
        if not self.idle_ttl_s:
            return []
        cutoff = self.clock() - self.idle_ttl_s

        def work(c: sqlite3.Connection) -> list[str]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                ids = [row[0] for row in c.execute(
                    "SELECT run_id FROM runs WHERE last_used < ? ORDER BY run_id", (cutoff,)
                ).fetchall()]
                for run_id in ids:
                    c.execute("DELETE FROM pools WHERE run_id = ?", (run_id,))
                    c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            for run_id in ids:
                self._sizes.pop(run_id, None)
                self._touched.pop(run_id, None)
            return ids

        return await self._run(work)

    async def check_health(self) -> bool:
        """A write and a read, in one transaction, of the ``health`` table."""
        now = self.clock()

        def work(c: sqlite3.Connection) -> bool:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?)", (now,))
                row = c.execute("SELECT at FROM health WHERE id = 1").fetchone()
            if row is None or row[0] != now:
                raise StoreError(f"sqlite store {self.path}: read back {row}, wrote {now}")
            return True

        return await self._run(work)

    async def aclose(self) -> None:
        def close():
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)
