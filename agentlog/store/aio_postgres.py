"""The asyncio face of the PostgreSQL store, read-only: what the viewer reads through.

psycopg's ``AsyncConnection`` in a read-only session, running the shared SQL (``schema``,
with Postgres's placeholders) through ``AsyncReads``, as ``AsyncSQLiteStore`` runs it on
aiosqlite. ``wait_for_append`` wakes on the log's NOTIFY (``pgnotify.AsyncListener``).
Nothing here writes; a person's decision in the viewer goes through the sync store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from . import _lease, blobs, pgschema, schema
from ._batch import answers_to, check_schema_version
from .aio import AsyncReads
from .errors import SchemaError, StoreError
from .pgnotify import AsyncListener
from .postgres import native, one_line
from .records import Lease, PartialAnswer, StoredEvent
from .url import password_of, redact

SELECT_PACKS = ("SELECT id, codec, data FROM packs WHERE id IN "
                f"(SELECT CAST(value AS BIGINT) FROM {pgschema.JSON_IDS})")


class AsyncPostgresStore(AsyncReads):
    """Use ``await AsyncPostgresStore.open(url)``; every method is a coroutine."""

    RUN_IDS_BY_PREFIX = pgschema.RUN_IDS_BY_PREFIX
    SELECT_PACKS = SELECT_PACKS
    LIKE = "ILIKE"

    def __init__(self, conn: psycopg.AsyncConnection[Any], url: str):
        self._conn, self.url = conn, url
        self.where, self._secret = redact(url), password_of(url)
        self._shares = True
        self._pack_cache = blobs.PackCache()
        self._lock = asyncio.Lock()  # one connection: one statement at a time
        self._listener = AsyncListener(url)
        self._connect_timeout: float = 10

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float = 10) -> "AsyncPostgresStore":
        """Connect to the log at ``url`` in a read-only session; ``SchemaError`` if the database
        holds no agentlog log, or a newer one."""
        store = cls(await _connect(url, connect_timeout), url)
        store._connect_timeout = connect_timeout
        try:
            (has_version, _tables), = await store._fetch(pgschema.INSPECT, ())
            if not has_version:
                raise SchemaError(f"{store.where} holds no agentlog log (no agentlog tables)")
            (found,), = await store._fetch(pgschema.VERSION, ())
            check_schema_version(found, store.where, pgschema.SCHEMA_VERSION)
        except BaseException:
            await store._conn.close()
            raise
        return store

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        try:
            async with self._lock:
                if self._conn.closed:  # the server closed it (it went away, or restarted): a new session, if it is back
                    self._conn = await _connect(self.url, self._connect_timeout)
                cursor = self._conn.cursor()
                await cursor.execute(native(sql), params or None)
                return list(await cursor.fetchall()) if cursor.description else []
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {one_line(exc, self._secret)}") from None

    async def wait_for_append(self, run_id: str, timeout: float) -> None:
        await self._listener.wait(run_id, timeout)

    async def lease(self, run_id: str) -> Lease | None:
        rows = await self._fetch(schema.SELECT_LEASE, (run_id,))
        return _lease.holder(run_id, rows[0] if rows else None)

    async def find_answers(self, request_hash: str) -> list[StoredEvent]:
        return answers_to(request_hash, await self._decode(await self._fetch(schema.ANSWERS_BY_HASH, (request_hash,))))

    async def partials(self, run_id: str) -> list[PartialAnswer]:
        return [PartialAnswer.from_row(r) for r in await self._fetch(schema.SELECT_PARTIALS, (run_id,))]

    async def close(self) -> None:
        await self._listener.close()
        await self._conn.close()

    async def __aenter__(self) -> "AsyncPostgresStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _connect(url: str, connect_timeout: float) -> psycopg.AsyncConnection[Any]:
    """A read-only session of the viewer; ``StoreError`` in one line (no password) if the server cannot be reached."""
    conn = None
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, cursor_factory=psycopg.AsyncRawCursor, application_name="agentlog-viewer",
            connect_timeout=max(1, round(connect_timeout)))
        await conn.execute("SET default_transaction_read_only = on")
    except BaseException as exc:
        if conn is not None:
            await conn.close()
        if isinstance(exc, psycopg.Error):
            raise StoreError(f"cannot connect to {redact(url)}: {one_line(exc, password_of(url))}") from None
        raise
    return conn
