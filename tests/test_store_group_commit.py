"""Group commit: concurrent appends share transactions but keep every per-run promise."""

from __future__ import annotations

import threading

import pytest

from agentlog.events import LLMCallFailed, RunStarted
from agentlog.actors import agent_configs
from agentlog.store import ConcurrencyError, LeaseHeld, SQLiteStore


def _started(task: str) -> RunStarted:
    return RunStarted(task=task, pipeline="content", agents=agent_configs("offline"), max_iterations=2, threshold=8)


def _failed(n: int) -> LLMCallFailed:
    return LLMCallFailed(call_id="research/1", agent="researcher", attempt=n, error_kind="timeout",
                         message="slow", retryable=True)


def test_concurrent_runs_each_get_a_gapless_stream_and_index_row(tmp_path):
    store = SQLiteStore(tmp_path / "log.db")
    runs, per_run = 24, 30
    barrier = threading.Barrier(runs)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        run_id = f"run-{n:02d}"
        try:
            barrier.wait()
            seq = store.append(run_id, [_started(f"task {n}")], 0)
            for i in range(per_run):
                seq = store.append(run_id, [_failed(i + 1)] * (1 + i % 3), seq)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = 1 + sum(1 + i % 3 for i in range(per_run))
    for n in range(runs):
        stored = store.read(f"run-{n:02d}")
        assert [s.seq for s in stored] == list(range(1, expected + 1))
        assert stored[0].event.task == f"task {n}"
        assert store.get_run(f"run-{n:02d}").last_seq == expected
    store.close()


def test_racing_writers_on_one_run_exactly_one_wins(tmp_path):
    store = SQLiteStore(tmp_path / "log.db")
    store.append("r", [_started("t")], 0)
    writers = 16
    barrier = threading.Barrier(writers)
    outcomes: list[object] = []
    lock = threading.Lock()

    def racer(n: int) -> None:
        barrier.wait()
        try:
            result: object = store.append("r", [_failed(n + 1)], 1)
        except ConcurrencyError as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(2) == 1
    stale = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(stale) == writers - 1 and all(e.expected_seq == 1 for e in stale)
    assert store.last_seq("r") == 2
    store.close()


def test_a_batch_that_does_not_encode_fails_alone(tmp_path):
    store = SQLiteStore(tmp_path / "log.db")
    with pytest.raises(TypeError, match="not an agentlog event"):
        store.append("bad", [object()], 0)  # type: ignore[list-item]
    assert store.append("good", [_started("t")], 0) == 1
    assert store.last_seq("bad") == 0
    store.close()


def test_new_runs_claiming_their_lease_commit_in_groups_each_with_its_own_outcome(tmp_path):
    # A new run's first events and its lease (acquire_lease(first=...)) queue like any batch:
    # a refused claim or a stale batch fails its writer alone, and takes no lease.
    store = SQLiteStore(tmp_path / "log.db")
    store.acquire_lease("held", "host-a:1", 30)  # a live lease on a run id with no events yet
    store.append("exists", [_started("old")], 0)
    runs = 16
    barrier = threading.Barrier(runs + 3)
    outcomes: dict[str, object] = {}

    def claim(run_id: str) -> None:
        barrier.wait()
        try:
            outcomes[run_id] = store.acquire_lease(run_id, "host-b:2", 30, first=[_started(run_id)])
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes[run_id] = exc

    def append(run_id: str) -> None:
        barrier.wait()
        outcomes["append"] = store.append(run_id, [_failed(1)], 1)

    threads = [threading.Thread(target=claim, args=(f"new-{n:02d}",)) for n in range(runs)]
    threads += [threading.Thread(target=claim, args=("held",)), threading.Thread(target=claim, args=("exists",)),
                threading.Thread(target=append, args=("exists",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n in range(runs):
        lease = outcomes[f"new-{n:02d}"]
        assert store.lease(f"new-{n:02d}") == lease and store.last_seq(f"new-{n:02d}") == 1
    assert isinstance(outcomes["held"], LeaseHeld) and store.last_seq("held") == 0
    assert store.lease("held").owner == "host-a:1"
    assert isinstance(outcomes["exists"], ConcurrencyError) and store.lease("exists") is None
    assert outcomes["append"] == 2 and [s.seq for s in store.read("exists")] == [1, 2]
    store.close()


def test_an_interrupted_append_each_leaves_nothing_for_a_later_group_to_commit(tmp_path, monkeypatch):
    """``append_each``'s batches are its caller's: interrupted (Ctrl-C in a worker's claim),
    they fail with it; they are not put in the writers' queue, where the next group's leader
    would commit them behind the caller's back and then find no writer to wake."""
    store = SQLiteStore(tmp_path / "log.db", create=True)
    leases = [store.acquire_lease(run_id, "w", 30, first=[_started(run_id)]) for run_id in ("r1", "r2")]
    real = SQLiteStore._write_group

    def interrupted(self, db, group):
        monkeypatch.setattr(SQLiteStore, "_write_group", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(SQLiteStore, "_write_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.append_each([(lease.run_id, [_failed(1)], 1, lease) for lease in leases])
    assert store.append("r3", [_started("r3")], 0) == 1  # the next writer leads and returns
    assert [s.type for s in store.read("r2")] == ["RunStarted"]  # nothing committed behind the caller's back
    # Two writers at once still take turns: the lead is handed on.
    done = []
    threads = [threading.Thread(target=lambda r=r: done.append(store.append(r, [_started(r)], 0))) for r in ("r4", "r5")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert done == [1, 1]
    assert store.append_each([(lease.run_id, [_failed(1)], 1, lease) for lease in leases]) == [2, 2]
    store.close()
