"""The event log in an SQLite file: the embedded default store (synchronous face).

One connection, guarded by a lock, so actor threads can share a store. Every write is
one ``BEGIN IMMEDIATE`` transaction: the batch, the concurrency check and the runs-index
row commit together or not at all.

Appends from many threads are group-committed: while one thread commits, the others
queue their batches, and the next thread to commit takes every queued batch into one
transaction, checked in queue order as if appended one after another. A stale batch is
left out and its writer alone gets the ``ConcurrencyError``; every writer returns only
after the transaction holding its batch has committed.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from agentlog.events import Event

from agentlog.events import blob_refs
from agentlog.events.packed import Unpacker

from . import _lease, index, schema
from ._batch import (
    check_identity,
    encode_batch,
    fork_point,
    lineage_of,
    pick_run_id,
    prefix_bounds,
    queue_writes,
    read_only_uri,
)
from .blobs import BlobReader, BlobWriter, PackCache, packs_of
from .errors import (
    ConcurrencyError,
    DiskFull,
    LeaseLost,
    RunNotFound,
    SchemaError,
    StoreBusy,
    StoreError,
)
from .records import Lease, PartialAnswer, RunSummary, StoredEvent

# The runs-index row is updated in place: ``INSERT OR REPLACE`` would delete and
# re-insert it, rewriting the table's and both indexes' pages on every append.
UPSERT_RUN = (
    f"INSERT INTO runs ({schema.RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET parent_run_id = excluded.parent_run_id, "
    "fork_seq = excluded.fork_seq, task = excluded.task, pipeline = excluded.pipeline, "
    "status = excluded.status, created_at = excluded.created_at, updated_at = excluded.updated_at, "
    "score = excluded.score, iterations = excluded.iterations, tokens = excluded.tokens, "
    "last_seq = excluded.last_seq"
)

# A group's checks in one statement each: the last seq (by the primary key's max
# optimisation) and the index row of every run in the group, ids given as a JSON array.
LAST_SEQS = (
    "SELECT value, (SELECT coalesce(max(seq), 0) FROM events WHERE run_id = value) FROM json_each(?)"
)
SELECT_RUNS = f"SELECT {schema.RUN_COLUMNS} FROM runs WHERE run_id IN (SELECT value FROM json_each(?))"

SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}


@contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """The one place where sqlite3 errors become the store's own."""
    try:
        yield
    except StoreError:
        raise
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreBusy(f"{path}: database is locked by another process ({exc})") from exc
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
        if code == sqlite3.SQLITE_FULL:
            raise DiskFull(f"{path}: the disk is full (every event written before is kept)") from exc
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) and not os.access(Path(path).parent, os.W_OK):
            raise StoreError(f"{path}: the log's directory cannot be written ({exc}); "
                             f"commands that only read the log still work") from exc
        raise StoreError(f"{path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path} is not an agentlog database ({exc})") from exc


