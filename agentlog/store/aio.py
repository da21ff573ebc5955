"""The asyncio face of the store: its reads (``AsyncReads``, shared with PostgreSQL's
read-only face in ``aio_postgres``; ``opening`` picks one), and SQLite's whole face on aiosqlite: same schema,
same SQL, same index fold."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from agentlog.events import Event
from agentlog.events.rows import Reader

from . import _lease, blobs, schema
from ._batch import (
    answers_to,
    check_identity,
    check_schema_version,
    encode_batch,
    fork_point,
    lineage_of,
    pick_run_id,
    prefix_bounds,
    queue_writes,
    read_only_uri,
)
from .errors import ConcurrencyError, LeaseLost, RunNotFound, SchemaError, StoreError
from .records import Lease, PartialAnswer, RunSummary, StoredEvent
from .sqlite import SYNCHRONOUS, SQLiteStore, translate_errors


class AsyncReads:
    """The reads of the asyncio face, over any database: a subclass brings ``_fetch`` (rows
    of the shared SQL), ``lease``, ``partials`` and ``find_answers``, and the dialect's few
    statements. What the viewer reads through, from SQLite and from PostgreSQL alike."""

    RUN_IDS_BY_PREFIX = schema.RUN_IDS_BY_PREFIX
    SELECT_PACKS = blobs.SELECT_PACKS
    LIKE = "LIKE"  # case-insensitive LIKE
    _shares: bool
    _pack_cache: blobs.PackCache

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        raise NotImplementedError

    async def wait_for_append(self, run_id: str, timeout: float) -> None:
        """Return once the run may have new events, ``timeout`` seconds at most: a hint, after
        which readers read by seq. Here a timer (polling); PostgreSQL wakes on NOTIFY."""
        await asyncio.sleep(timeout)

    async def _decode(self, rows: list[tuple], run_id: str | None = None) -> list[StoredEvent]:
        """Rows as events, the packs of text they refer to read at once (and cached); given
        ``run_id``, rows of that run without its id (as ``StoredEvent.from_rows``)."""
        cache = self._pack_cache.items
        packs = {p: cache[p] for p in blobs.packs_of_rows(rows) if p in cache}
        missing = [p for p in blobs.packs_of_rows(rows) if p not in packs]
        for part in blobs.batches(missing):
            for pack, codec, stored in await self._fetch(self.SELECT_PACKS, (part,)):
                packs[pack] = data = blobs.inflate(codec, stored)
                self._pack_cache.add(pack, data)
        return StoredEvent.from_rows(rows, Reader(lambda reference: blobs.join(reference, packs), packs), run_id)

    async def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        shared = self._shares and await self._fetch(schema.SELECT_SHARE, (run_id,))
        sql = schema.SELECT_SHARED_EVENTS if shared else schema.SELECT_EVENTS
        return await self._decode(await self._fetch(sql, (run_id, after, upto if upto is not None else 2**62)), run_id)

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
        return pick_run_id(prefix, await self._fetch(self.RUN_IDS_BY_PREFIX, prefix_bounds(prefix)))

    async def list_runs(
        self, *, status: str | None = None, text: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[RunSummary]:
        sql, params = schema.list_runs_query(status=status, text=text, limit=limit, offset=offset, like=self.LIKE)
        return [RunSummary.from_row(r) for r in await self._fetch(sql, params)]

    async def count_runs(self, *, status: str | None = None, text: str | None = None) -> int:
        sql, params = schema.count_runs_query(status=status, text=text, like=self.LIKE)
        return (await self._fetch(sql, params))[0][0]

    async def lineage(self, run_id: str) -> list[str]:
        return lineage_of(await self._fetch(schema.LINEAGE, (run_id,)))

    async def children(self, run_id: str) -> list[RunSummary]:
        return [RunSummary.from_row(r) for r in await self._fetch(schema.CHILDREN, (run_id,))]

    async def events_of_type(self, type_name: str) -> list[StoredEvent]:
        return await self._decode(await self._fetch(schema.EVENTS_OF_TYPE, (type_name,)))


class AsyncSQLiteStore(AsyncReads):
    """Use ``await AsyncSQLiteStore.open(path)``; every method is a coroutine."""

    def __init__(self, db: aiosqlite.Connection, path: str, version: int = schema.SCHEMA_VERSION):
        self._db, self.path = db, path
        # A read-only open reads an older schema as it is: no shared prefixes, no blobs.
        self._shares = version >= schema.SHARES_VERSION
        # One connection: tasks take turns at a write transaction, as threads do in the sync face.
        self._write_lock = asyncio.Lock()
        self._pack_cache = blobs.PackCache()

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
            db = await aiosqlite.connect(read_only_uri(path), uri=True, timeout=busy_timeout, isolation_level=None)
            try:
                identity = await (await db.execute(schema.IDENTITY)).fetchone()
                columns = await (await db.execute(schema.TABLE_COLUMNS)).fetchall()
                found = check_identity(path, tuple(identity), [tuple(c) for c in columns])
                if found == 0:
                    raise SchemaError(f"{path} is not an agentlog database")
            except BaseException:
                await db.close()
                raise
        return cls(db, path, found)

    async def append(self, run_id: str, events: Sequence[Event], expected_seq: int, *,
                     lease: Lease | None = None) -> int:
        if not events:
            return expected_seq
        async with self._write_lock:
            return await self._append(run_id, events, expected_seq, lease)

    async def _append(self, run_id: str, events: Sequence[Event], expected_seq: int, lease: Lease | None) -> int:
        with translate_errors(self.path):
            db = self._db
            await db.execute("BEGIN IMMEDIATE")
            try:
                if lease is not None:  # fencing, in the append's transaction (as the sync face)
                    found = await (await db.execute(schema.LEASE_TOKEN, (lease.run_id,))).fetchone()
                    if not _lease.holds(lease.token, tuple(found) if found else None):
                        held = await (await db.execute(schema.SELECT_LEASE, (lease.run_id,))).fetchone()
                        raise _lease.lost(lease.run_id, lease.token, tuple(held) if held else None)
                actual = (await (await db.execute(schema.LAST_SEQ, (run_id,))).fetchone())[0]
                if actual != expected_seq:
                    raise ConcurrencyError(run_id, expected_seq, actual)
                current = await (await db.execute(schema.SELECT_RUN, (run_id,))).fetchone()
                now = time.time()
                shared = await self._shared_prefix(events, expected_seq)
                row = RunSummary.from_row(tuple(current)) if current else None
                # The blob ids come from SQL the encoder cannot await: encode once to
                # collect the chunks, store them, then encode with their ids.
                chunks: dict[bytes, bytes] = {}

                def collect(found: list[bytes]) -> list[int]:
                    chunks.update((blobs.digest(c), c) for c in found)
                    return []

                encode_batch(run_id, events, expected_seq, now, row, collect, shared[1] if shared else 0)
                where = await self._put_blobs(chunks)
                rows, summary = encode_batch(
                    run_id, events, expected_seq, now, row,
                    lambda found: blobs.spans(where[blobs.digest(c)] for c in found), shared[1] if shared else 0,
                )
                await db.executemany(schema.INSERT_EVENT, rows)
                if shared:
                    # Its time is its RunForked's, recorded ``now`` too (schema.SHARED_AT).
                    await db.execute(schema.INSERT_SHARE, (run_id, shared[0], shared[1], None))
                await db.execute(schema.UPSERT_RUN, summary.as_row())
                for sql, params in queue_writes(run_id, events, now):
                    await db.execute(sql, params)
                await db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                await db.execute("ROLLBACK")
                raise ConcurrencyError(run_id, expected_seq, -1) from exc
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return expected_seq + len(events)

    async def _put_blobs(self, chunks: dict[bytes, bytes]) -> dict[bytes, blobs.Location]:
        """Where ``chunks`` (by hash) are: existing ones found, new ones stored as one pack."""
        where: dict[bytes, blobs.Location] = {}
        new: list[bytes] = []
        for key in chunks:
            row = await (await self._db.execute(blobs.SELECT_LOCATION, (key,))).fetchone()
            if row is None:
                new.append(key)
            else:
                where[key] = tuple(row)
        if new:
            pack = (await (await self._db.execute(blobs.NEW_PACK, (b"",))).fetchall())[0][0]
            start = 0
            for key in new:
                where[key] = (pack, start, len(chunks[key]))
                await self._db.execute(blobs.INSERT, (key, *where[key]))
                start += len(chunks[key])
            await self._db.execute(blobs.FILL_PACK, (*blobs.deflate(b"".join(chunks[k] for k in new)), pack))
        return where

    async def _shared_prefix(self, events: Sequence[Event], expected_seq: int) -> tuple[str, int] | None:
        """As the sync face: a fork's prefix equal to its parent's is shared, not copied."""
        point = fork_point(events, expected_seq)
        if point is None:
            return None
        parent, n = point
        if await self.last_seq(parent) < n or await self.events(parent, 0, n) != list(events[:n]):
            return None
        return point

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with translate_errors(self.path):
            async with self._db.execute(sql, params) as cursor:
                return [tuple(r) for r in await cursor.fetchall()]

    async def acquire_lease(self, run_id: str, owner: str, ttl: float, *, take_over: int | None = None) -> Lease:
        """As ``SQLiteStore.acquire_lease``."""
        async with self._write_lock, self._write() as db:
            now = time.time()
            row = await (await db.execute(schema.SELECT_LEASE, (run_id,))).fetchone()
            lease = _lease.claim(run_id, owner, ttl, take_over, tuple(row) if row else None, now)
            await db.execute(schema.CLAIM_LEASE, (run_id, owner, lease.token, lease.expires_at, now))
        return lease

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """As ``SQLiteStore.renew_lease``."""
        expires_at = time.time() + _lease.check_ttl(ttl)
        async with self._write_lock, self._write() as db:
            cursor = await db.execute(schema.RENEW_LEASE, (expires_at, lease.run_id, lease.token))
            if cursor.rowcount != 1:
                row = await (await db.execute(schema.SELECT_LEASE, (lease.run_id,))).fetchone()
                current = _lease.holder(lease.run_id, tuple(row) if row else None)
                raise LeaseLost(lease.run_id, lease.token, current.owner if current else None)
        return Lease(lease.run_id, lease.owner, lease.token, expires_at)

    async def release_lease(self, lease: Lease) -> None:
        """As ``SQLiteStore.release_lease``."""
        async with self._write_lock, self._write() as db:
            await db.execute(schema.RELEASE_LEASE, (lease.run_id, lease.token))

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        with translate_errors(self.path):
            db = self._db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def lease(self, run_id: str) -> Lease | None:
        """The run's lease holder, live or expired; ``None`` if nobody holds it (or the log
        predates leases)."""
        try:
            rows = await self._fetch(schema.SELECT_LEASE, (run_id,))
        except StoreError:
            if await self._fetch("SELECT count(*) FROM sqlite_master WHERE name = 'leases'", ()) == [(0,)]:
                return None  # an older log opened read-only
            raise
        return _lease.holder(run_id, rows[0] if rows else None)

    async def find_answers(self, request_hash: str) -> list[StoredEvent]:
        sql = schema.ANSWERS_BY_HASH if self._shares else schema.ANSWERS_BY_HASH_BEFORE_SHARES
        return answers_to(request_hash, await self._decode(await self._fetch(sql, (request_hash,))))

    async def partials(self, run_id: str) -> list[PartialAnswer]:
        """The run's answers being streamed; none in a log older than the table (read as it is)."""
        try:
            rows = await self._fetch(schema.SELECT_PARTIALS, (run_id,))
        except StoreError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [PartialAnswer.from_row(r) for r in rows]

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> "AsyncSQLiteStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
