"""One contract for the event log, run against both faces of the SQLite store and against PostgreSQL.

``StoreContract`` holds the tests; ``TestSQLiteStore``, ``TestAsyncSQLiteStore`` and
``TestPostgresStore`` run them, the async face behind ``AsyncFace``, a blocking adapter
with its own event loop. Every SQLite store is a real file in ``tmp_path``, every
Postgres store a fresh database in a real cluster (tests/postgres.py); races use real
threads and processes lined up with barriers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    AreaFacts,
    CallRef,
    DraftReady,
    Event,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunResumed,
    RunStarted,
    Usage,
)
from agentlog.store import (
    AmbiguousRunId,
    AsyncSQLiteStore,
    ConcurrencyError,
    LeaseHeld,
    LeaseLost,
    RunNotFound,
    RunSummary,
    SQLiteStore,
    StoreError,
)
from agentlog.store.postgres import PostgresStore, native

# --- the async face behind the sync interface -------------------------------------------


def _blocking(name: str):
    def method(self: "AsyncFace", *args, **kwargs):
        return self._run(getattr(self._store, name)(*args, **kwargs))

    method.__name__ = name
    return method


class AsyncFace:
    """``AsyncSQLiteStore`` with blocking methods: each coroutine runs on this adapter's
    own event loop, in a thread of its own, so any thread may call it."""

    def __init__(self, path: str | Path, **options):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-face", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._store = self._run(AsyncSQLiteStore.open(path, **options))
        except BaseException:
            self._stop()
            raise
        self.path = self._store.path

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    append = _blocking("append")
    read = _blocking("read")
    events = _blocking("events")
    last_seq = _blocking("last_seq")
    get_run = _blocking("get_run")
    resolve_run_id = _blocking("resolve_run_id")
    list_runs = _blocking("list_runs")
    count_runs = _blocking("count_runs")
    lineage = _blocking("lineage")
    children = _blocking("children")
    find_answers = _blocking("find_answers")
    acquire_lease = _blocking("acquire_lease")
    renew_lease = _blocking("renew_lease")
    release_lease = _blocking("release_lease")
    lease = _blocking("lease")

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._store.close())
        finally:
            self._stop()


FACES: dict[str, Callable[..., object]] = {"sync": SQLiteStore, "async": AsyncFace, "postgres": PostgresStore}

class RawConnection:
    """A database connection outside the store, in autocommit mode, taking ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence = ()):
        raise NotImplementedError

    def begin_snapshot(self) -> None:
        """Begin a transaction that reads one snapshot until it ends."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RawSQLite(RawConnection):
    def __init__(self, path):
        self._db = sqlite3.connect(path, isolation_level=None)

    def execute(self, sql: str, params: Sequence = ()):
        return self._db.execute(sql, params)

    def begin_snapshot(self) -> None:
        self._db.execute("BEGIN")  # WAL: the snapshot is taken at the first read

    def close(self) -> None:
        self._db.close()


class RawPostgres(RawConnection):
    def __init__(self, url: str):
        self._db = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor)

    def execute(self, sql: str, params: Sequence = ()):
        return self._db.execute(native(sql), params or None)

    def begin_snapshot(self) -> None:
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")

    def close(self) -> None:
        self._db.close()


# --- realistic runs ---------------------------------------------------------------------

AGENTS = {
    "researcher": AgentConfig(model="openai/gpt-4o-mini", temperature=0.2),
    "writer": AgentConfig(model="openai/gpt-4o-mini", temperature=0.6),
    "reviewer": AgentConfig(model="openai/gpt-4o", temperature=0.1),
}
FINDINGS = Findings(
    key_areas=["write-ahead logging", "checkpoints"],
    facts=[AreaFacts(area="write-ahead logging", facts=["Readers do not block the writer."])],
    misconceptions=[], sources=["https://sqlite.org/wal.html"],
)


def started(task: str, **kw) -> RunStarted:
    return RunStarted(task=task, pipeline=kw.pop("pipeline", "content"), agents=kw.pop("agents", AGENTS),
                      max_iterations=3, threshold=8, **kw)


def review(score: int) -> Review:
    return Review(score=score, approved=score >= 8, issues=[] if score >= 8 else ["Too vague."],
                  missed_topics=[], suggestions=[], summary=f"Scored {score}.")


def call(call_id: str, agent: str, tokens: int, reused_from: CallRef | None = None) -> list[Event]:
    """A model call as the log records it: the request, then its answer."""
    digest = f"hash:{call_id}:{agent}"
    return [
        LLMCallRequested(call_id=call_id, agent=agent, step=call_id.split("/")[0], attempt=1,
                         request={"model": AGENTS[agent].model, "messages": []}, request_hash=digest),
        LLMCallAnswered(call_id=call_id, agent=agent, request_hash=digest, content="...",
                        usage=Usage(tokens // 2, tokens - tokens // 2, tokens), latency_ms=250.0,
                        model=AGENTS[agent].model, reused_from=reused_from),
    ]


def approved_run(task: str) -> list[Event]:
    """Research, two drafts, two reviews (6, then 9), approved: 17 events, 5300 tokens."""
    return [
        started(task),
        *call("research/1", "researcher", 1000), FindingsReady(findings=FINDINGS, call_id="research/1"),
        *call("draft/1", "writer", 1500), DraftReady(iteration=1, draft="# Draft 1", call_id="draft/1"),
        *call("review/1", "reviewer", 500), ReviewScored(iteration=1, review=review(6), call_id="review/1"),
        *call("draft/2", "writer", 1700), DraftReady(iteration=2, draft="# Draft 2", call_id="draft/2"),
        *call("review/2", "reviewer", 600), ReviewScored(iteration=2, review=review(9), call_id="review/2"),
        RunFinished(reason="approved", iterations=2, score=9),
    ]


def append_in_batches(store, run_id: str, events: Sequence[Event], sizes: Sequence[int] = (1, 3, 2)) -> int:
    """Append as a running pipeline does, a few events at a time; return the last seq."""
    seq, i, n = store.last_seq(run_id), 0, 0
    while i < len(events):
        batch = events[i:i + sizes[n % len(sizes)]]
        seq = store.append(run_id, batch, seq)
        i, n = i + len(batch), n + 1
    return seq


FINISHED, FORK, FORK2, REREVIEW, FAILED, RESUMED = (
    "5e1a0c7d2b3f4a61", "9b2d77e0c1a84f3e", "0c4e5f6a7b8c9d0e", "d3f1a2b4c6e80917", "a07b3c9e1d2f4856",
    "7f3e2d1c0b9a8867",
)


def build_runs(store) -> dict[str, RunSummary]:
    """Six runs of every kind; return the runs-index rows they must produce (timestamps aside)."""
    parent = approved_run("Explain SQLite WAL mode")
    append_in_batches(store, FINISHED, parent)

    # A fork at the first review: copies 1..10, then changes the writer and goes on.
    fork = [
        *parent[:10], RunForked(parent_run_id=FINISHED, parent_seq=10),
        AgentReconfigured(agent="writer", model="openai/gpt-4o"),
        *call("draft/2", "writer", 800), DraftReady(iteration=2, draft="# Draft 2b", call_id="draft/2"),
        *call("review/2", "reviewer", 600, reused_from=CallRef(FINISHED, 15, "review/2")),
        ReviewScored(iteration=2, review=review(8), call_id="review/2"),
    ]
    store.append(FORK, fork[:12], 0)  # the fork's first batch, as ``fork`` writes it
    append_in_batches(store, FORK, fork[12:])

    fork2 = [*fork[:14], RunForked(parent_run_id=FORK, parent_seq=14)]
    store.append(FORK2, fork2, 0)

    rereview = [
        started("Explain SQLite WAL mode", pipeline="rereview", parent_run_id=FINISHED),
        FindingsReady(findings=FINDINGS, call_id="research/1"),
        DraftReady(iteration=1, draft="# Draft 1", call_id="draft/1", source=CallRef(FINISHED, 7, "draft/1")),
        DraftReady(iteration=2, draft="# Draft 2", call_id="draft/2", source=CallRef(FINISHED, 13, "draft/2")),
        *call("review/1", "reviewer", 450), ReviewScored(iteration=1, review=review(5), call_id="review/1"),
        *call("review/2", "reviewer", 550), ReviewScored(iteration=2, review=review(7), call_id="review/2"),
        RunFinished(reason="reviewed", iterations=2),
    ]
    append_in_batches(store, REREVIEW, rereview, sizes=(4, 1))

    failed = [
        started("Summarise the 2024 SQLite release notes"), *call("research/1", "researcher", 300)[:1],
        LLMCallFailed(call_id="research/1", agent="researcher", attempt=3, error_kind="RateLimitError",
                      message="429", retryable=True, gave_up=True),
        RunFailed(reason="rate limited", step="research", retryable=True),
    ]
    append_in_batches(store, FAILED, failed)

    resumed = [*failed, RunResumed(previous_seq=4), *call("research/1", "researcher", 300)]
    append_in_batches(store, RESUMED, resumed, sizes=(4, 1, 2))

    def row(run_id, task, pipeline, status, score, iterations, tokens, last_seq, parent=None, fork_seq=None):
        return RunSummary(run_id, parent, fork_seq, task, pipeline, status, 0.0, 0.0, score, iterations, tokens,
                          last_seq)

    wal, notes = "Explain SQLite WAL mode", "Summarise the 2024 SQLite release notes"
    return {
        FINISHED: row(FINISHED, wal, "content", "finished", 9, 2, 5300, 17),
        # Tokens: only the fork's own new answer (800); the reused review answer cost nothing.
        FORK: row(FORK, wal, "content", "running", 8, 2, 800, 18, FINISHED, 10),
        FORK2: row(FORK2, wal, "content", "running", 6, 1, 0, 15, FORK, 14),
        REREVIEW: row(REREVIEW, wal, "rereview", "finished", 7, 2, 1000, 11, FINISHED),
        FAILED: row(FAILED, notes, "content", "failed", None, 0, 0, 4),
        RESUMED: row(RESUMED, notes, "content", "running", None, 0, 300, 7),
    }


def without_times(row: RunSummary) -> RunSummary:
    return RunSummary(**{f: getattr(row, f) for f in RunSummary.__struct_fields__} | {"created_at": 0.0,
                                                                                       "updated_at": 0.0})


# --- racing writers ----------------------------------------------------------------------

RACE_RUN = "r4c3r4c3r4c3r4c3"


def race(store, who: str, rounds: int, barrier) -> list[tuple[int, str, tuple | None]]:
    """Each round, every writer reads the same last seq, then all append after it at once.

    Returns ``(seq, outcome, (run_id, expected, actual) of the ConcurrencyError)`` per round.
    """
    outcomes = []
    for r in range(rounds):
        barrier.wait()  # the previous round's appends are all done
        expected = store.last_seq(RACE_RUN)
        barrier.wait()  # every writer has read the same ``expected``
        try:
            store.append(RACE_RUN, [DraftReady(iteration=r + 1, draft=who, call_id=f"{who}/{r}")], expected)
            outcomes.append((expected + 1, "won", None))
        except ConcurrencyError as exc:
            outcomes.append((expected + 1, "lost", (exc.run_id, exc.expected_seq, exc.actual_seq)))
    return outcomes


def race_in_process(face: str, path: str, who: str, rounds: int, barrier, results) -> None:
    """A spawned process's side of ``race``; reports its outcomes or its traceback."""
    try:
        store = FACES[face](path)
        try:
            results.put((who, race(store, who, rounds, barrier)))
        finally:
            store.close()
    except BaseException:
        barrier.abort()
        results.put((who, traceback.format_exc()))


