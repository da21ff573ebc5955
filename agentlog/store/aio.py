"""The asyncio face of the SQLite store, on aiosqlite: same schema, same SQL, same index fold."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from agentlog.events import Event

from . import schema
from ._batch import check_schema_version, encode_batch, lineage_of, pick_run_id, prefix_bounds
from .errors import ConcurrencyError, RunNotFound, SchemaError
from .records import RunSummary, StoredEvent
from .sqlite import SYNCHRONOUS, SQLiteStore, translate_errors


class AsyncSQLiteStore:
    """Use ``await AsyncSQLiteStore.open(path)``; every method is a coroutine."""

    def __init__(self, db: aiosqlite.Connection, path: str):
        self._db, self.path = db, path
        # One connection: tasks take turns at a write transaction, as threads do in the sync face.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, create: bool = True, durability: str = "normal",
        busy_timeout: float = 10.0, read_only: bool = False,
    ) -> "AsyncSQLiteStore":
        """Open (creating and migrating unless ``read_only``) the log at ``path``.

        ``read_only`` never writes, not even a migration: a log of an older schema is read
        as it is (migrations only add indexes and tables).
        """
        path = str(path)
        if read_only:
            return await cls._open_read_only(path, busy_timeout)
        # Migrations run once, through the sync face, so the two can never disagree.
        if path != ":memory:" and (create or Path(path).exists()):
            SQLiteStore(path, create=create, durability=durability).close()
        elif path != ":memory:":
            raise SchemaError(f"no agentlog database at {path}")
        with translate_errors(path):
            db = await aiosqlite.connect(path, timeout=busy_timeout, isolation_level=None)
            try:
                found = (await (await db.execute("PRAGMA user_version")).fetchone())[0]
                check_schema_version(found, path)
                if found < schema.SCHEMA_VERSION:  # only ":memory:" gets here
                    for number, (_n, sql) in enumerate(schema.MIGRATIONS[found:], start=found + 1):
                        await db.executescript(sql)
                        await db.execute(f"PRAGMA user_version = {number}")
                for pragma in schema.PRAGMAS:
                    await db.execute(pragma)
                await db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
            except BaseException:
                await db.close()
                raise
        return cls(db, path)

    @classmethod
    async def _open_read_only(cls, path: str, busy_timeout: float) -> "AsyncSQLiteStore":
        if not Path(path).is_file():
            raise SchemaError(f"no agentlog database at {path}")
        with translate_errors(path):
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            db = await aiosqlite.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
            try:
                found = (await (await db.execute("PRAGMA user_version")).fetchone())[0]
                check_schema_version(found, path)
                if found == 0:
                    raise SchemaError(f"{path} is not an agentlog database")
            except BaseException:
                await db.close()
                raise
        return cls(db, path)

    async def append(self, run_id: str, events: Sequence[Event], expected_seq: int) -> int:
        if not events:
            return expected_seq
        async with self._write_lock:
            return await self._append(run_id, events, expected_seq)

    async def _append(self, run_id: str, events: Sequence[Event], expected_seq: int) -> int:
        with translate_errors(self.path):
            db = self._db
            await db.execute("BEGIN IMMEDIATE")
            try:
                actual = (await (await db.execute(schema.LAST_SEQ, (run_id,))).fetchone())[0]
                if actual != expected_seq:
                    raise ConcurrencyError(run_id, expected_seq, actual)
                current = await (await db.execute(schema.SELECT_RUN, (run_id,))).fetchone()
                rows, summary = encode_batch(
                    run_id, events, expected_seq, time.time(),
                    RunSummary.from_row(tuple(current)) if current else None,
                )
                await db.executemany(schema.INSERT_EVENT, rows)
                await db.execute(schema.UPSERT_RUN, summary.as_row())
                await db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                await db.execute("ROLLBACK")
                raise ConcurrencyError(run_id, expected_seq, -1) from exc
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return expected_seq + len(events)

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with translate_errors(self.path):
            async with self._db.execute(sql, params) as cursor:
                return [tuple(r) for r in await cursor.fetchall()]

    async def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        rows = await self._fetch(schema.SELECT_EVENTS, (run_id, after, upto if upto is not None else 2**62))
        return [StoredEvent.from_row(r) for r in rows]

    async def events(self, run_id: str, after: int = 0, upto: int | None = None) -> list[Event]:
        return [s.event for s in await self.read(run_id, after, upto)]

    async def last_seq(self, run_id: str) -> int:
        return (await self._fetch(schema.LAST_SEQ, (run_id,)))[0][0]

    async def get_run(self, run_id: str) -> RunSummary:
        rows = await self._fetch(schema.SELECT_RUN, (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return RunSummary.from_row(rows[0])

    async def resolve_run_id(self, prefix: str) -> str:
        return pick_run_id(prefix, await self._fetch(schema.RUN_IDS_BY_PREFIX, prefix_bounds(prefix)))

    async def list_runs(
        self, *, status: str | None = None, text: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[RunSummary]:
        sql, params = schema.list_runs_query(status=status, text=text, limit=limit, offset=offset)
        return [RunSummary.from_row(r) for r in await self._fetch(sql, params)]

    async def count_runs(self, *, status: str | None = None, text: str | None = None) -> int:
        sql, params = schema.count_runs_query(status=status, text=text)
        return (await self._fetch(sql, params))[0][0]

    async def lineage(self, run_id: str) -> list[str]:
        return lineage_of(await self._fetch(schema.LINEAGE, (run_id,)))

    async def children(self, run_id: str) -> list[RunSummary]:
        return [RunSummary.from_row(r) for r in await self._fetch(schema.CHILDREN, (run_id,))]

    async def find_answers(self, request_hash: str) -> list[StoredEvent]:
        return [StoredEvent.from_row(r) for r in await self._fetch(schema.ANSWERS_BY_HASH, (request_hash,))]

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> "AsyncSQLiteStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
