"""The single-node default store: one SQLite file, written through on every change.

Calls run in a worker thread (``asyncio.to_thread``) behind a lock, so the event loop never
blocks on the disk. Every write is a transaction; a failure raises :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer_client.types import RunSettings

from ..arena.pools import Anchor, RunPool
from ..errors import StoreError
from .base import Store, settings_from_dict, settings_to_dict

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

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
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

    async def get_run(self, run_id: str) -> RunSettings | None:
        def work(c):
            row = c.execute("SELECT settings FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else settings_from_dict(json.loads(row[0]))

        return await self._run(work)

    async def create_run(self, settings: RunSettings) -> bool:
        def work(c):
            cur = c.execute(
                "INSERT OR IGNORE INTO runs (run_id, settings) VALUES (?, ?)",
                (settings.run_id, json.dumps(settings_to_dict(settings))),
            )
            return cur.rowcount == 1

        return await self._run(work)

    async def delete_run(self, run_id: str) -> bool:
        def work(c):
            with c:
                c.execute("BEGIN")
                c.execute("DELETE FROM pools WHERE run_id = ?", (run_id,))
                return c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount == 1

        return await self._run(work)

    async def list_runs(self) -> list[RunSettings]:
        def work(c):
            rows = c.execute("SELECT settings FROM runs ORDER BY run_id").fetchall()
            return [settings_from_dict(json.loads(r[0])) for r in rows]

        return await self._run(work)

    async def load_pool(self, run_id: str) -> RunPool:
        def work(c):
            rows = c.execute(
                "SELECT prompt_id, anchors FROM pools WHERE run_id = ?", (run_id,)
            ).fetchall()
            return RunPool.from_dict({pid: json.loads(a) for pid, a in rows})

        return await self._run(work)

    async def save_pools(self, run_id: str, prompts: Mapping[str, Sequence[Anchor]]) -> None:
        items = [(pid, json.dumps([a.to_dict() for a in v])) for pid, v in prompts.items()]

        def work(c):
            with c:
                c.execute("BEGIN")
                for pid, blob in items:
                    if blob == "[]":
                        c.execute(
                            "DELETE FROM pools WHERE run_id = ? AND prompt_id = ?", (run_id, pid)
                        )
                    else:
                        c.execute(
                            "INSERT OR REPLACE INTO pools (run_id, prompt_id, anchors) "
                            "VALUES (?, ?, ?)",
                            (run_id, pid, blob),
                        )

        await self._run(work)

    async def aclose(self) -> None:
        def close():
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)
