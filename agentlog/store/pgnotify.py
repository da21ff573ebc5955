"""LISTEN for the log's appends on PostgreSQL: a hint that wakes readers, who re-read by seq.

Every append sends ``pg_notify('agentlog_events', 'run_id:last_seq')`` in its transaction
(``PostgresStore``), so a notification arrives once the events are committed. A listener
holds a connection of its own. It never takes the payload for content: it only ends a wait
early; a notification missed (the connection dropped, say) costs a wait of the reader's
interval, after which it reads anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg

from .errors import StoreError
from .postgres import one_line
from .url import password_of, redact

CHANNEL = "agentlog_events"


def run_of(payload: str) -> str:
    """The run a notification names (``run_id:last_seq``)."""
    return payload.rpartition(":")[0]


class Listener:
    """A connection that LISTENs on the log's channel; ``wait(run, timeout)`` returns at the
    first append to ``run`` or after ``timeout`` seconds, whichever comes first. If the
    connection drops, waits last their timeout until it can be made again."""

    def __init__(self, url: str, *, connect_timeout: float = 10):
        self._url, self._connect_timeout = url, max(1, round(connect_timeout))
        self._where, self._secret = redact(url), password_of(url)
        self._conn: psycopg.Connection | None = None
        try:
            self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot listen for appends at {self._where}: {one_line(exc, self._secret)}") from None

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._url, autocommit=True, application_name="agentlog-listen",
                               connect_timeout=self._connect_timeout)
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn
        return conn

    def wait(self, run_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            conn = self._conn or self._connect()
            while (left := deadline - time.monotonic()) > 0:
                for note in conn.notifies(timeout=left, stop_after=1):
                    if run_of(note.payload) == run_id:
                        return
        except psycopg.Error:
            self.close()  # missed notifications are made up for by the reader's next read
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncListener:
    """One LISTEN connection for an asyncio application (the viewer): any number of tasks
    ``await wait(run, timeout)``. Its connection is made on the first wait and made again
    after it drops; while it cannot be had, waits simply last their timeout."""

    def __init__(self, url: str):
        self._url = url
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    async def wait(self, run_id: str, timeout: float) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())
        woken = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(woken)
        try:
            await asyncio.wait_for(woken.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiting.get(run_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiting[run_id]

    async def _listen(self) -> None:
        try:
            async for payload in self._notifications():
                for woken in self._waiting.get(run_of(payload), ()):
                    woken.set()
        except (psycopg.Error, OSError):
            return  # the next wait connects again; meanwhile readers fall back on their interval

    async def _notifications(self) -> AsyncIterator[str]:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10,
                                                         application_name="agentlog-viewer-listen") as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            async for note in conn.notifies():
                yield note.payload

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