def check_race(store, outcomes: dict[str, list], rounds: int) -> None:
    """Exactly one winner per seq; every loser was told who beat it; the stream has no gap or duplicate."""
    for who, result in outcomes.items():
        assert isinstance(result, list), f"writer {who} failed:\n{result}"
        assert [seq for seq, _, _ in result] == list(range(2, rounds + 2)), who
    winners = {}
    for seq in range(2, rounds + 2):
        rows = {who: result[seq - 2] for who, result in outcomes.items()}
        won = [who for who, (_, outcome, _) in rows.items() if outcome == "won"]
        assert len(won) == 1, f"seq {seq}: winners {won}"
        winners[seq] = won[0]
        for who, (_, outcome, error) in rows.items():
            if outcome == "lost":
                assert error == (RACE_RUN, seq - 1, seq), f"seq {seq}, loser {who}"
    stored = store.read(RACE_RUN)
    assert [s.seq for s in stored] == list(range(1, rounds + 2))
    assert {s.seq: s.event.draft for s in stored[1:]} == winners
    summary = store.get_run(RACE_RUN)
    assert (summary.last_seq, summary.iterations) == (rounds + 1, rounds)


class Unencodable:
    """A value msgspec cannot encode: an event carrying it fails in the middle of its batch."""


# --- the contract ------------------------------------------------------------------------


