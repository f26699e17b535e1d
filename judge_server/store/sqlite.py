"""The single-node default store: one SQLite file, written through on every change.

Calls run in a worker thread (``asyncio.to_thread``) behind a lock, so the event loop never
blocks on the disk. Every write is a transaction; a failure raises :class:`StoreError`. One
process owns the file (it is not shared between replicas: that is the Redis store's job), so
the store keeps each run's anchor count in memory instead of counting on every update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from pathlib import Path

from ..arena.pools import Anchor, RunPool
from ..errors import StoreError
from .base import (
    PoolUpdate,
    Store,
    StoredRun,
    anchors_from_json,
    anchors_to_json,
    pool_from_json,
    settings_from_dict,
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
"""


class SqliteStore(Store):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # anchors per run, counted on first use

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            if "tenant" not in columns:  # a file from before tenants
                conn.execute("ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
            self._conn = conn
        return self._conn

    async def _run(self, work):
        def locked():
            with self._lock:
                try:
                    return work(self._connection())
                except sqlite3.Error as exc:
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
                "INSERT OR IGNORE INTO runs (run_id, settings, tenant) VALUES (?, ?, ?)",
                (run.run_id, settings, run.tenant),
            )
            return cur.rowcount == 1

        return await self._run(work)

    async def delete_run(self, run_id: str) -> bool:
        def work(c):
            with c:
                c.execute("BEGIN")
                c.execute("DELETE FROM pools WHERE run_id = ?", (run_id,))
                self._sizes.pop(run_id, None)
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
        def work(c):
            with c:
                c.execute("BEGIN IMMEDIATE")
                if c.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                    return None
                row = c.execute(
                    "SELECT anchors FROM pools WHERE run_id = ? AND prompt_id = ?",
                    (run_id, prompt_id),
                ).fetchone()
                before = anchors_from_json(row[0] if row else None)
                after = update(before)
                size = self._size(c, run_id) - len(before) + len(after)
                if size <= per_run:
                    pool = RunPool({prompt_id: after} if after else {})
                    changed = {prompt_id}
                else:  # over the run's capacity: its oldest anchors leave, from any prompt
                    pool = self._load_pool(c, run_id)
                    changed = pool.put(prompt_id, after, per_run)
                    size = pool.size()
                for pid in changed:
                    anchors = pool.get(pid)
                    if anchors:
                        c.execute(
                            "INSERT OR REPLACE INTO pools (run_id, prompt_id, anchors) "
                            "VALUES (?, ?, ?)",
                            (run_id, pid, anchors_to_json(anchors)),
                        )
                    else:
                        c.execute(
                            "DELETE FROM pools WHERE run_id = ? AND prompt_id = ?", (run_id, pid)
                        )
            self._sizes[run_id] = size  # only once the transaction committed
            return pool.get(prompt_id), size

        try:
            return await self._run(work)
        except StoreError:
            self._sizes.pop(run_id, None)  # count again next time
            raise

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

    async def aclose(self) -> None:
        def close():
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)
