"""The store's logic over any SQL database: what SQLite and Postgres share.

A subclass brings a connection (``sqlite3``'s ``execute`` / ``executemany`` /
``in_transaction``, which the Postgres store's connection offers too), the one place
its driver's errors become the store's own, and the few statements its dialect writes
differently. Everything else, the SQL included, is written once here and in ``schema``.

One connection, guarded by a lock, so actor threads can share a store. Every write is
one transaction: the batch, the lease check, the concurrency check and the runs-index
row commit together or not at all.

Appends from many threads are group-committed: while one thread commits, the others
queue their batches, and the next thread to commit takes every queued batch into one
transaction, checked in queue order as if appended one after another. A stale batch is
left out and its writer alone gets the ``ConcurrencyError``; every writer returns only
after the transaction holding its batch has committed.

A run this store appended to last is not read again before its next append: the store
keeps the run's last seq and index row as its commit left them (``_known``). Should another
writer have appended since, the batch's first ``(run_id, seq)`` is taken, the insert fails
on that key, and the group is checked again by reading (so a stale writer still fails).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, Self

from agentlog.events import Event, blob_refs
from agentlog.events.packed import Put, Texts
from agentlog.events.rows import Reader

from . import _lease, index, schema
from ._batch import answers_to, encode_batch, fork_point, lineage_of, pick_run_id, prefix_bounds, queue_writes
from .blobs import BlobReader, BlobWriter, BytesMemo, Location, PackCache, TextMemo, packs_of
from .errors import ConcurrencyError, LeaseHeld, LeaseLost, RunNotFound, StoreError
from .records import Lease, PartialAnswer, RunSummary, StoredEvent


KNOWN_RUNS = 4096  # runs whose index row a store keeps after appending to them (see _heads)
KNOWN_CHUNKS = 1 << 14  # chunks whose location a store keeps after committing events that refer to them
KNOWN_TEXT_BYTES = 4 << 20  # values (their bytes) whose reference a store keeps likewise (TextMemo)
KNOWN_CHUNK_BYTES = 4 << 20  # chunks (their bytes) whose location a store keeps, not to hash them again
_ENDED = ("finished", "failed")


class SQLStore:
    """Append-only event streams, one per run, in an SQL database (see the subclasses)."""

    # The dialect: set by each subclass.
    BEGIN_WRITE = "BEGIN"  # starts a write transaction
    BEGIN_MAINTENANCE = "BEGIN"  # starts a transaction no append may run beside (vacuum, rebuild_index)
    CONFLICT: tuple[type[BaseException], ...] = ()  # a writer raced another: (run_id, seq) taken, or deadlock
    KEY_TAKEN: tuple[type[BaseException], ...] = ()  # of those, only the key taken: the writer is stale
    DB_ERROR: tuple[type[BaseException], ...] = ()  # any error of the driver
    LIKE = "LIKE"  # case-insensitive LIKE
    LAST_SEQS = schema.last_seqs(schema.JSON_IDS)
    SELECT_RUNS = schema.runs_in(schema.JSON_IDS)
    RUN_IDS_BY_PREFIX = schema.RUN_IDS_BY_PREFIX
    LEASE_TOKEN = schema.LEASE_TOKEN  # the fence: must keep a takeover out until the append commits
    SELECT_LEASE_TO_CLAIM = schema.SELECT_LEASE  # must keep other claimants out until the claim commits
    CLAIMABLE_TO_CLAIM = schema.CLAIMABLE  # must keep other workers off the queued run it picks
    PACKED_ROWS = schema.PACKED_ROWS
    # The write transaction excludes every other writer until it ends (SQLite's BEGIN
    # IMMEDIATE), so a check holds wherever it comes in it: a run's lease is checked by the
    # statement that updates its index row, and a new run's lease claimed by inserting it. A
    # run never seen is taken to be new (its first event and its index row are inserted, and
    # either key is taken if it is not). Postgres writers of different runs do not exclude
    # each other: there the lease row is read locked, first.
    ONE_WRITER = False

    _db: Any
    where: str  # the log, as messages name it (never with a password)

    def _start(self) -> None:
        """Set up what every store keeps beside its connection (call once ``_db`` is open)."""
        self._lock = threading.RLock()
        self._queued: list[_Append] = []  # appends waiting for a group commit
        self._group = threading.Lock()  # guards the queue and the leader flag
        self._leading = False
        self._pack_cache = PackCache()
        self._blobs = Reader(BlobReader(self._db, self._pack_cache), self._pack_cache.items)
        self._shares: dict[str, bool] = {}  # run id -> shares a prefix (fixed once it has events)
        self._known: dict[str, RunSummary] = {}  # run id -> its index row after this store's last commit to it
        self._chunks: dict[bytes, Location] = {}  # chunks committed events refer to (see BlobWriter)
        # Values and chunks committed events refer to, by their bytes (see TextMemo, BlobWriter),
        # on SQLite (ONE_WRITER) only.
        self._texts = BytesMemo(KNOWN_TEXT_BYTES)
        self._chunk_bytes = BytesMemo(KNOWN_CHUNK_BYTES)
        self._before_shares = False  # a read-only open of a log older than the shares table

    def _errors(self) -> AbstractContextManager[None]:
        """The one place where the driver's errors become the store's own."""
        raise NotImplementedError

    def _notify(self, db: Any, last: dict[str, int]) -> None:
        """Inside an append's transaction, after its rows: tell listeners (``last``: run -> last seq)."""

    def _size(self) -> int:
        """The log's size on disk, bytes (what ``vacuum`` reports)."""
        return 0

    def _compact(self) -> None:
        """After ``vacuum`` dropped packs: give the space back, where the database can."""

    # --- writing -----------------------------------------------------------------

    def append(self, run_id: str, events: Sequence[Event], expected_seq: int, *, lease: Lease | None = None,
               release: bool = False) -> int:
        """Append ``events`` after event ``expected_seq`` of the run; return the new last seq.

        Raises ``ConcurrencyError`` if the stream is not at ``expected_seq``, and, given the
        ``lease`` the writer drives the run under, ``LeaseLost`` if the run's lease is no
        longer that one (checked in the same transaction); with ``release``, the lease is
        given up in that transaction too (the writer's last append). Returns once the batch
        is committed, possibly in one transaction with other threads' batches.
        """
        if not events:
            if release and lease is not None:
                self.release_lease(lease)
            return expected_seq
        if release and lease is None:
            raise ValueError("release=True gives up the lease the batch is appended under: pass lease")
        mine = _Append(run_id, events, expected_seq, lease, release=release)
        self._submit(mine)
        return mine.result

    def _submit(self, mine: "_Append") -> None:
        """Queue a batch for the next group commit and return once it is committed (or raise its error)."""
        with self._group:
            if self._leading:  # another writer leads: wait in the queue (a writer that waits needs waking)
                mine.wake = threading.Event()
                self._queued.append(mine)
            else:  # nobody leads, so nobody is queued: this batch is the group
                self._leading = True
        # While a leader commits, batches queue up; it then wakes their writers and hands
        # the lead to the first batch queued meanwhile, which commits them all.
        if mine.wake is not None:
            mine.wake.wait()
            if not mine.done:
                with self._group:
                    group, self._queued = self._queued, []
        else:
            group = [mine]
        if not mine.done:
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

    def append_all(self, batches: Sequence[tuple[str, Sequence[Event], int]]) -> list[int]:
        """Append ``(run_id, events, expected_seq)`` batches of different runs in one transaction:
        all of them, or none (the first batch's error is raised, e.g. ``ConcurrencyError``).

        Returns each run's new last seq, in the order given.
        """
        items = [_Append(run_id, events, expected_seq) for run_id, events, expected_seq in batches]
        if len({item.run_id for item in items}) != len(items):
            raise ValueError("append_all takes one batch per run")
        items = [item for item in items if item.events]
        with self._lock, self._errors():
            db = self._db
            db.execute(self.BEGIN_WRITE)
            try:
                writer = self._apply_checked(db, items, time.time())
                failed = next((item.error for item in items if item.error is not None), None)
                if failed is not None:
                    raise failed
                self._notify(db, {item.run_id: item.result for item in items})
                db.execute("COMMIT")
            except BaseException:
                self._forget(items)
                _rollback(db)
                raise
            self._remember(items, writer)
        results = {item.run_id: item.result for item in items}
        return [results.get(run_id, expected_seq) for run_id, _events, expected_seq in batches]

    def append_recorded(self, run_id: str, stored: Sequence[StoredEvent], expected_seq: int) -> int:
        """Append events recorded in another log, each keeping its ``recorded_at`` (what
        ``agentlog copy`` writes); checked and committed as one ``append``. A fork copied
        after its parent shares the parent's prefix again."""
        if not stored:
            return expected_seq
        item = _Append(run_id, [s.event for s in stored], expected_seq, times=[s.recorded_at for s in stored])
        with self._lock, self._errors():
            db = self._db
            db.execute(self.BEGIN_WRITE)
            try:
                writer = self._apply_checked(db, [item], time.time())
                if item.error is not None:
                    raise item.error
                self._notify(db, {run_id: item.result})
                db.execute("COMMIT")
            except BaseException:
                self._forget([item])
                _rollback(db)
                raise
            self._remember([item], writer)
        return item.result

    def _apply_checked(self, db: Any, items: list["_Append"], now: float) -> BlobWriter | None:
        """``_apply_group`` inside the write transaction the caller began. A run whose head this
        store knew (``_heads``) may have been appended to by another writer since: the batch's
        first ``(run_id, seq)`` is then taken and its insert fails on the key. Then the heads
        are forgotten and the batches checked again, read afresh, in a new transaction: a stale
        batch gets its ``ConcurrencyError`` (as ``_write_group`` does), not the key's error."""
        tries = 3  # a conflict of heads just read (a Postgres deadlock, a race) is tried again too
        new = True
        while True:
            try:
                return self._apply_group(db, items, now, new=new)
            except self.CONFLICT:
                new = False
                tries -= 1
                if not tries:
                    raise
                self._forget(items)
                db.execute("ROLLBACK")
                db.execute(self.BEGIN_WRITE)

    def _commit_group(self, group: list["_Append"], leader: "_Append", *, queued: bool = True) -> None:
        """``queued``: the group came from the queue of writers, whose batches go back in it
        if this thread is interrupted (not so a caller's own batches, ``append_each``'s: they
        fail with the interruption, and no leader later commits them behind its back)."""
        try:
            with self._errors():
                self._write_group(self._db, group)
        except Exception as exc:  # the whole transaction failed: every writer in it hears so
            for item in group:
                item.result, item.error = 0, exc if item is leader else _copy_error(exc)
        except BaseException:  # interrupted: the others' batches go back in the queue
            if queued:
                with self._group:
                    self._queued[:0] = [item for item in group if item is not leader]
            raise
        for item in group:
            item.done = True

    def _write_group(self, db: Any, group: list["_Append"]) -> None:
        """The group's batches in one transaction, committed: each writer's result or error
        set (a stale or fenced-out batch is left out); raises if the transaction itself fails."""
        db.execute(self.BEGIN_WRITE)
        try:
            now = time.time()
            fenced, later = self._fence(db, group, now, self.ONE_WRITER)
            texts = TextMemo(self._texts) if self.ONE_WRITER else None
            try:
                writer = self._apply_group(db, fenced, now, later, texts=texts)
            except (*self.CONFLICT, _Unfenced):  # not foreseen by the checks: find whose it is
                # A run known here was appended to by another writer, a run taken to be new
                # was not, or a lease checked with the index row is gone: batch by batch,
                # each run read and each lease fenced first.
                self._forget(fenced)
                writer = None
                db.execute("ROLLBACK")
                db.execute(self.BEGIN_WRITE)
                fenced = self._fence(db, fenced, now)[0]
                for item in fenced:
                    self._apply(db, item, now, fenced)
            for item in fenced:
                if item.claim is not None:
                    claimed = item.claimed
                    if item.error is None and not item.claim_written:
                        db.execute(schema.CLAIM_LEASE, (claimed.run_id, claimed.owner, claimed.token,
                                                        claimed.expires_at, now))
                    elif item.error is not None and item.claim_written:  # as a refused claim leaves it
                        db.execute(schema.UNCLAIM_NEW_LEASE, (claimed.run_id, claimed.token))
                if item.error is None and item.release:
                    db.execute(schema.RELEASE_LEASE, (item.lease.run_id, item.lease.token))
            self._notify(db, {item.run_id: item.result for item in fenced if item.error is None})
            db.execute("COMMIT")
        except BaseException:
            self._forget(group)
            _rollback(db)
            raise
        self._remember(fenced, writer, texts.fresh if texts is not None else None)

    def _remember(self, items: Sequence["_Append"], located: dict[bytes, Location] | BlobWriter | None,
                  texts: dict[bytes, list] | None = None) -> None:
        """After a commit: each run's index row as the committed batches left it (in order,
        so a run's last batch counts; a run that ended is forgotten: it is rarely appended to
        again), and where the chunks its events refer to are (by hash; by their bytes too from
        the transaction's ``BlobWriter``), and the values, by their bytes (``texts``, kept only
        with ``located``: None when a batch failed to encode)."""
        if type(located) is BlobWriter:
            if self.ONE_WRITER:
                self._chunk_bytes.add(located.chunks)
            located = located.located
        if located is not None:
            if located:
                if len(self._chunks) + len(located) > KNOWN_CHUNKS:
                    self._chunks.clear()
                self._chunks.update(located)
            if texts:  # even when every chunk was known by its bytes (none located by hash)
                self._texts.add(texts)
        known = self._known
        for item in items:
            if item.error is None and item.summary is not None:
                known.pop(item.run_id, None)
                if item.summary.status not in _ENDED:
                    known[item.run_id] = item.summary
        while len(known) > KNOWN_RUNS:
            del known[next(iter(known))]  # the run appended to longest ago

    def _forget(self, items: Sequence["_Append"]) -> None:
        for item in items:
            self._known.pop(item.run_id, None)

    def _fence(self, db: Any, group: list["_Append"], now: float,
               fold: bool = False) -> tuple[list["_Append"], dict[str, int]]:
        """The batches whose writer still holds the lease it appends under (or needs none);
        the others get ``LeaseLost``. A batch that claims its run's lease (a new run's first
        events) may, or gets ``LeaseHeld``; the claim is written with the batch. One step of
        the append transaction, before the batches.

        With ``fold`` (``ONE_WRITER``), a run's lease that is the only one of its run in the
        group is not read here when the store knows the run at the seq the batch expects: it
        is returned (run -> token) to be checked by the update of the run's index row
        (``_write_run``), and a new run's lease is claimed by inserting it."""
        passed = []
        later: dict[str, int] = {}
        if fold:
            single = len(group) == 1 or len({item.run_id for item in group}) == len(group)
        for item in group:
            item.claim_written = False
            if item.claim is not None:
                owner, ttl, take_over = item.claim
                if fold and single:
                    claimed = Lease(item.run_id, owner, 1, now + ttl)  # the first lease of a run never leased
                    if db.execute(schema.CLAIM_NEW_LEASE, (item.run_id, owner, claimed.token, claimed.expires_at,
                                                           now)).rowcount == 1:
                        item.claimed, item.claim_written = claimed, True
                        passed.append(item)
                        continue
                db.execute(schema.ENSURE_LEASE, (item.run_id,))
                row = db.execute(self.SELECT_LEASE_TO_CLAIM, (item.run_id,)).fetchone()
                try:
                    item.claimed = _lease.claim(item.run_id, owner, ttl, take_over, row, now)
                except LeaseHeld as exc:
                    item.result, item.error = 0, exc
                    continue
            elif item.lease is not None:
                run_id, token = item.lease.run_id, item.lease.token
                if fold and single and run_id == item.run_id and (known := self._known.get(run_id)) is not None \
                        and known.last_seq == item.expected_seq:
                    later[run_id] = token
                    passed.append(item)
                    continue
                if not _lease.holds(token, db.execute(self.LEASE_TOKEN, (run_id,)).fetchone()):
                    row = db.execute(schema.SELECT_LEASE, (run_id,)).fetchone()
                    item.result, item.error = 0, _lease.lost(run_id, token, row)
                    continue
            passed.append(item)
        return passed, later

    def _apply_group(self, db: Any, group: list["_Append"], now: float, fences: dict[str, int] | None = None,
                     new: bool = True, texts: TextMemo | None = None) -> BlobWriter | None:
        """Every batch of the group, checked in order as if appended one after another.
        ``fences``: leases to check with the runs' index rows (``_fence``); ``_Unfenced`` if
        one is gone. ``new``: runs never seen may be taken to be new (``_heads``). ``texts``:
        values stored before, by their bytes; it notes the group's (``TextMemo``).

        Returns the blob writer, which knows where the chunks the batches refer to are, unless
        a batch failed to encode (it may have stored chunks no event will refer to)."""
        last, before = self._heads(db, group, new)
        writer = BlobWriter(db, self._chunks, self._chunk_bytes if self.ONE_WRITER else None)
        writes = self._encode_group(db, group, now, last, before, writer.put, texts)
        writer.finish()
        if writes.rows:
            db.executemany(schema.INSERT_EVENT, writes.rows)
            if writes.shares:
                db.executemany(schema.INSERT_SHARE, writes.shares)
            for summary in writes.runs:
                self._write_run(db, summary, before.get(summary.run_id), fences.get(summary.run_id) if fences else None)
            for sql, params in writes.queue:
                db.execute(sql, params)
        return writer if writes.clean else None

    def _encode_group(
        self, db: Any, group: list["_Append"], now: float, last: dict[str, int], before: dict[str, RunSummary],
        put: Put, texts: Texts | None = None,
    ) -> "_Writes":
        """The group's rows, given each run's last seq and index row before it (``_heads``):
        checked in order as if appended one after another, a stale batch, or one that does
        not encode, left out with its writer's error. ``put`` stores the text's chunks."""
        summaries = dict(before)
        rows: list[tuple] = []
        shares: list[tuple] = []
        queue: list[tuple[str, tuple]] = []
        touched: dict[str, None] = {}
        clean = True
        for item in group:
            run_id, expected_seq = item.run_id, item.expected_seq
            item.error = None
            if last[run_id] != expected_seq:
                item.error = ConcurrencyError(run_id, expected_seq, last[run_id])
                continue
            try:
                share = self._share(db, item, group, now) if expected_seq == 0 else None  # only a new run shares
                batch, summary = encode_batch(run_id, item.events, expected_seq, now, summaries.get(run_id),
                                              put, share[2] if share else 0, item.times, texts)
            except self.DB_ERROR:
                raise
            except Exception as exc:  # noqa: BLE001 - an event that does not encode: this writer's error
                item.error, clean = exc, False
                continue
            rows += batch
            queue += queue_writes(run_id, item.events, item.at(now))
            if share:
                shares.append(share)
            summaries[run_id] = item.summary = summary
            touched[run_id] = None
            last[run_id] = item.result = expected_seq + len(item.events)
        # In key order, so that writers racing on the same runs (processes sharing a
        # Postgres log) take the keys' locks in one order and cannot deadlock.
        if len(touched) > 1:  # (one run's rows are in order)
            rows.sort(key=lambda row: (row[0], row[1]))
        return _Writes(rows, shares, [summaries[run_id] for run_id in sorted(touched)], queue, clean)

    def _heads(self, db: Any, group: list["_Append"], new: bool = False) -> tuple[dict[str, int], dict[str, RunSummary]]:
        """Each run's last seq and index row (where it has one) before the group's batches.

        A run whose row this store knows at the seq its first batch expects is not read:
        if another writer appended since, that batch's first ``(run_id, seq)`` is taken
        and its insert fails on the key (then ``_commit_group`` checks again by reading).
        With ``new`` and ``ONE_WRITER``, neither is a run whose first batch expects it to be
        empty: its index row is then inserted (``_write_run``), and fails on the key if the
        run has events (every run with events has its index row).
        """
        new = new and self.ONE_WRITER
        expected: dict[str, int] = {}
        for item in group:
            expected.setdefault(item.run_id, item.expected_seq)
        last: dict[str, int] = {}
        found: dict[str, RunSummary] = {}
        unknown = []
        for run_id, seq in expected.items():
            known = self._known.get(run_id)
            if known is not None and known.last_seq == seq:
                last[run_id], found[run_id] = seq, known
            elif new and seq == 0 and known is None:
                last[run_id] = 0
            else:
                unknown.append(run_id)
        if len(unknown) == 1:
            run_id = unknown[0]
            last[run_id] = db.execute(schema.LAST_SEQ, (run_id,)).fetchone()[0]
            rows = db.execute(schema.SELECT_RUN, (run_id,)).fetchall()
        elif unknown:
            ids = json.dumps(unknown)
            last.update(db.execute(self.LAST_SEQS, (ids,)).fetchall())
            rows = db.execute(self.SELECT_RUNS, (ids,)).fetchall()
        else:
            rows = []
        for row in rows:
            found[row[0]] = RunSummary.from_row(row)
        return last, found

    def _write_run(self, db: Any, row: RunSummary, before: RunSummary | None, lease: int | None = None) -> None:
        """The run's index row, updated in place. Only the columns no index holds are set when
        its indexed ones stay (most appends): the runs table's indexes are then not rewritten.
        ``lease``: the token of the lease the run's batch is appended under, checked here
        (``_fence``): ``_Unfenced`` if it is gone. A run with no row before (``_heads``) gets
        its row inserted: the key is taken if the run has one after all."""
        if before is not None and before.parent_run_id == row.parent_run_id and before.created_at == row.created_at:
            values = (row.fork_seq, row.task, row.pipeline, row.status, row.updated_at, row.score, row.iterations,
                      row.tokens, row.last_seq, row.run_id)
            if lease is None:
                if db.execute(schema.UPDATE_RUN, values).rowcount == 1:
                    return
            elif db.execute(schema.UPDATE_RUN_FENCED, (*values, lease)).rowcount == 1:
                return
            else:
                raise _Unfenced(row.run_id)
        if lease is not None and not _lease.holds(lease, db.execute(self.LEASE_TOKEN, (row.run_id,)).fetchone()):
            raise _Unfenced(row.run_id)
        db.execute(schema.INSERT_RUN if before is None and self.ONE_WRITER else schema.UPSERT_RUN, row.as_row())

    def _share(
        self, db: Any, item: "_Append", group: list["_Append"], now: float
    ) -> tuple[str, str, int, float | None] | None:
        """``(run, parent, n, at)`` when a new run's first ``n`` events are its parent's first
        ``n``, as a fork's are: then they are shared, not copied (a row, not n rows). ``at``, the
        prefix's time, is ``None`` when it is its RunForked's, the event after it (schema.SHARED_AT)."""
        point = fork_point(item.events, item.expected_seq, item.times)
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
        at = item.at(now)
        return item.run_id, parent, n, None if item.times is None or item.times[n] == at else at

    def _apply(self, db: Any, item: "_Append", now: float, group: list["_Append"]) -> None:
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
                writer.put, share[2] if share else 0, item.times,
            )
            writer.finish()
            db.executemany(schema.INSERT_EVENT, rows)
            if share:
                db.execute(schema.INSERT_SHARE, share)
            db.execute(schema.UPSERT_RUN, summary.as_row())
            item.summary = summary
            for sql, params in queue_writes(run_id, item.events, item.at(now)):
                db.execute(sql, params)
        except self.KEY_TAKEN as exc:  # the key (run_id, seq) was taken: stale writer (a deadlock is not)
            db.execute("ROLLBACK TO append")
            db.execute("RELEASE append")
            item.error = ConcurrencyError(run_id, expected_seq, db.execute(schema.LAST_SEQ, (run_id,)).fetchone()[0])
            item.error.__cause__ = exc
            return
        except self.DB_ERROR:
            raise  # the database itself failed: the whole group does
        except Exception as exc:  # noqa: BLE001 - stale seq, an event that does not encode: this writer's
            db.execute("ROLLBACK TO append")
            db.execute("RELEASE append")
            item.error = exc
            return
        db.execute("RELEASE append")
        item.result = expected_seq + len(item.events)

    # --- leases ------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float, *, take_over: int | None = None,
                      first: Sequence[Event] = ()) -> Lease:
        """Make ``owner`` the run's driver for ``ttl`` seconds; return its lease (a new token).

        Raises ``LeaseHeld`` naming the holder while another owner's lease is live, unless
        ``take_over`` is that lease's token (the caller judged its holder dead). ``first``: a
        new run's first events, appended in the same transaction (``ConcurrencyError`` if the
        run has events; then, as on any refusal, neither the events nor the lease are taken).
        """
        if first:  # committed as an append is, in a group with other writers' batches
            item = _Append(run_id, first, 0, claim=(owner, _lease.check_ttl(ttl), take_over))
            self._submit(item)
            assert item.claimed is not None
            return item.claimed
        with self._lock, self._errors(), self._write() as db:
            return self._take_lease(db, run_id, owner, ttl, take_over, time.time())

    def _take_lease(self, db: Any, run_id: str, owner: str, ttl: float, take_over: int | None, now: float) -> Lease:
        """The run's lease for ``owner`` inside the caller's write transaction, its row read
        locked (``LeaseHeld`` while another live holder has it, as ``_lease.claim`` says)."""
        db.execute(schema.ENSURE_LEASE, (run_id,))
        row = db.execute(self.SELECT_LEASE_TO_CLAIM, (run_id,)).fetchone()
        lease = _lease.claim(run_id, owner, ttl, take_over, row, now)
        db.execute(schema.CLAIM_LEASE, (run_id, owner, lease.token, lease.expires_at, now))
        return lease

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """The same lease, ``ttl`` seconds from now; ``LeaseLost`` if it was taken over or released."""
        expires_at = time.time() + _lease.check_ttl(ttl)
        with self._lock, self._errors(), self._write() as db:
            if db.execute(schema.RENEW_LEASE, (expires_at, lease.run_id, lease.token)).rowcount != 1:
                row = db.execute(schema.SELECT_LEASE, (lease.run_id,)).fetchone()
                current = _lease.holder(lease.run_id, row)
                raise LeaseLost(lease.run_id, lease.token, current.owner if current else None)
        return Lease(lease.run_id, lease.owner, lease.token, expires_at)

    def release_lease(self, lease: Lease) -> None:
        """Give the run up (a no-op if the lease was already taken over)."""
        with self._lock, self._errors(), self._write() as db:
            db.execute(schema.RELEASE_LEASE, (lease.run_id, lease.token))

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease holder, live or expired; ``None`` if nobody holds it."""
        rows = self._fetch(schema.SELECT_LEASE, (run_id,))
        return _lease.holder(run_id, rows[0] if rows else None)

    # --- the run queue -----------------------------------------------------------

    def claim_run(self, owner: str, ttl: float) -> Lease | None:
        """Take the oldest queued run nobody drives (never claimed, released, or its lease
        expired) and its lease for ``owner``, in one transaction; ``None`` if there is none."""
        claimed = self.claim_runs(owner, ttl, 1)
        return claimed[0][0] if claimed else None

    def claim_runs(self, owner: str, ttl: float, limit: int) -> list[tuple[Lease, RunSummary]]:
        """Take up to ``limit`` of the oldest queued runs nobody drives, and their leases for
        ``owner``, in one transaction; each with the run's index row as it was claimed (its
        ``last_seq``: where the claimant goes on). None if there is none.

        Workers in other processes claiming at once each get different runs: the pick is
        made under the dialect's lock (SQLite's write lock; Postgres skips the queue rows
        another claimant holds), and a lease is only taken if nobody holds it live, as
        ``acquire_lease`` does.
        """
        ttl = _lease.check_ttl(ttl)
        if limit < 1 or not self._fetch(schema.CLAIMABLE, (time.time(),)):  # idle polls stay off the write lock
            return []
        claimed: list[tuple[Lease, RunSummary]] = []
        with self._lock, self._errors(), self._write() as db:
            now = time.time()
            while len(claimed) < limit:
                row = db.execute(self.CLAIMABLE_TO_CLAIM, (now,)).fetchone()
                if row is None:
                    break
                run_id = row[0]
                try:
                    lease = self._take_lease(db, run_id, owner, ttl, None, now)
                except LeaseHeld:  # claimed by another since the pick
                    break
                summary = RunSummary.from_row(db.execute(schema.SELECT_RUN, (run_id,)).fetchone())
                claimed.append((lease, summary))  # taken in this transaction: the next pick passes it by
        return claimed

    def append_each(self, batches: Sequence[tuple[str, Sequence[Event], int, Lease]]) -> list[int | Exception]:
        """``(run_id, events, expected_seq, lease)`` batches of different runs, each appended
        under its lease as ``append`` does, in one transaction: what a group commit of their
        writers would be. Each batch's new last seq, or its error (``ConcurrencyError``,
        ``LeaseLost``; the transaction's, for every batch, if it failed)."""
        items = [_Append(run_id, events, expected_seq, lease) for run_id, events, expected_seq, lease in batches]
        if len({item.run_id for item in items}) != len(items):
            raise ValueError("append_each takes one batch per run")
        if items:
            with self._lock:
                self._commit_group(items, items[0], queued=False)
        return [item.error if item.error is not None else item.result for item in items]  # type: ignore[misc]

    def queued_runs(self) -> list[str]:
        """Runs in the queue (waiting for a worker, or driven by one), oldest first."""
        return [r[0] for r in self._fetch(schema.QUEUED_RUNS, ())]

    @contextmanager
    def _write(self) -> Iterator[Any]:
        db = self._db
        db.execute(self.BEGIN_WRITE)
        try:
            yield db
        except BaseException:
            _rollback(db)
            raise
        db.execute("COMMIT")

    def rebuild_index(self) -> int:
        """Recompute the runs index from the events alone; return how many runs it holds."""
        with self._lock, self._errors():
            db = self._db
            db.execute(self.BEGIN_MAINTENANCE)
            try:
                db.execute("DELETE FROM runs")
                db.execute("DELETE FROM queue")
                rows: dict[str, RunSummary] = {}
                # Run by run, each with the prefix it shares with its parent.
                for (run_id,) in db.execute("SELECT DISTINCT run_id FROM events ORDER BY run_id").fetchall():
                    stored = self._read_rows(db, run_id, 0, 2**62)
                    rows[run_id] = index.fold(None, run_id, stored[0].seq, [s.event for s in stored], 0.0,
                                              [s.recorded_at for s in stored])
                    for sql, params in queue_writes(run_id, [s.event for s in stored], rows[run_id].created_at):
                        db.execute(sql, params)
                db.executemany(schema.UPSERT_RUN, [r.as_row() for r in rows.values()])
                self._known.clear()
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
        with self._lock, self._errors():
            db = self._db
            before = self._size()
            db.execute(self.BEGIN_MAINTENANCE)
            try:
                referenced: set[int] = set()
                for run_id, seq, data in db.execute(self.PACKED_ROWS):
                    try:
                        referenced.update(p for reference in blob_refs(data) for p in packs_of(reference))
                    except Exception as exc:  # noqa: BLE001 - any decoding failure of a damaged row
                        raise StoreError(f"{self.where}: run {run_id} event {seq} cannot be read ({exc}); "
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
                self._compact()
            return VacuumReport(len(sizes), sum(n for _, _, n in sizes), sum(size for _, size, _ in sizes),
                                before, self._size())

    # --- reading -----------------------------------------------------------------

    # --- answers being streamed (beside the log, not in it) ----------------------------

    def put_partial(self, partial: PartialAnswer) -> None:
        """Record (replace) what a call's streamed answer holds so far."""
        with self._lock, self._errors():
            self._db.execute(schema.UPSERT_PARTIAL, partial.as_row())

    def clear_partial(self, run_id: str, call_id: str) -> None:
        with self._lock, self._errors():
            self._db.execute(schema.DELETE_PARTIAL, (run_id, call_id))

    def partials(self, run_id: str) -> list[PartialAnswer]:
        return [PartialAnswer.from_row(r) for r in self._fetch(schema.SELECT_PARTIALS, (run_id,))]

    def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with self._lock, self._errors():
            return self._db.execute(sql, params).fetchall()

    def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        """The run's events with ``after < seq <= upto``, in order."""
        with self._lock, self._errors():
            return self._read_rows(self._db, run_id, after, upto if upto is not None else 2**62)

    def read_runs(self, run_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """Each run's whole log, as ``read`` gives it, read in one go: a worker starts the runs it
        has just claimed from them, waiting for the store once rather than once per run."""
        with self._lock, self._errors():
            return {run_id: self._read_rows(self._db, run_id, 0, 2**62) for run_id in dict.fromkeys(run_ids)}

    def _read_rows(self, db: Any, run_id: str, after: int, upto: int) -> list[StoredEvent]:
        shares = self._shares.get(run_id)
        if shares is None:
            shares = not self._before_shares and db.execute(schema.SELECT_SHARE, (run_id,)).fetchone() is not None
        sql = schema.SELECT_SHARED_EVENTS if shares else schema.SELECT_EVENTS
        blobs = self._blobs
        # Decoded row by row: holding every raw row too would double the live objects,
        # and the collector's passes over them made long streams read superlinearly.
        events = StoredEvent.from_rows(db.execute(sql, (run_id, after, upto)), blobs, run_id)
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
        return pick_run_id(prefix, self._fetch(self.RUN_IDS_BY_PREFIX, prefix_bounds(prefix)))

    def list_runs(
        self, *, status: str | None = None, text: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[RunSummary]:
        sql, params = schema.list_runs_query(status=status, text=text, limit=limit, offset=offset, like=self.LIKE)
        return [RunSummary.from_row(r) for r in self._fetch(sql, params)]

    def count_runs(self, *, status: str | None = None, text: str | None = None) -> int:
        sql, params = schema.count_runs_query(status=status, text=text, like=self.LIKE)
        return self._fetch(sql, params)[0][0]

    def lineage(self, run_id: str) -> list[str]:
        """The run, its parent, its parent's parent, ...: where recorded answers may be reused."""
        return lineage_of(self._fetch(schema.LINEAGE, (run_id,)))

    def children(self, run_id: str) -> list[RunSummary]:
        """Runs forked from, or re-reviewing, this one; oldest first."""
        return [RunSummary.from_row(r) for r in self._fetch(schema.CHILDREN, (run_id,))]

    def find_answers(self, request_hash: str) -> list[StoredEvent]:
        """Every recorded answer to a request with this hash, in any run."""
        with self._lock, self._errors():
            rows = self._db.execute(schema.ANSWERS_BY_HASH, (request_hash,)).fetchall()
            return answers_to(request_hash, StoredEvent.from_rows(rows, self._blobs))

    def events_of_type(self, type_name: str) -> list[StoredEvent]:
        """Every stored event of type ``type_name``, in any run, oldest first."""
        with self._lock, self._errors():
            return StoredEvent.from_rows(self._db.execute(schema.EVENTS_OF_TYPE, (type_name,)).fetchall(),
                                         self._blobs)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



class VacuumReport(NamedTuple):
    packs: int  # packs of text no event refers to (dropped unless a dry run)
    chunks: int  # the chunks they hold
    pack_bytes: int  # their stored size: what the file frees
    file_before: int  # the database file's size, bytes
    file_after: int




class _Writes(NamedTuple):
    """What a group's batches write beside their text's chunks."""

    rows: list[tuple]  # event rows, in key order
    shares: list[tuple]  # shared prefixes (forks)
    runs: list[RunSummary]  # each run's index row after the group, by run id
    queue: list[tuple[str, tuple]]  # the queue's statements
    clean: bool  # no batch failed to encode (one that did may have stored chunks no event refers to)


class _Unfenced(Exception):
    """A lease checked with its run's index row (``_write_run``) is gone: the group is
    written again with each lease read first, and the writer gets its ``LeaseLost``."""


class _Append:
    """One writer's batch, waiting in the queue for a group commit."""

    __slots__ = ("run_id", "events", "expected_seq", "lease", "release", "claim", "claimed", "claim_written",
                 "times", "result", "error", "done", "wake", "summary")

    def __init__(self, run_id: str, events: Sequence[Event], expected_seq: int, lease: Lease | None = None,
                 times: Sequence[float] | None = None, release: bool = False,
                 claim: tuple[str, float, int | None] | None = None):
        self.run_id, self.events, self.expected_seq, self.lease = run_id, events, expected_seq, lease
        self.release = release  # give the lease up with the batch
        self.claim = claim  # (owner, ttl, take_over): take the run's lease with the batch
        self.claimed: Lease | None = None  # the lease so taken
        self.claim_written = False  # the claim inserted before the batch (``_fence``), not after it
        self.times = times  # each event's recorded_at, when copied from another log
        self.result = expected_seq
        self.error: BaseException | None = None
        self.summary: RunSummary | None = None  # the run's index row after this batch
        self.done = False
        self.wake: threading.Event | None = None  # set when done, or when this batch's writer must lead

    def at(self, now: float) -> float:
        """When the batch is recorded: ``now``, or its first event's own time when copied."""
        return now if self.times is None else self.times[0]


def _copy_error(exc: Exception) -> Exception:
    """The same error for another waiting thread (one exception object is raised once)."""
    try:
        clone = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt from its args
        clone = StoreError(str(exc))
    clone.__cause__ = exc
    return clone


def _rollback(db: Any) -> None:
    """Roll back the open transaction, unless SQLite already has (it does on a full disk)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