class StoreContract:
    """What every face of the event log promises. Subclasses set ``face``."""

    face: str
    maintenance = "sync"  # the face that rebuilds the runs index
    impatient: dict = {"busy_timeout": 0.5}  # options of a writer that fails soon rather than wait on a lock

    def raw(self, path) -> "RawConnection":
        """The database under the store, through its own driver (the store is not involved)."""
        return RawSQLite(path)

    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "log.db"

    @pytest.fixture
    def connect(self, path: Path):
        """Open a store (a new connection) on the test's file; all are closed at teardown."""
        opened = []

        def connect(**options):
            store = FACES[self.face](path, **options)
            opened.append(store)
            return store

        yield connect
        for store in reversed(opened):
            store.close()

    @pytest.fixture
    def store(self, connect):
        return connect()

    # --- appending and reading ---------------------------------------------------------

    def test_seq_starts_at_1_and_has_no_gaps(self, store):
        events = approved_run("t")[:6]
        assert store.last_seq("run") == 0
        assert store.append("run", events[:1], 0) == 1
        assert store.append("run", events[1:4], 1) == 4
        assert store.append("run", events[4:], 4) == 6
        assert [s.seq for s in store.read("run")] == [1, 2, 3, 4, 5, 6]
        assert store.last_seq("run") == 6

    def test_events_read_back_equal_and_typed(self, store):
        events = approved_run("Explain SQLite WAL mode")
        append_in_batches(store, "run", events)
        stored = store.read("run")
        assert [s.event for s in stored] == events
        assert store.events("run") == events
        assert [(s.run_id, s.type, s.version) for s in stored] == [
            ("run", type(e).__name__, type(e).VERSION) for e in events]

    def test_read_from_any_position(self, store):
        events = approved_run("t")[:6]
        append_in_batches(store, "run", events)
        for after in range(0, 8):
            for upto in (None, *range(0, 8)):
                expected = [s for s in range(1, 7) if after < s and (upto is None or s <= upto)]
                assert [s.seq for s in store.read("run", after, upto)] == expected, (after, upto)
                assert store.events("run", after, upto) == [events[s - 1] for s in expected]

    def test_streams_are_separate(self, store):
        store.append("a", approved_run("a")[:3], 0)
        store.append("b", approved_run("b")[:2], 0)
        assert store.append("a", approved_run("a")[3:4], 3) == 4
        assert [s.seq for s in store.read("b")] == [1, 2]
        assert store.read("b")[0].event.task == "b"
        assert store.read("nobody") == [] and store.last_seq("nobody") == 0

    def test_recorded_at_is_the_commit_time_of_the_batch(self, store):
        t0 = time.time()
        store.append("run", approved_run("t")[:3], 0)
        t1 = time.time()
        store.append("run", approved_run("t")[3:5], 3)
        t2 = time.time()
        first, second = store.read("run")[:3], store.read("run")[3:]
        assert len({s.recorded_at for s in first}) == 1 and len({s.recorded_at for s in second}) == 1
        assert t0 <= first[0].recorded_at <= t1 <= second[0].recorded_at <= t2

    def test_an_empty_batch_appends_nothing(self, store):
        store.append("run", approved_run("t")[:2], 0)
        assert store.append("run", [], 2) == 2
        assert store.last_seq("run") == 2

    # --- optimistic concurrency and atomicity ---------------------------------------------

    def test_a_stale_writer_gets_concurrency_error(self, connect):
        me, other = connect(), connect()
        me.append("run", approved_run("t")[:3], 0)
        seen = me.last_seq("run")
        other.append("run", approved_run("t")[3:4], seen)
        with pytest.raises(ConcurrencyError, match="another writer got there first") as caught:
            me.append("run", approved_run("t")[3:5], seen)
        assert (caught.value.run_id, caught.value.expected_seq, caught.value.actual_seq) == ("run", 3, 4)
        assert [s.seq for s in me.read("run")] == [1, 2, 3, 4]
        assert me.append("run", approved_run("t")[4:5], 4) == 5  # re-read, then it may go on

    @pytest.mark.parametrize(("expected_seq", "actual"), [(0, 3), (2, 3), (4, 3), (10, 3)])
    def test_expected_seq_must_be_the_last_seq(self, store, expected_seq, actual):
        store.append("run", approved_run("t")[:3], 0)
        with pytest.raises(ConcurrencyError) as caught:
            store.append("run", approved_run("t")[3:4], expected_seq)
        assert (caught.value.expected_seq, caught.value.actual_seq) == (expected_seq, actual)
        assert store.last_seq("run") == 3

    def test_a_new_run_starts_after_0(self, store):
        with pytest.raises(ConcurrencyError) as caught:
            store.append("new", approved_run("t")[:1], 1)
        assert caught.value.actual_seq == 0
        with pytest.raises(RunNotFound):
            store.get_run("new")

    def test_a_rejected_batch_leaves_nothing(self, store):
        store.append("run", approved_run("t")[:3], 0)
        before_events, before_row = store.read("run"), store.get_run("run")
        with pytest.raises(ConcurrencyError):
            store.append("run", approved_run("t")[3:17], 2)
        assert store.read("run") == before_events
        assert store.get_run("run") == before_row

    def test_a_batch_that_fails_to_encode_midway_leaves_nothing(self, store):
        store.append("run", approved_run("t")[:3], 0)
        before_events, before_row = store.read("run"), store.get_run("run")
        bad = LLMCallRequested(call_id="draft/1", agent="writer", step="draft", attempt=1,
                               request={"model": "m", "extra": Unencodable()}, request_hash="h")
        good = approved_run("t")[3:5]
        with pytest.raises(TypeError, match="unsupported"):
            store.append("run", [good[0], bad, good[1]], 3)
        assert store.read("run") == before_events
        assert store.get_run("run") == before_row
        with pytest.raises(TypeError):
            store.append("fresh", [started("t"), bad], 0)
        assert store.read("fresh") == [] and store.last_seq("fresh") == 0
        with pytest.raises(RunNotFound):
            store.get_run("fresh")
        # The failure left no transaction open: the store goes on.
        assert store.append("run", good, 3) == 5
        assert store.append("fresh", [started("t")], 0) == 1

    def test_two_threads_race_for_each_seq(self, connect):
        connect().append(RACE_RUN, [started("race")], 0)
        rounds, writers = 15, {"left": connect(), "right": connect()}
        barrier = threading.Barrier(len(writers), timeout=30)
        with ThreadPoolExecutor(len(writers)) as pool:
            futures = {who: pool.submit(race, store, who, rounds, barrier) for who, store in writers.items()}
            outcomes = {who: f.result(timeout=60) for who, f in futures.items()}
        check_race(writers["left"], outcomes, rounds)

    def test_two_processes_race_for_each_seq(self, connect, path):
        setup = connect()
        setup.append(RACE_RUN, [started("race")], 0)
        rounds, ctx = 10, multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(2, timeout=60), ctx.Queue()
        processes = [ctx.Process(target=race_in_process, args=(self.face, str(path), who, rounds, barrier, results))
                     for who in ("p1", "p2")]
        for p in processes:
            p.start()
        try:
            outcomes = dict(results.get(timeout=60) for _ in processes)
        finally:
            for p in processes:
                p.join(timeout=30)
                if p.is_alive():  # a hung writer must not outlive the test
                    p.kill()
                    p.join()
            results.close()
            results.join_thread()
        assert [p.exitcode for p in processes] == [0, 0]
        check_race(setup, outcomes, rounds)

    # --- the runs index ----------------------------------------------------------------

    def test_runs_index_after_realistic_runs(self, store):
        expected = build_runs(store)
        for run_id, row in expected.items():
            got = store.get_run(run_id)
            assert without_times(got) == row, run_id
            stored = store.read(run_id)
            assert (got.created_at, got.updated_at) == (stored[0].recorded_at, stored[-1].recorded_at)
        assert {r.run_id for r in store.list_runs()} == set(expected)
        with pytest.raises(RunNotFound, match="no run 'ghost'"):
            store.get_run("ghost")

    def test_rebuild_index_reproduces_it_from_the_events_alone(self, store, path):
        build_runs(store)
        before = store.list_runs()
        assert len(before) == 6
        with self.raw(path) as raw:
            raw.execute("DELETE FROM runs")
        assert store.list_runs() == [] and store.count_runs() == 0
        with FACES[self.maintenance](path) as maintenance:  # rebuilding is the sync face's maintenance job
            assert maintenance.rebuild_index() == 6
        assert store.list_runs() == before
        assert [store.get_run(r.run_id) for r in before] == before

    def test_rebuild_index_corrects_a_damaged_row(self, store, path):
        build_runs(store)
        before = store.get_run(FINISHED)
        with self.raw(path) as raw:
            raw.execute("UPDATE runs SET status = 'running', tokens = 1, score = NULL WHERE run_id = ?", (FINISHED,))
            raw.execute("INSERT INTO runs VALUES ('orphan', NULL, NULL, '', '', 'running', 0, 0, NULL, 0, 0, 9)")
        with FACES[self.maintenance](path) as maintenance:
            maintenance.rebuild_index()
        assert store.get_run(FINISHED) == before
        with pytest.raises(RunNotFound):
            store.get_run("orphan")

    # --- leases: who drives a live run ---------------------------------------------------

    def test_a_live_lease_is_held_until_released_and_its_token_grows(self, store):
        first = store.acquire_lease("run", "host-a:1", 30)
        assert (first.owner, first.token) == ("host-a:1", 1) and first.live(time.time())
        assert store.lease("run") == first
        with pytest.raises(LeaseHeld, match=r"driven by host-a:1 \(its lease expires at .* UTC, in \d+ s\)") as held:
            store.acquire_lease("run", "host-b:2", 30)
        assert (held.value.owner, held.value.expires_at) == ("host-a:1", first.expires_at)
        renewed = store.renew_lease(first, 60)
        assert renewed.token == first.token and renewed.expires_at > first.expires_at
        store.release_lease(renewed)
        assert store.lease("run") is None
        second = store.acquire_lease("run", "host-b:2", 30)
        assert second.token == 2  # a released lease's epoch is not reused

    def test_an_expired_lease_is_taken_over_and_a_named_one_at_once(self, store):
        old = store.acquire_lease("run", "host-a:1", 0.05)
        deadline = time.monotonic() + 5
        while old.live(time.time()) and time.monotonic() < deadline:
            time.sleep(0.01)
        new = store.acquire_lease("run", "host-b:2", 30)
        assert new.token == old.token + 1
        with pytest.raises(LeaseHeld):  # live now, and not named
            store.acquire_lease("run", "host-c:3", 30, take_over=old.token)
        taken = store.acquire_lease("run", "host-c:3", 30, take_over=new.token)  # its holder judged dead
        assert (taken.owner, taken.token) == ("host-c:3", new.token + 1)

    def test_a_stale_owner_cannot_append_renew_or_release_after_a_takeover(self, store):
        events = approved_run("t")
        stale = store.acquire_lease("run", "host-a:1", 30)
        assert store.append("run", events[:2], 0, lease=stale) == 2
        fresh = store.acquire_lease("run", "host-b:2", 30, take_over=stale.token)
        with pytest.raises(LeaseLost, match="now held by host-b:2"):
            store.append("run", events[2:4], 2, lease=stale)
        assert store.last_seq("run") == 2  # nothing of the stale batch committed
        with pytest.raises(LeaseLost):
            store.renew_lease(stale, 30)
        store.release_lease(stale)  # a no-op: it is not the holder
        assert store.lease("run") == fresh
        assert store.append("run", events[2:4], 2, lease=fresh) == 4

    def test_leases_of_different_runs_are_independent(self, store):
        a = store.acquire_lease("run-a", "host-a:1", 30)
        b = store.acquire_lease("run-b", "host-b:2", 30)
        assert a.token == b.token == 1
        store.append("run-a", approved_run("a")[:1], 0, lease=a)
        store.append("run-b", approved_run("b")[:1], 0, lease=b)

    def test_of_two_acquirers_at_once_exactly_one_gets_the_lease(self, connect):
        stores = [connect(), connect()]
        barrier = threading.Barrier(2, timeout=10)
        outcomes: list[str] = []

        def take(store, owner):
            barrier.wait()
            try:
                store.acquire_lease("run", owner, 30)
                outcomes.append("got")
            except LeaseHeld:
                outcomes.append("held")

        threads = [threading.Thread(target=take, args=(s, f"host:{i}")) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcomes) == ["got", "held"]

    # --- listing and finding runs --------------------------------------------------------

    TASKS = {  # run id -> (task, last event), in order of creation
        "f00d0001aaaa0001": ("100% test coverage", RunFinished(reason="approved", iterations=1, score=9)),
        "c0de0002bbbb0002": ("1000 tests of coverage", None),
        "beef0003cccc0003": ("snake_case names", RunFailed(reason="boom")),
        "0dd00004dddd0004": ("snakeXcase names", None),
        "e0000005eeee0005": ("C:\\temp paths on Windows", None),
        "a1b2c3d4e5f60006": ("Explain WAL", RunFinished(reason="max_iterations", iterations=3, score=6)),
    }

    @pytest.fixture
    def listed(self, store):
        for run_id, (task, last) in self.TASKS.items():
            store.append(run_id, [started(task), *([last] if last else [])], 0)
        return store

    def test_list_runs_newest_first(self, listed):
        newest_first = list(reversed(self.TASKS))
        assert newest_first != sorted(newest_first, reverse=True)  # creation order, not id order
        assert [r.run_id for r in listed.list_runs()] == newest_first

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"status": "finished"}, ["a1b2c3d4e5f60006", "f00d0001aaaa0001"]),
            ({"status": "failed"}, ["beef0003cccc0003"]),
            ({"status": "running"}, ["e0000005eeee0005", "0dd00004dddd0004", "c0de0002bbbb0002"]),
            ({"status": "cancelled"}, []),
            ({"text": "coverage"}, ["c0de0002bbbb0002", "f00d0001aaaa0001"]),
            ({"text": "100%"}, ["f00d0001aaaa0001"]),
            ({"text": "%"}, ["f00d0001aaaa0001"]),
            ({"text": "snake_case"}, ["beef0003cccc0003"]),
            ({"text": "_"}, ["beef0003cccc0003"]),
            ({"text": "C:\\temp"}, ["e0000005eeee0005"]),
            ({"text": "\\"}, ["e0000005eeee0005"]),
            ({"text": "explain wal"}, ["a1b2c3d4e5f60006"]),
            ({"text": "beef0003"}, ["beef0003cccc0003"]),  # the run id matches too
            ({"text": "names", "status": "running"}, ["0dd00004dddd0004"]),
            ({"text": "nothing like this"}, []),
        ],
        ids=lambda v: repr(v) if isinstance(v, dict) else "",
    )
    def test_list_and_count_runs_filter(self, listed, filters, expected):
        assert [r.run_id for r in listed.list_runs(**filters)] == expected
        assert listed.count_runs(**filters) == len(expected)

    def test_list_runs_pages(self, listed):
        everything = listed.list_runs()
        pages = [listed.list_runs(limit=4, offset=o) for o in (0, 4, 8)]
        assert [len(p) for p in pages] == [4, 2, 0]
        assert pages[0] + pages[1] == everything
        assert listed.list_runs(limit=2, offset=1) == everything[1:3]
        assert listed.list_runs(status="running", limit=1, offset=1) == listed.list_runs(status="running")[1:2]
        assert listed.list_runs(limit=0) == []
        assert listed.count_runs() == 6

    def test_resolve_run_id(self, store):
        for run_id in ("a1b2c3d4", "a1b2c9ff", "a1b2", "ffee0011"):
            store.append(run_id, [started(run_id)], 0)
        assert store.resolve_run_id("ffee0011") == "ffee0011"
        assert store.resolve_run_id("ff") == "ffee0011"
        assert store.resolve_run_id("a1b2c3") == "a1b2c3d4"
        assert store.resolve_run_id("a1b2") == "a1b2"  # a whole id wins over the ids it prefixes
        with pytest.raises(AmbiguousRunId, match="'a1b2c' matches more than one run"):
            store.resolve_run_id("a1b2c")
        with pytest.raises(AmbiguousRunId):
            store.resolve_run_id("a1")
        for missing in ("b", "a1b2c3d4e", "a1b2_", "%", ""):
            with pytest.raises(RunNotFound):
                store.resolve_run_id(missing)

    def test_lineage_follows_parents(self, store):
        build_runs(store)
        assert store.lineage(FINISHED) == [FINISHED]
        assert store.lineage(FORK) == [FORK, FINISHED]
        assert store.lineage(FORK2) == [FORK2, FORK, FINISHED]
        assert store.lineage(REREVIEW) == [REREVIEW, FINISHED]
        assert store.lineage("ghost") == ["ghost"]

    def test_children_oldest_first(self, store):
        build_runs(store)
        assert [r.run_id for r in store.children(FINISHED)] == [FORK, REREVIEW]
        assert store.children(FORK) == [store.get_run(FORK2)]
        assert store.children(FORK2) == [] and store.children("ghost") == []

    def test_lineage_stops_at_a_cycle(self, store):
        store.append("one", [started("t", parent_run_id="two")], 0)
        store.append("two", [started("t", parent_run_id="one")], 0)
        assert store.lineage("one") == ["one", "two"]

    def test_find_answers_by_request_hash(self, store):
        build_runs(store)
        found = store.find_answers("hash:research/1:researcher")
        # The parent's answer, and the copies its forks carry; never the requests with that hash.
        assert sorted((s.run_id, s.seq) for s in found) == sorted(
            [(FINISHED, 3), (FORK, 3), (FORK2, 3), (RESUMED, 7)])
        assert all(type(s.event) is LLMCallAnswered and s.event.request_hash == "hash:research/1:researcher"
                   for s in found)
        assert store.find_answers("hash:nobody-asked") == []

    # --- readers ----------------------------------------------------------------------

    def test_a_second_connection_sees_committed_appends(self, connect):
        writer, reader = connect(), connect()
        assert reader.last_seq("run") == 0
        writer.append("run", approved_run("t")[:3], 0)
        assert reader.last_seq("run") == 3
        assert reader.events("run") == approved_run("t")[:3]
        assert reader.get_run("run").last_seq == 3
        writer.append("run", approved_run("t")[3:5], 3)
        assert [r.last_seq for r in reader.list_runs()] == [5]

    def test_an_open_reader_does_not_block_appends(self, connect, path):
        store = connect(**self.impatient)
        store.append("run", approved_run("t")[:2], 0)
        with self.raw(path) as reader:
            reader.begin_snapshot()
            assert reader.execute("SELECT count(*) FROM events").fetchone() == (2,)
            store.append("run", approved_run("t")[2:5], 2)  # a reader never blocks the writer
            assert reader.execute("SELECT count(*) FROM events").fetchone() == (2,)  # its snapshot holds
            reader.execute("COMMIT")
            assert reader.execute("SELECT count(*) FROM events").fetchone() == (5,)


