"""The event log in PostgreSQL (psycopg 3, synchronous): one log shared by many processes and machines.

The store's logic is ``SQLStore``'s, the SQL ``schema``'s: this module gives them a
connection that speaks sqlite3's dialect of the DB-API (``?`` placeholders, ``execute``
returning a cursor, ``in_transaction``), the Postgres schema (``pgschema``), and the one
place where psycopg's errors become the store's own, with the URL's password never in them.

Writers are optimistic: an append checks ``expected_seq`` and inserts under the
``(run_id, seq)`` key; a writer that raced another on the same run waits for it on that
key, and then finds its batch stale (``ConcurrencyError``). The lease is checked in the
append's transaction with the lease row locked for share, so a takeover waits for an
append under way, and an append after the takeover sees the new token. Every append
sends ``pg_notify('agentlog_events', 'run_id:last_seq')`` as it commits: a hint for
readers, who re-read by seq.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg import errors, pq

from . import pgschema
from ._base import SQLStore, _rollback
from ._batch import check_schema_version
from .errors import LogUnavailable, SchemaError, StoreError
from .url import password_of, redact, scrub

__all__ = ["PostgresStore"]

_PLACEHOLDER = re.compile(r"\?(\d*)")
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR, pq.TransactionStatus.ACTIVE)


@functools.lru_cache(maxsize=512)
def native(sql: str) -> str:
    """``sql`` with SQLite's placeholders (``?``, ``?N``) as Postgres's (``$N``)."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(1):
            return "$" + match.group(1)
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


class Connection:
    """A psycopg connection (autocommit: transactions are begun and ended by statements, as
    the shared code does with sqlite3) behind sqlite3's ``execute`` / ``executemany``."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> psycopg.RawCursor[Any]:
        cursor = self.conn.cursor()
        cursor.execute(native(sql), parameters or None)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.cursor().executemany(native(sql), rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status in _IN_TRANSACTION

    def close(self) -> None:
        self.conn.close()


def one_line(exc: BaseException, secret: str | None) -> str:
    """The driver's message in one line, without the password."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return scrub(text, secret) or type(exc).__name__


@contextmanager
def translate_errors(where: str, secret: str | None) -> Iterator[None]:
    """The one place where psycopg's errors become the store's own (the password scrubbed out)."""
    try:
        yield
    except StoreError:
        raise
    except psycopg.OperationalError as exc:  # the server went away or cannot be reached
        raise LogUnavailable(f"{where}: {one_line(exc, secret)}") from None
    except psycopg.Error as exc:  # the driver's message may quote the connection string: never chained
        raise StoreError(f"{where}: {one_line(exc, secret)}") from None


class PostgresStore(SQLStore):
    """Append-only event streams, one per run, in a PostgreSQL database named by a URL."""

    # An append holds the events table in ROW EXCLUSIVE mode from its first statement, before
    # it looks blobs up; vacuum and rebuild_index take it in SHARE ROW EXCLUSIVE mode, so they
    # wait for the appends under way and keep new ones out: vacuum can never drop a pack that
    # an append has just found a chunk in.
    BEGIN_WRITE = "BEGIN; LOCK TABLE events IN ROW EXCLUSIVE MODE"
    BEGIN_MAINTENANCE = "BEGIN; LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"
    CONFLICT = (errors.UniqueViolation, errors.DeadlockDetected)
    KEY_TAKEN = (errors.UniqueViolation,)
    DB_ERROR = (psycopg.Error,)
    LIKE = "ILIKE"
    LAST_SEQS = pgschema.LAST_SEQS
    SELECT_RUNS = pgschema.SELECT_RUNS
    RUN_IDS_BY_PREFIX = pgschema.RUN_IDS_BY_PREFIX
    LEASE_TOKEN = pgschema.LEASE_TOKEN
    SELECT_LEASE_TO_CLAIM = pgschema.SELECT_LEASE_TO_CLAIM
    CLAIMABLE_TO_CLAIM = pgschema.CLAIMABLE_TO_CLAIM
    PACKED_ROWS = pgschema.PACKED_ROWS

    def __init__(self, url: str, *, create: bool = True, read_only: bool = False, connect_timeout: float = 10):
        """Connect to the database at ``url`` (``postgresql://user:password@host:port/db``) and
        create (with ``create``) or migrate its tables.

        ``read_only`` never writes, not even a migration: the session itself is read-only.
        The database must exist; its tables are made on the first open that may create.
        """
        self.url = url
        self.where = redact(url)
        self._secret = password_of(url)
        options = {} if "connect_timeout" in url else {"connect_timeout": max(1, round(connect_timeout))}
        try:
            conn = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor,
                                   application_name="agentlog", **options)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {one_line(exc, self._secret)}") from None
        self._db = Connection(conn)
        self._start()
        try:
            with self._errors():
                if read_only:
                    self._db.execute("SET default_transaction_read_only = on")
                self._open(create, read_only)
        except BaseException:
            conn.close()
            raise

    def _open(self, create: bool, read_only: bool) -> None:
        found = self._version()
        if found == 0 and (read_only or not create):
            raise SchemaError(f"{self.where} holds no agentlog log (no agentlog tables): "
                              f"a command that writes (e.g. `agentlog run`) creates them")
        if found < pgschema.SCHEMA_VERSION and not read_only:
            self._migrate()

    def _version(self) -> int:
        """The database's schema version (0: no log yet); ``SchemaError`` for a newer one or another application's tables."""
        has_version, has_tables = self._db.execute(pgschema.INSPECT).fetchone()
        if not has_version:
            if has_tables:
                raise SchemaError(f"{self.where} has tables named events or runs, but no agentlog log: "
                                  f"use another database (or schema) for agentlog")
            return 0
        found = self._db.execute(pgschema.VERSION).fetchone()[0]
        check_schema_version(found, self.where, pgschema.SCHEMA_VERSION)
        return found

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(pgschema.MIGRATION_LOCK)  # another opener may be migrating: take turns
            found = self._version()
            db.execute(pgschema.VERSION_TABLE)
            for number, (name, sql) in enumerate(pgschema.MIGRATIONS[found:], start=found + 1):
                for statement in (s.strip() for s in sql.split(";")):
                    if statement:
                        db.execute(statement)
                db.execute(pgschema.RECORD_MIGRATION, (number, name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _errors(self) -> AbstractContextManager[None]:
        return translate_errors(self.where, self._secret)

    def _notify(self, db: Any, last: dict[str, int]) -> None:
        db.executemany(pgschema.NOTIFY, sorted(last.items()))

    def _size(self) -> int:
        return self._db.execute(pgschema.DATABASE_SIZE).fetchone()[0]

    def _compact(self) -> None:
        # Postgres reuses the freed pages; giving them back to the OS (VACUUM FULL) would
        # lock the tables against every writer of the log.
        self._db.execute("VACUUM packs")
        self._db.execute("VACUUM blobs")