class SQLiteStore:
    """Append-only event streams, one per run, in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        durability: str = "normal",
        busy_timeout: float = 10.0,
        read_only: bool = False,
    ):
        """Open (creating with ``create``, and migrating) the log at ``path``.

        ``read_only`` never writes, not even a migration or a pragma: a log of an older
        schema is read as it is, and a log in a directory that is not writable can be read.
        """
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if not p.exists() and not create:
                raise SchemaError(f"no agentlog database at {self.path}")
            if p.is_dir():
                raise SchemaError(f"{self.path} is a directory, not a database file")
            if create:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot make the directory of {self.path}: {exc.strerror}") from None
        self._lock = threading.RLock()
        self._queued: list[_Append] = []  # appends waiting for a group commit
        self._group = threading.Lock()  # guards the queue and the leader flag
        self._leading = False
        self._pack_cache = PackCache()
        with translate_errors(self.path):
            if read_only and self.path != ":memory:":
                self._db = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=busy_timeout,
                                           isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(
                    self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
            self._blobs = Unpacker(BlobReader(self._db, self._pack_cache))
            self._shares: dict[str, bool] = {}  # run id -> shares a prefix (fixed once it has events)
            self._before_shares = False  # a read-only open of a log older than the shares table
            try:
                if read_only:
                    found = self._inspect()
                    if found == 0:
                        raise SchemaError(f"{self.path} is not an agentlog database (it holds no log)")
                    self._before_shares = found < schema.SHARES_VERSION
                else:
                    self._open(durability, busy_timeout)
            except BaseException:
                self._db.close()
                raise

    def _execute_waiting(self, sql: str, timeout: float) -> None:
        """Execute ``sql``, retrying while the database is busy, up to ``timeout`` seconds.

        Switching a new file to WAL while another connection writes it fails at once with
        SQLITE_BUSY (SQLite skips its busy handler there to avoid a deadlock).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _open(self, durability: str, busy_timeout: float) -> None:
        found = self._inspect()  # refuses another application's file before any pragma changes it
        for pragma in schema.PRAGMAS:
            self._execute_waiting(pragma, busy_timeout)
        self._db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
        if found < schema.SCHEMA_VERSION:
            self._migrate()

    def _inspect(self) -> int:
        """The schema version of this agentlog database, read in one snapshot (see ``check_identity``)."""
        self._db.execute("BEGIN")
        try:
            identity = self._db.execute(schema.IDENTITY).fetchone()
            columns = self._db.execute(schema.TABLE_COLUMNS).fetchall()
        finally:
            self._db.execute("COMMIT")
        return check_identity(self.path, identity, columns)

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another opener may have migrated meanwhile.
            found = check_identity(self.path, self._db.execute(schema.IDENTITY).fetchone(),
                                   self._db.execute(schema.TABLE_COLUMNS).fetchall())
            for number, (_name, sql) in enumerate(schema.MIGRATIONS[found:], start=found + 1):
                for statement in _statements(sql):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute("COMMIT")
        except BaseException:
            _rollback(self._db)
            raise

    # --- writing -----------------------------------------------------------------

    def append(self, run_id: str, events: Sequence[Event], expected_seq: int, *, lease: Lease | None = None) -> int:
        """Append ``events`` after event ``expected_seq`` of the run; return the new last seq.

        Raises ``ConcurrencyError`` if the stream is not at ``expected_seq``, and, given the
        ``lease`` the writer drives the run under, ``LeaseLost`` if the run's lease is no
        longer that one (checked in the same transaction). Returns once the batch is
        committed, possibly in one transaction with other threads' batches.
        """
        if not events:
            return expected_seq
        mine = _Append(run_id, events, expected_seq, lease)
        with self._group:
            self._queued.append(mine)
            leading = not self._leading
            self._leading = True
        # While a leader commits, batches queue up; it then wakes their writers and hands
        # the lead to the first batch queued meanwhile, which commits them all.
        if not leading:
            mine.wake.wait()
        if not mine.done:
            with self._group:
                group, self._queued = self._queued, []
            try:
                with self._lock:
                    self._commit_group(group, mine)
            finally:
                with self._group:
                    successor = self._queued[0] if self._queued else None
                    self._leading = successor is not None
                for item in group:
                    if item.done and item is not mine:
                        item.wake.set()
                if successor is not None:
                    successor.wake.set()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def append_all(self, batches: Sequence[tuple[str, Sequence[Event], int]]) -> list[int]:
        """Append ``(run_id, events, expected_seq)`` batches of different runs in one transaction:
        all of them, or none (the first batch's error is raised, e.g. ``ConcurrencyError``).

        Returns each run's new last seq, in the order given.
        """
        items = [_Append(run_id, events, expected_seq) for run_id, events, expected_seq in batches]
        if len({item.run_id for item in items}) != len(items):
            raise ValueError("append_all takes one batch per run")
        items = [item for item in items if item.events]
        with self._lock, translate_errors(self.path):
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._apply_group(db, items, time.time())
                failed = next((item.error for item in items if item.error is not None), None)
                if failed is not None:
                    raise failed
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        results = {item.run_id: item.result for item in items}
        return [results.get(run_id, expected_seq) for run_id, _events, expected_seq in batches]

    def _commit_group(self, group: list["_Append"], leader: "_Append") -> None:
        db = self._db
        try:
            with translate_errors(self.path):
                db.execute("BEGIN IMMEDIATE")
                try:
                    now = time.time()
                    fenced = self._fence(db, group)
                    try:
                        self._apply_group(db, fenced, now)
                    except sqlite3.IntegrityError:  # not foreseen by the checks: find whose it is
                        db.execute("ROLLBACK")
                        db.execute("BEGIN IMMEDIATE")
                        for item in fenced:
                            self._apply(db, item, now, fenced)
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
        except Exception as exc:  # the whole transaction failed: every writer in it hears so
            for item in group:
                item.result, item.error = 0, exc if item is leader else _copy_error(exc)
        except BaseException:  # interrupted: the others' batches go back in the queue
            with self._group:
                self._queued[:0] = [item for item in group if item is not leader]
            raise
        for item in group:
            item.done = True

    @staticmethod
    def _fence(db: sqlite3.Connection, group: list["_Append"]) -> list["_Append"]:
        """The batches whose writer still holds the lease it appends under (or needs none);
        the others get ``LeaseLost``. One step of the append transaction, before the batches."""
        passed = []
        for item in group:
            if item.lease is not None:
                run_id, token = item.lease.run_id, item.lease.token
                if not _lease.holds(token, db.execute(schema.LEASE_TOKEN, (run_id,)).fetchone()):
                    row = db.execute(schema.SELECT_LEASE, (run_id,)).fetchone()
                    item.result, item.error = 0, _lease.lost(run_id, token, row)
                    continue
            passed.append(item)
        return passed

    def _apply_group(self, db: sqlite3.Connection, group: list["_Append"], now: float) -> None:
        """Every batch of the group, checked in order as if appended one after another."""
        if len(group) == 1:
            run_id = group[0].run_id
            last = {run_id: db.execute(schema.LAST_SEQ, (run_id,)).fetchone()[0]}
            found = db.execute(schema.SELECT_RUN, (run_id,)).fetchall()
        else:
            ids = json.dumps(list(dict.fromkeys(item.run_id for item in group)))
            last = dict(db.execute(LAST_SEQS, (ids,)).fetchall())
            found = db.execute(SELECT_RUNS, (ids,)).fetchall()
        summaries = {row[0]: RunSummary.from_row(row) for row in found}
        rows: list[tuple] = []
        shares: list[tuple] = []
        queue: list[tuple[str, tuple]] = []
        touched: dict[str, None] = {}
        writer = BlobWriter(db)
        for item in group:
            run_id, expected_seq = item.run_id, item.expected_seq
            item.error = None
            if last[run_id] != expected_seq:
                item.error = ConcurrencyError(run_id, expected_seq, last[run_id])
                continue
            try:
                share = self._share(db, item, group, now)
                batch, summary = encode_batch(run_id, item.events, expected_seq, now, summaries.get(run_id),
                                              writer.put, share[2] if share else 0)
            except sqlite3.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - an event that does not encode: this writer's error
                item.error = exc
                continue
            rows += batch
            queue += queue_writes(run_id, item.events, now)
            if share:
                shares.append(share)
            summaries[run_id] = summary
            touched[run_id] = None
            last[run_id] = item.result = expected_seq + len(item.events)
        writer.finish()
        if rows:
            db.executemany(schema.INSERT_EVENT, rows)
            db.executemany(schema.INSERT_SHARE, shares)
            db.executemany(UPSERT_RUN, [summaries[run_id].as_row() for run_id in touched])
            for sql, params in queue:
                db.execute(sql, params)

    def _share(
        self, db: sqlite3.Connection, item: "_Append", group: list["_Append"], now: float
    ) -> tuple[str, str, int, float] | None:
        """``(run, parent, n, now)`` when a new run's first ``n`` events are its parent's first
        ``n``, as a fork's are: then they are shared, not copied (a row, not n rows)."""
        point = fork_point(item.events, item.expected_seq)
        if point is None:
            return None
        parent, n = point
        # Not from a parent written in this same transaction: what is read here is cached
        # by blob id, so it must be committed already.
        if any(other.run_id == parent for other in group):
            return None
        if db.execute(schema.LAST_SEQ, (parent,)).fetchone()[0] < n:
            return None
        if [s.event for s in self._read_rows(db, parent, 0, n)] != list(item.events[:n]):
            return None
        return item.run_id, parent, n, now

    def _apply(self, db: sqlite3.Connection, item: "_Append", now: float, group: list["_Append"]) -> None:
        """One writer's batch inside the group's transaction; its failure is its own."""
        run_id, expected_seq = item.run_id, item.expected_seq
        item.error = None  # a batch put back after an interrupted group is tried afresh
        db.execute("SAVEPOINT append")
        try:
            actual = db.execute(schema.LAST_SEQ, (run_id,)).fetchone()[0]
            if actual != expected_seq:
                raise ConcurrencyError(run_id, expected_seq, actual)
            current = db.execute(schema.SELECT_RUN, (run_id,)).fetchone()
            share = self._share(db, item, group, now)
            writer = BlobWriter(db)
            rows, summary = encode_batch(
                run_id, item.events, expected_seq, now, RunSummary.from_row(current) if current else None,
                writer.put, share[2] if share else 0,
            )
            writer.finish()
            db.executemany(schema.INSERT_EVENT, rows)
            if share:
                db.execute(schema.INSERT_SHARE, share)
            db.execute(UPSERT_RUN, summary.as_row())
            for sql, params in queue_writes(run_id, item.events, now):
                db.execute(sql, params)
        except sqlite3.IntegrityError as exc:  # the key (run_id, seq) was taken: stale writer
            db.execute("ROLLBACK TO append")
            db.execute("RELEASE append")
            item.error = ConcurrencyError(run_id, expected_seq, -1)
            item.error.__cause__ = exc
            return
        except sqlite3.Error:
            raise  # the database itself failed: the whole group does
        except Exception as exc:  # noqa: BLE001 - stale seq, an event that does not encode: this writer's
            db.execute("ROLLBACK TO append")
            db.execute("RELEASE append")
            item.error = exc
            return
        db.execute("RELEASE append")
        item.result = expected_seq + len(item.events)

    # --- leases ------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float, *, take_over: int | None = None) -> Lease:
        """Make ``owner`` the run's driver for ``ttl`` seconds; return its lease (a new token).

        Raises ``LeaseHeld`` naming the holder while another owner's lease is live, unless
        ``take_over`` is that lease's token (the caller judged its holder dead).
        """
        with self._lock, translate_errors(self.path), self._write() as db:
            now = time.time()
            row = db.execute(schema.SELECT_LEASE, (run_id,)).fetchone()
            lease = _lease.claim(run_id, owner, ttl, take_over, row, now)
            db.execute(schema.CLAIM_LEASE, (run_id, owner, lease.token, lease.expires_at, now))
        return lease

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """The same lease, ``ttl`` seconds from now; ``LeaseLost`` if it was taken over or released."""
        expires_at = time.time() + _lease.check_ttl(ttl)
        with self._lock, translate_errors(self.path), self._write() as db:
            if db.execute(schema.RENEW_LEASE, (expires_at, lease.run_id, lease.token)).rowcount != 1:
                row = db.execute(schema.SELECT_LEASE, (lease.run_id,)).fetchone()
                current = _lease.holder(lease.run_id, row)
                raise LeaseLost(lease.run_id, lease.token, current.owner if current else None)
        return Lease(lease.run_id, lease.owner, lease.token, expires_at)

    def release_lease(self, lease: Lease) -> None:
        """Give the run up (a no-op if the lease was already taken over)."""
        with self._lock, translate_errors(self.path), self._write() as db:
            db.execute(schema.RELEASE_LEASE, (lease.run_id, lease.token))

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease holder, live or expired; ``None`` if nobody holds it."""
        rows = self._fetch(schema.SELECT_LEASE, (run_id,))
        return _lease.holder(run_id, rows[0] if rows else None)

    # --- the run queue -----------------------------------------------------------

    def claim_run(self, owner: str, ttl: float) -> Lease | None:
        """Take the oldest queued run nobody drives (never claimed, released, or its lease
        expired) and its lease for ``owner``, in one transaction; ``None`` if there is none.

        Workers in other processes claiming at once each get a different run: the pick and
        the lease commit under SQLite's write lock (an immediate transaction).
        """
        ttl = _lease.check_ttl(ttl)
        if not self._fetch(schema.CLAIMABLE, (time.time(),)):  # idle polls stay off the write lock
            return None
        with self._lock, translate_errors(self.path), self._write() as db:
            now = time.time()
            row = db.execute(schema.CLAIMABLE, (now,)).fetchone()
            if row is None:
                return None
            run_id, token = row
            lease = Lease(run_id, owner, (token or 0) + 1, now + ttl)
            db.execute(schema.CLAIM_LEASE, (run_id, owner, lease.token, lease.expires_at, now))
        return lease

    def queued_runs(self) -> list[str]:
        """Runs in the queue (waiting for a worker, or driven by one), oldest first."""
        return [r[0] for r in self._fetch(schema.QUEUED_RUNS, ())]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def rebuild_index(self) -> int:
        """Recompute the runs index from the events alone; return how many runs it holds."""
        with self._lock, translate_errors(self.path):
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM runs")
                db.execute("DELETE FROM queue")
                rows: dict[str, RunSummary] = {}
                # Run by run, each with the prefix it shares with its parent.
                for (run_id,) in db.execute("SELECT DISTINCT run_id FROM events ORDER BY run_id").fetchall():
                    stored = self._read_rows(db, run_id, 0, 2**62)
                    for s in stored:
                        rows[run_id] = index.apply(rows.get(run_id), run_id, s.seq, s.recorded_at, s.event)
                    for sql, params in queue_writes(run_id, [s.event for s in stored], rows[run_id].created_at):
                        db.execute(sql, params)
                db.executemany(schema.UPSERT_RUN, [r.as_row() for r in rows.values()])
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return len(rows)

    def vacuum(self, *, dry_run: bool = False) -> "VacuumReport":
        """Drop the packs of text no event refers to (then compact the file); ``dry_run`` only counts them.

        Runs in one write transaction, so no append can refer to a blob while it goes.
        A row whose references cannot be read stops it: dropping blindly could lose text.
        """
        with self._lock, translate_errors(self.path):
            db = self._db
            before = _file_size(self.path)
            db.execute("BEGIN IMMEDIATE")
            try:
                referenced: set[int] = set()
                for run_id, seq, data in db.execute(schema.PACKED_ROWS):
                    try:
                        referenced.update(p for reference in blob_refs(data) for p in packs_of(reference))
                    except Exception as exc:  # noqa: BLE001 - any decoding failure of a damaged row
                        raise StoreError(f"{self.path}: run {run_id} event {seq} cannot be read ({exc}); "
                                         "nothing was dropped") from exc
                sizes = [(pack, size, chunks) for pack, size, chunks in db.execute(schema.PACK_SIZES)
                         if pack not in referenced]
                for pack, _size, _chunks in sizes:
                    db.execute("DELETE FROM blobs WHERE pack = ?", (pack,))
                    db.execute("DELETE FROM packs WHERE id = ?", (pack,))
                db.execute("ROLLBACK" if dry_run else "COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if sizes and not dry_run:
                db.execute("VACUUM")
            return VacuumReport(len(sizes), sum(n for _, _, n in sizes), sum(size for _, size, _ in sizes),
                                before, _file_size(self.path))

    # --- reading -----------------------------------------------------------------

    # --- answers being streamed (beside the log, not in it) ----------------------------

    def put_partial(self, partial: PartialAnswer) -> None:
        """Record (replace) what a call's streamed answer holds so far."""
        with self._lock, translate_errors(self.path):
            self._db.execute(schema.UPSERT_PARTIAL, partial.as_row())

    def clear_partial(self, run_id: str, call_id: str) -> None:
        with self._lock, translate_errors(self.path):
            self._db.execute(schema.DELETE_PARTIAL, (run_id, call_id))

    def partials(self, run_id: str) -> list[PartialAnswer]:
        return [PartialAnswer.from_row(r) for r in self._fetch(schema.SELECT_PARTIALS, (run_id,))]

    def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with self._lock, translate_errors(self.path):
            return self._db.execute(sql, params).fetchall()

    def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        """The run's events with ``after < seq <= upto``, in order."""
        with self._lock, translate_errors(self.path):
            return self._read_rows(self._db, run_id, after, upto if upto is not None else 2**62)

    def _read_rows(self, db: sqlite3.Connection, run_id: str, after: int, upto: int) -> list[StoredEvent]:
        shares = self._shares.get(run_id)
        if shares is None:
            shares = not self._before_shares and db.execute(schema.SELECT_SHARE, (run_id,)).fetchone() is not None
        sql = schema.SELECT_SHARED_EVENTS if shares else schema.SELECT_EVENTS
        blobs = self._blobs
        # Decoded row by row: holding every raw row too would double the live objects,
        # and the collector's passes over them made long streams read superlinearly.
        events = [StoredEvent.from_row(r, blobs) for r in db.execute(sql, (run_id, after, upto))]
        if events and not db.in_transaction:  # a share row is written with a run's first events
            self._shares[run_id] = shares
        return events

    def events(self, run_id: str, after: int = 0, upto: int | None = None) -> list[Event]:
        return [s.event for s in self.read(run_id, after, upto)]

    def last_seq(self, run_id: str) -> int:
        return self._fetch(schema.LAST_SEQ, (run_id,))[0][0]

    def get_run(self, run_id: str) -> RunSummary:
        rows = self._fetch(schema.SELECT_RUN, (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return RunSummary.from_row(rows[0])

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix of it (as git does with commits)."""
        return pick_run_id(prefix, self._fetch(schema.RUN_IDS_BY_PREFIX, prefix_bounds(prefix)))

    def list_runs(
        self, *, status: str | None = None, text: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[RunSummary]:
        sql, params = schema.list_runs_query(status=status, text=text, limit=limit, offset=offset)
        return [RunSummary.from_row(r) for r in self._fetch(sql, params)]

    def count_runs(self, *, status: str | None = None, text: str | None = None) -> int:
        sql, params = schema.count_runs_query(status=status, text=text)
        return self._fetch(sql, params)[0][0]

    def lineage(self, run_id: str) -> list[str]:
        """The run, its parent, its parent's parent, ...: where recorded answers may be reused."""
        return lineage_of(self._fetch(schema.LINEAGE, (run_id,)))

    def children(self, run_id: str) -> list[RunSummary]:
        """Runs forked from, or re-reviewing, this one; oldest first."""
        return [RunSummary.from_row(r) for r in self._fetch(schema.CHILDREN, (run_id,))]

    def find_answers(self, request_hash: str) -> list[StoredEvent]:
        """Every recorded answer to a request with this hash, in any run."""
        with self._lock, translate_errors(self.path):
            rows = self._db.execute(schema.ANSWERS_BY_HASH, (request_hash,)).fetchall()
            return [StoredEvent.from_row(r, self._blobs) for r in rows]

    def events_of_type(self, type_name: str) -> list[StoredEvent]:
        """Every stored event of type ``type_name``, in any run, oldest first."""
        with self._lock, translate_errors(self.path):
            rows = self._db.execute(schema.EVENTS_OF_TYPE, (type_name,)).fetchall()
            return [StoredEvent.from_row(r, self._blobs) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VacuumReport(NamedTuple):
    packs: int  # packs of text no event refers to (dropped unless a dry run)
    chunks: int  # the chunks they hold
    pack_bytes: int  # their stored size: what the file frees
    file_before: int  # the database file's size, bytes
    file_after: int


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # ":memory:"
        return 0


class _Append:
    """One writer's batch, waiting in the queue for a group commit."""

    __slots__ = ("run_id", "events", "expected_seq", "lease", "result", "error", "done", "wake")

    def __init__(self, run_id: str, events: Sequence[Event], expected_seq: int, lease: Lease | None = None):
        self.run_id, self.events, self.expected_seq, self.lease = run_id, events, expected_seq, lease
        self.result = expected_seq
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when this batch's writer must lead


def _copy_error(exc: Exception) -> Exception:
    """The same error for another waiting thread (one exception object is raised once)."""
    try:
        clone = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt from its args
        clone = StoreError(str(exc))
    clone.__cause__ = exc
    return clone


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, unless SQLite already has (it does on a full disk)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