class SyncStoreContract(StoreContract):
    """What the synchronous faces promise beside: one store object shared by threads, ``append_all``."""

    def test_threads_sharing_one_store_race_for_each_seq(self, connect):
        shared = connect()
        shared.append(RACE_RUN, [started("race")], 0)
        rounds, writers = 15, ("w1", "w2", "w3", "w4")
        barrier = threading.Barrier(len(writers), timeout=30)
        with ThreadPoolExecutor(len(writers)) as pool:
            futures = {who: pool.submit(race, shared, who, rounds, barrier) for who in writers}
            outcomes = {who: f.result(timeout=60) for who, f in futures.items()}
        check_race(shared, outcomes, rounds)

    def test_read_runs_gives_each_run_its_whole_log_as_read_does(self, store):
        build_runs(store)  # forks among them, whose logs share their parents' prefixes
        ids = [FINISHED, FORK, FORK2, REREVIEW, FAILED, RESUMED]
        logs = store.read_runs([FORK2, *ids, "no-such-run"])
        assert list(logs) == [FORK2, FINISHED, FORK, REREVIEW, FAILED, RESUMED, "no-such-run"]
        for run_id in ids:
            assert logs[run_id] == store.read(run_id) and logs[run_id]
        assert logs["no-such-run"] == [] and store.read_runs([]) == {}

    def test_threads_sharing_one_store_append_to_their_own_runs(self, connect):
        shared, writers, batches = connect(), 8, 20
        barrier = threading.Barrier(writers, timeout=30)

        def write(n: int) -> list[int]:
            run_id, seq, seqs = f"run-{n}", 0, []
            barrier.wait()
            for i in range(batches):
                seq = shared.append(run_id, [DraftReady(iteration=i + 1, draft=f"{n}", call_id=f"draft/{i}")] * 2,
                                    seq)
                seqs.append(seq)
            return seqs

        with ThreadPoolExecutor(writers) as pool:
            results = list(pool.map(write, range(writers)))
        assert results == [list(range(2, 2 * batches + 1, 2))] * writers
        for n in range(writers):
            assert [s.seq for s in shared.read(f"run-{n}")] == list(range(1, 2 * batches + 1))
            assert shared.get_run(f"run-{n}").iterations == batches


    def test_a_writer_that_appended_before_sees_what_another_appended_since(self, connect):
        # The store keeps the last seq and index row of a run it appended to (not read again):
        # what another writer appended since must still count, in the checks and in the row.
        me, other = connect(), connect()
        events = approved_run("t")
        assert me.append("run", events[:3], 0) == 3
        assert other.append("run", events[3:9], 3) == 9  # a draft and a review: the index row moves
        with pytest.raises(ConcurrencyError) as caught:
            me.append("run", events[9:10], 3)
        assert (caught.value.expected_seq, caught.value.actual_seq) == (3, 9)
        assert me.append("run", events[9:], 9) == 17
        row = me.get_run("run")
        assert (row.iterations, row.score, row.status, row.tokens, row.last_seq) == (2, 9, "finished", 5300, 17)
        me.rebuild_index()
        assert me.get_run("run") == row

    def test_a_run_another_writer_started_is_not_new_to_a_writer_that_never_saw_it(self, connect):
        # A writer takes a run it has never seen, appended at 0, to be new (nothing is read
        # first on SQLite); the run's keys must still refuse it, for a run and a fork (whose
        # own rows begin after its shared prefix), and leave no lease of it.
        me, other = connect(), connect()
        events = approved_run("t")
        other.append("run", events[:3], 0)
        other.append("fork", [*events[:2], RunForked(parent_run_id="run", parent_seq=2)], 0)
        for run_id, actual in (("run", 3), ("fork", 3)):
            with pytest.raises(ConcurrencyError) as caught:
                me.append(run_id, events[:1], 0)
            assert (caught.value.expected_seq, caught.value.actual_seq) == (0, actual)
            me2 = connect()  # a writer that has not even seen the refusal
            with pytest.raises(ConcurrencyError):
                me2.acquire_lease(run_id, "host-b:2", 30, first=events[:1])
            assert me.lease(run_id) is None and me.last_seq(run_id) == actual
            with pytest.raises(ConcurrencyError):
                connect().append_all([("new", events[:1], 0), (run_id, events[:1], 0)])
        assert me.read("new") == [] and me.get_run("run").last_seq == 3
        # A lease this writer holds, and a run it knows, taken over by another writer: fenced out.
        lease = me.acquire_lease("mine", "host-a:1", 30, first=events[:1])
        assert me.append("mine", events[1:3], 1, lease=lease) == 3
        fresh = other.acquire_lease("mine", "host-b:2", 30, take_over=lease.token)
        draft = DraftReady(iteration=1, draft="a draft no event holds yet\n" * 20, call_id="draft/1")
        for release in (False, True):
            with pytest.raises(LeaseLost, match="now held by host-b:2"):
                me.append("mine", [*events[3:5], draft], 3, lease=lease, release=release)
        assert me.last_seq("mine") == 3 and me.lease("mine") == fresh
        assert other.append("mine", events[3:5], 3, lease=fresh) == 5
        # The refused batch's text was stored in a transaction rolled back: stored again.
        for run_id in ("later", "again"):
            assert me.append(run_id, [draft], 0) == 1
        me.vacuum()
        assert me.events("later") == me.events("again") == other.events("later") == [draft]

    def test_a_stale_append_recorded_or_append_all_gets_concurrency_error(self, connect):
        # As for append: the head ``me`` keeps of a run it appended to (not read again) is out of
        # date once another writer appended; the key (run_id, seq) is then taken, and that is a
        # ConcurrencyError (agentlog copy into a log others append to, agentlog import).
        me, other = connect(), connect()
        events = approved_run("t")
        other.append("source", events[:5], 0)
        recorded = other.read("source")
        assert me.append("run", events[:1], 0) == 1
        assert other.append("run", events[1:2], 1) == 2
        with pytest.raises(ConcurrencyError) as caught:
            me.append_recorded("run", recorded[1:2], 1)
        assert (caught.value.run_id, caught.value.expected_seq, caught.value.actual_seq) == ("run", 1, 2)
        assert me.last_seq("run") == 2
        assert me.append_recorded("run", recorded[2:3], 2) == 3  # re-read, then it may go on
        assert other.append("run", events[3:4], 3) == 4
        with pytest.raises(ConcurrencyError) as caught:  # nothing at all is appended
            me.append_all([("new", events[:1], 0), ("run", events[4:5], 3)])
        assert (caught.value.run_id, caught.value.expected_seq, caught.value.actual_seq) == ("run", 3, 4)
        assert me.read("new") == [] and me.last_seq("run") == 4
        assert me.append_all([("new", events[:1], 0), ("run", events[4:5], 4)]) == [1, 5]
        assert me.events("run") == events[:5] and me.read("run")[2].recorded_at == recorded[2].recorded_at
        assert me.get_run("run").last_seq == 5

    def test_the_last_append_under_a_lease_gives_it_up_in_its_transaction(self, store):
        events = approved_run("t")
        lease = store.acquire_lease("run", "host-a:1", 30)
        assert store.append("run", events[:16], 0, lease=lease) == 16
        assert store.append("run", events[16:], 16, lease=lease, release=True) == 17
        assert store.lease("run") is None
        with pytest.raises(ValueError, match="pass lease"):
            store.append("other", events[:1], 0, release=True)
        # A writer whose lease was taken over gives up nothing, and appends nothing.
        stale = store.acquire_lease("run-b", "host-a:1", 30)
        store.append("run-b", events[:1], 0, lease=stale)
        fresh = store.acquire_lease("run-b", "host-b:2", 30, take_over=stale.token)
        with pytest.raises(LeaseLost):
            store.append("run-b", events[1:3], 1, lease=stale, release=True)
        assert store.lease("run-b") == fresh and store.last_seq("run-b") == 1

    def test_a_new_run_takes_its_first_events_and_its_lease_in_one_transaction(self, store):
        lease = store.acquire_lease("run", "host-a:1", 30, first=approved_run("t")[:3])
        assert store.lease("run") == lease and store.last_seq("run") == 3
        assert store.get_run("run").task == "t"
        assert store.append("run", approved_run("t")[3:5], 3, lease=lease) == 5
        # Refused, either way: neither the events nor the lease are taken.
        with pytest.raises(LeaseHeld):
            store.acquire_lease("run", "host-b:2", 30, first=approved_run("u")[:1])
        assert store.last_seq("run") == 5 and store.lease("run") == lease
        store.append("old", approved_run("o")[:1], 0)
        with pytest.raises(ConcurrencyError):
            store.acquire_lease("old", "host-b:2", 30, first=approved_run("o")[:1])
        assert store.lease("old") is None and store.last_seq("old") == 1

    def test_append_all_appends_every_run_or_none(self, store):
        store.append("old", approved_run("t")[:2], 0)
        assert store.append_all([("a", approved_run("a")[:3], 0), ("old", approved_run("t")[2:4], 2)]) == [3, 4]
        before = {run_id: store.read(run_id) for run_id in ("a", "old")}
        with pytest.raises(ConcurrencyError) as caught:  # "old" is not new: nothing at all is appended
            store.append_all([("b", approved_run("b")[:3], 0), ("old", approved_run("t")[:1], 0)])
        assert caught.value.run_id == "old"
        assert store.read("b") == [] and {run_id: store.read(run_id) for run_id in ("a", "old")} == before
        with pytest.raises(RunNotFound):
            store.get_run("b")
        assert store.append("b", approved_run("b")[:1], 0) == 1  # no transaction was left open


