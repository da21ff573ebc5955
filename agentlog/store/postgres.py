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

Each statement is a round trip to the server, so an append is written in two (psycopg's
pipeline mode): the text's chunks are cut and hashed before the transaction; one round
trip begins it, reads the leases, the index rows and last seqs of runs this store does
not know (``SQLStore._heads``) and where the chunks it does not know are stored; the rows
are encoded; and a second round trip writes the new chunks' pack, the rows, the index,
the queue, the lease given up by a run's last append and the notification, and commits.
The checks and the rows are the shared store's (``SQLStore._encode_group``); a fork's
shared prefix, and a race the checks did not foresee, take the general path, a statement
at a time.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors, pq

from agentlog.events import pack

from . import _lease, pgschema, schema
from ._base import SQLStore, _Append, _rollback
from ._batch import check_schema_version, fork_point
from .blobs import Location, deflate, digest, spans
from .errors import LogUnavailable, SchemaError, StoreError
from .records import Lease, RunSummary, StoredEvent
from .url import password_of, redact, scrub

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
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

    def __init__(self, conn: psycopg.Connection[Any], reconnect: Callable[[], psycopg.Connection[Any]]):
        self.conn = conn
        self._reconnect = reconnect

    def pipelined(self, work: Callable[[], _T]) -> _T:
        """``work()`` in psycopg's pipeline mode: its statements go out together, and each
        result it fetches is a round trip. An error of any statement is raised once the
        pipeline has ended (the statements behind it were skipped), the session renewed."""
        failed: psycopg.Error | None = None
        try:
            with self.conn.pipeline():
                try:
                    result = work()
                except psycopg.Error as exc:  # raised at the pipeline's end instead (psycopg would log
                    failed = exc              # the abort of the statements behind it as a warning)
        except psycopg.Error as exc:
            failed = failed or exc
        except BaseException:
            self.renew()
            raise
        if failed is not None:
            self.renew()  # the failed transaction goes with the old session
            raise failed
        return result

    def renew(self) -> None:
        """A new session in place of this one (``reconnect`` sets it up as the first), after a
        pipeline failed: psycopg (3.2, 3.3) can then keep a statement as prepared that the
        server skipped, whose next use fails. Kept as it is if the server cannot be reached
        (the error that led here says so)."""
        try:
            conn = self._reconnect()
        except psycopg.Error:
            return
        old, self.conn = self.conn, conn
        old.close()

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
    BEGIN_PIPELINED = ("BEGIN", "LOCK TABLE events IN ROW EXCLUSIVE MODE")  # the same, a statement each
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

        def connect() -> psycopg.Connection[Any]:
            # Every session of the store, the first and each one ``Connection.renew`` opens
            # after a failed pipeline, is set up here: a renewed session that lost the
            # read-only setting would let a read-only store write.
            conn = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor,
                                   application_name="agentlog", **options)
            try:
                if read_only:
                    conn.execute("SET default_transaction_read_only = on")
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {one_line(exc, self._secret)}") from None
        self._db = Connection(conn, connect)
        self._start()
        try:
            with self._errors():
                self._open(create, read_only)
        except BaseException:
            self._db.close()
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
        if self._db.conn.closed:
            self._reconnect()
        return translate_errors(self.where, self._secret)

    def _reconnect(self) -> None:
        """A new session in place of one the server closed (it went away, or restarted): a
        long-lived store, a worker's, goes on once the server is back. Only between
        operations (each begins here, under the store's lock), so no transaction is split
        across sessions; the heads and chunks the store remembered are read again, since
        the commit that failed with the old session may or may not have happened. If the
        server is still away, the closed session stays and the operation fails in one line."""
        before = self._db.conn
        self._db.renew()
        if self._db.conn is not before:
            self._known.clear()
            self._chunks.clear()

    def _write_group(self, db: Any, group: list[_Append]) -> None:
        if any(item.claim is not None or fork_point(item.events, item.expected_seq, item.times) for item in group):
            # A fork's prefix is checked against its parent's rows; a new run's lease is claimed
            # (acquire_lease(first=...)): both as SQLStore writes a group.
            super()._write_group(db, group)
            return
        try:
            fenced, located = self._write_pipelined(db, group)
        except self.CONFLICT:  # a writer of another process got in between: find whose batch is stale
            self._forget(group)
            _rollback(db)
            super()._write_group(db, group)
            return
        except BaseException:
            self._forget(group)
            _rollback(db)
            raise
        self._remember(fenced, located)

    def _write_pipelined(self, db: Connection, group: list[_Append]) -> tuple[list[_Append], Any]:
        """The group's transaction in two round trips (see the module's docstring)."""
        blobs = _Prefetched(db, group, self._chunks)
        return db.pipelined(lambda: self._pipelined(db, group, blobs))

    def _pipelined(self, db: Connection, group: list[_Append], blobs: "_Prefetched") -> tuple[list[_Append], Any]:
        for statement in self.BEGIN_PIPELINED:
            db.execute(statement)
        leased = sorted({item.lease.run_id for item in group if item.lease is not None})
        leases = db.execute(pgschema.FENCE, (leased,)) if leased else None
        blobs.look_up()
        last, before = self._heads(db, group)  # reads the runs it does not know: the first round trip
        now = time.time()
        held = {row[0]: row[1:] for row in leases.fetchall()} if leases else {}
        fenced = []
        for item in group:  # the fence, as SQLStore._fence
            if item.lease is not None:
                run_id, token = item.lease.run_id, item.lease.token
                row = held.get(run_id)
                if row is None or row[0] is None or row[1] != token:
                    item.result, item.error = 0, _lease.lost(run_id, token, row)
                    continue
            fenced.append(item)
        writes = self._encode_group(db, fenced, now, last, before, blobs.put)
        blobs.finish()
        # A statement per row, not executemany, which waits for its results inside a pipeline:
        # the writes' errors (a key another process took) come at the pipeline's end.
        passed = [item for item in fenced if item.error is None]
        for sql, params in [*((schema.INSERT_EVENT, row) for row in writes.rows),
                            *((schema.UPSERT_RUN, summary.as_row()) for summary in writes.runs),
                            *writes.queue,
                            *((schema.RELEASE_LEASE, (item.lease.run_id, item.lease.token))
                              for item in passed if item.release),
                            *((pgschema.NOTIFY, last) for last in sorted((item.run_id, item.result)
                                                                         for item in passed))]:
            db.execute(sql, params)
        db.execute("COMMIT")  # the second round trip: sent as the pipeline ends
        return fenced, blobs.located if writes.clean else None

    def claim_runs(self, owner: str, ttl: float, limit: int) -> list[tuple[Lease, RunSummary]]:
        # As SQLStore.claim_runs, in two round trips: the pick (and lease rows for runs never
        # leased), then the leases taken unless another claimant took them since, and the commit.
        ttl = _lease.check_ttl(ttl)
        if limit < 1 or not self._fetch(schema.CLAIMABLE, (time.time(),)):  # idle polls take no lock
            return []
        with self._lock, self._errors():
            db = self._db
            now = time.time()

            def claim() -> tuple[list[RunSummary], Any]:
                for statement in self.BEGIN_PIPELINED:
                    db.execute(statement)
                picked = [RunSummary.from_row(row) for row in db.execute(pgschema.PICK_TO_CLAIM, (now, limit))]
                taken = db.execute(pgschema.TAKE_LEASES, (owner, now + ttl, now, [r.run_id for r in picked], now)
                                   ) if picked else None
                db.execute("COMMIT")
                return picked, taken

            try:
                picked, taken = db.pipelined(claim)
            except BaseException:
                _rollback(db)
                raise
            tokens = dict(taken.fetchall()) if taken is not None else {}
        return [(Lease(run.run_id, owner, tokens[run.run_id], now + ttl), run) for run in picked if run.run_id in tokens]

    def read_runs(self, run_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        # One statement for every run that shares no prefix, rather than two round trips a run.
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        with self._lock, self._errors():
            db = self._db
            rows = db.execute(pgschema.EVENTS_OF_RUNS, (ids,)).fetchall()
            logs = {run_id: StoredEvent.from_rows([row[1:] for row in group], self._blobs, run_id)
                    for run_id, group in itertools.groupby(rows, key=operator.itemgetter(0))}
            for run_id in ids:
                if run_id in logs:
                    self._shares[run_id] = False
                else:  # it shares a prefix with another run, or has no events
                    logs[run_id] = self._read_rows(db, run_id, 0, 2**62)
        return {run_id: logs[run_id] for run_id in ids}

    def _notify(self, db: Any, last: dict[str, int]) -> None:
        db.executemany(pgschema.NOTIFY, sorted(last.items()))

    def _size(self) -> int:
        return self._db.execute(pgschema.DATABASE_SIZE).fetchone()[0]

    def _compact(self) -> None:
        # Postgres reuses the freed pages; giving them back to the OS (VACUUM FULL) would
        # lock the tables against every writer of the log.
        self._db.execute("VACUUM packs")
        self._db.execute("VACUUM blobs")


class _Prefetched:
    """The blob writer of a pipelined append: every chunk of the group's text is cut and
    hashed before the transaction (the events packed once without storing anything), those
    whose location this store does not know are looked up in the transaction's first round
    trip, and ``put`` then answers from them; the new chunks go in one pack, whose id is
    taken beforehand, written with their locations in the second round trip. A chunk
    another writer stores meanwhile is kept in this pack too (this group's rows refer to it
    here; ``blobs`` keeps the other location). ``known``: as ``BlobWriter``'s.
    """

    def __init__(self, db: Connection, group: list[_Append], known: Mapping[bytes, Location]):
        self._db = db
        self._known = known
        self._digests: dict[bytes, bytes] = {}
        for item in group:
            for event in item.events:
                try:
                    pack(event, self._collect)
                except Exception:  # noqa: BLE001 - an event that does not encode fails its own batch later
                    break
        self._found: dict[bytes, Location] = {}  # what the lookup found, for any batch of the group
        self._seen: dict[bytes, Location] = {}  # what ``put`` handed to the batches it encoded
        self._pending: list[Any] = []
        self._pack: int | None = None
        self._parts: list[bytes] = []
        self._new: list[tuple[bytes, int, int, int]] = []
        self._size = 0

    def _collect(self, chunks: list[bytes]) -> list[int]:
        for chunk in chunks:
            if chunk not in self._digests:
                self._digests[chunk] = digest(chunk)
        return []

    def look_up(self) -> None:
        """Send the lookups (in the transaction's first round trip)."""
        unknown = list({key for key in self._digests.values() if key not in self._known})
        if unknown:
            self._pending = [self._db.execute(pgschema.BLOB_LOCATIONS, (unknown,)),
                             self._db.execute(pgschema.NEXT_PACK)]

    def put(self, chunks: list[bytes]) -> list[int]:
        if self._pending:
            locations, next_pack = self._pending
            self._found.update((bytes(row[0]), tuple(row[1:])) for row in locations.fetchall())
            self._pack = next_pack.fetchone()[0]
            self._pending = []
        return spans(self._locate(chunk) for chunk in chunks)

    def _locate(self, chunk: bytes) -> Location:
        key = self._digests.get(chunk) or digest(chunk)
        found = self._seen.get(key) or self._found.get(key) or self._known.get(key)
        if found is None:
            if self._pack is None:  # a chunk the first pass did not see: a round trip for an id
                self._pack = self._db.execute(pgschema.NEXT_PACK).fetchone()[0]
            found = (self._pack, self._size, len(chunk))
            self._new.append((key, *found))
            self._parts.append(chunk)
            self._size += len(chunk)
        self._seen[key] = found
        return found

    @property
    def located(self) -> dict[bytes, Location]:
        """The chunks ``put`` handed to the batches it encoded, by hash: where they are. Not
        all the lookup found: a stale or fenced-out batch's chunk may be in a pack no
        committed event refers to (left by a batch that failed half-way), which ``vacuum``
        drops; kept in the store's cache, a later append would refer to it."""
        return self._seen

    def finish(self) -> None:
        """Send the new chunks' pack and locations (in the transaction's second round trip)."""
        if self._new:
            self._db.execute(pgschema.INSERT_PACK, (self._pack, *deflate(b"".join(self._parts))))
            self._db.execute(pgschema.INSERT_BLOBS, [list(column) for column in zip(*self._new)])