class TestSQLiteStore(SyncStoreContract):
    face = "sync"


class TestPostgresStore(SyncStoreContract):
    """The same contract against a real PostgreSQL database (a fresh one per test)."""

    face = "postgres"
    maintenance = "postgres"
    impatient: dict = {}

    @pytest.fixture
    def path(self, pg_url: str) -> str:
        return pg_url

    def raw(self, path) -> RawConnection:
        return RawPostgres(path)


class TestAsyncSQLiteStore(StoreContract):
    face = "async"

    def test_concurrent_tasks_append_through_one_store(self, path):
        async def main():
            async with await AsyncSQLiteStore.open(path) as store:
                seqs = await asyncio.gather(store.append("a", [started("a")], 0), store.append("b", [started("b")], 0))
                return seqs, await store.last_seq("a"), await store.last_seq("b")

        assert asyncio.run(main()) == ([1, 1], 1, 1)


class TestReadOnlyAsyncStore:
    """The viewer's face: ``AsyncSQLiteStore.open(read_only=True)`` reads all a writer wrote, and never writes."""

    @pytest.fixture
    def written(self, tmp_path: Path):
        path = tmp_path / "log.db"
        writer = SQLiteStore(path)
        build_runs(writer)
        yield path, writer
        writer.close()

    @pytest.fixture
    def reader(self, written):
        reader = AsyncFace(written[0], read_only=True)
        yield reader
        reader.close()

    def test_reads_what_the_writer_wrote(self, written, reader):
        _, writer = written
        for run_id in (FINISHED, FORK, FORK2, REREVIEW, FAILED, RESUMED):
            assert reader.read(run_id) == writer.read(run_id)
            assert reader.get_run(run_id) == writer.get_run(run_id)
            assert reader.lineage(run_id) == writer.lineage(run_id)
            assert reader.children(run_id) == writer.children(run_id)
        assert reader.list_runs(text="wal", limit=3) == writer.list_runs(text="wal", limit=3)
        assert reader.count_runs(status="running") == writer.count_runs(status="running") == 3
        assert reader.resolve_run_id(FORK[:5]) == FORK
        assert reader.find_answers("hash:research/1:researcher") == writer.find_answers("hash:research/1:researcher")

    def test_sees_appends_committed_after_it_opened(self, written, reader):
        _, writer = written
        writer.append(FAILED, [RunResumed(previous_seq=4)], 4)
        assert reader.last_seq(FAILED) == 5
        assert reader.get_run(FAILED).status == "running"

    def test_refuses_to_append(self, written, reader):
        path, writer = written
        before = writer.read(FORK)
        with pytest.raises(StoreError, match="readonly"):
            reader.append(FORK, [RunResumed(previous_seq=18)], 18)
        assert writer.read(FORK) == before
        assert reader.last_seq(FORK) == 18
