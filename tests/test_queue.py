"""The run queue in the store: what is claimable, in which order, and that a claim is atomic.

Real logs only, on both backends: an SQLite file in ``tmp_path`` and a database of the
test PostgreSQL cluster; several store connections (as several worker processes would
have) claiming at once from real threads lined up on a barrier.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agentlog.actors import agent_configs, enqueue_run
from agentlog.events import (
    ApprovalRequested,
    RunClaimed,
    RunFailed,
    RunFinished,
    RunForked,
    RunStarted,
)
from agentlog.replay import enqueue_fork
from agentlog.store import LeaseLost, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> str:
    """A new log: an SQLite file, or an empty database of the test cluster."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "log.db")


@pytest.fixture
def open_log(target):
    opened = []

    def make():
        opened.append(open_store(target))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def queue(store, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(enqueue_run(store, f"queued task {i}", agents=agent_configs("offline")))
        time.sleep(0.002)  # distinct enqueue times: the order is the queue's
    return ids


def test_claims_take_the_oldest_queued_run_with_a_new_lease(open_log):
    store = open_log()
    assert store.claim_run("w:1", 30) is None  # an empty queue
    ids = queue(store, 3)
    assert store.get_run(ids[0]).status == "queued"
    claimed = [store.claim_run("w:1", 30) for _ in range(3)]
    assert [c.run_id for c in claimed] == ids
    assert all(c.owner == "w:1" and c.expires_at > time.time() + 20 for c in claimed)
    assert store.claim_run("w:1", 30) is None  # every one is held
    assert store.lease(ids[0]).token == claimed[0].token


def test_a_batch_claim_takes_the_oldest_runs_with_their_index_rows_and_each_start_is_fenced(open_log):
    store = open_log()
    ids = queue(store, 5)
    claims = store.claim_runs("w:1", 30, 3)
    assert [lease.run_id for lease, _ in claims] == ids[:3]
    assert all(run.run_id == lease.run_id and run.status == "queued" for lease, run in claims)
    assert [lease.run_id for lease, _ in store.claim_runs("w:2", 30, 10)] == ids[3:]  # the rest, no more
    assert store.claim_runs("w:3", 30, 10) == []
    # One of the batch's leases taken over meanwhile: its RunClaimed is fenced out, the others commit.
    (a, run_a), (b, run_b), (c, run_c) = claims
    taken = store.acquire_lease(b.run_id, "w:resumer", 30, take_over=b.token)
    results = store.append_each([(lease.run_id, [RunClaimed(worker="w:1", previous_seq=run.last_seq)], run.last_seq,
                                  lease) for lease, run in claims])
    assert results[0] == run_a.last_seq + 1 and results[2] == run_c.last_seq + 1
    assert isinstance(results[1], LeaseLost)
    assert [store.get_run(r).status for r in (a.run_id, b.run_id, c.run_id)] == ["running", "queued", "running"]
    assert store.read(b.run_id)[-1].type != "RunClaimed" and store.lease(b.run_id).token == taken.token


def test_a_released_or_expired_lease_makes_a_run_claimable_again_with_a_higher_token(open_log):
    store = open_log()
    [run_id] = queue(store, 1)
    first = store.claim_run("w:1", 30)
    store.release_lease(first)
    second = store.claim_run("w:2", 0.2)
    assert second.run_id == run_id and second.token > first.token
    assert store.claim_run("w:3", 30) is None  # live
    time.sleep(0.3)
    third = store.claim_run("w:3", 30)
    assert third.run_id == run_id and third.token > second.token
    with pytest.raises(LeaseLost):  # the expired holder is fenced out
        store.append(run_id, [RunClaimed(worker="w:2", previous_seq=2)], 2, lease=second)
    store.append(run_id, [RunClaimed(worker="w:3", previous_seq=2)], 2, lease=third)
    assert store.get_run(run_id).status == "running"


def test_a_run_leaves_the_queue_with_its_last_event_and_a_waiting_run_is_not_claimable(open_log):
    store = open_log()
    done, failed, waiting = queue(store, 3)
    for run_id, last in ((done, RunFinished(reason="approved", iterations=1, score=9)),
                         (failed, RunFailed(reason="gave up")),
                         (waiting, ApprovalRequested(iteration=1, point="final"))):
        store.append(run_id, [last], store.last_seq(run_id))
    assert store.queued_runs() == [waiting]
    assert store.get_run(waiting).status == "waiting"
    assert store.claim_run("w:1", 30) is None


def test_runs_not_queued_are_never_claimed_and_a_fork_is_queued_only_when_asked(open_log):
    store = open_log()
    store.append("plain", [RunStarted(task="t", pipeline="content", agents=agent_configs("offline"),
                                      max_iterations=1, threshold=8)], 0)
    [parent] = queue(store, 1)
    lease = store.claim_run("w:1", 30)
    store.append(parent, [RunClaimed(worker="w:1", previous_seq=2)], 2, lease=lease)
    # A fork copies its parent's RunQueued; the copy does not queue the fork.
    store.append("fork", [*store.events(parent, 0, 3), RunForked(parent_run_id=parent, parent_seq=3)], 0)
    assert store.get_run("fork").status == "running"
    queued_fork = enqueue_fork(store, parent, 3)
    assert store.queued_runs() == [parent, queued_fork]
    assert store.get_run(queued_fork).status == "queued"
    assert store.claim_run("w:2", 30).run_id == queued_fork  # the parent is held, "plain" and "fork" never queued
    assert store.claim_run("w:2", 30) is None


def test_rebuild_index_rebuilds_the_queue_from_the_events(open_log):
    store = open_log()
    ids = queue(store, 3)
    store.append(ids[1], [RunFinished(reason="approved", iterations=1, score=9)], 2)
    store.rebuild_index()
    assert store.queued_runs() == [ids[0], ids[2]]
    assert store.get_run(ids[0]).status == "queued"


@pytest.mark.parametrize("batch", [1, 5])
def test_workers_claiming_at_once_each_get_a_different_run(open_log, batch):
    ids = queue(open_log(), 24)
    claimants = [open_log() for _ in range(6)]  # one connection each, as separate processes have
    start = threading.Barrier(len(claimants))

    def claim_all(store) -> list[str]:
        start.wait(timeout=10)
        got = []
        while claims := store.claim_runs(f"w:{id(store)}", 30, batch):
            got.extend(lease.run_id for lease, _ in claims)
        return got

    with ThreadPoolExecutor(len(claimants)) as pool:
        results = list(pool.map(claim_all, claimants))
    everything = [r for got in results for r in got]
    assert sorted(everything) == sorted(ids)  # every run claimed once, none twice


def test_a_worker_stopped_while_claiming_starts_nothing_more(open_log):
    """A worker claims as many runs as it has room for in one go; stopped (SIGTERM) as the
    first of them starts, it starts none of the others: their leases are released at once."""
    from agentlog.worker import Worker

    store = open_log()
    ids = queue(store, 5)
    worker: Worker

    def say(line: str) -> None:
        if " claimed " in line:
            worker.stop()  # SIGTERM as the first run is started, while two more are claimed

    worker = Worker(store, concurrency=3, say=say, poll=0.05)
    stats = worker.run(idle_exit=0.5)
    assert stats.claimed == 3 and stats.handed_back >= 2
    assert [store.get_run(r).status for r in ids[3:]] == ["queued", "queued"]  # beyond its room: never claimed
    claimable = {lease.run_id for lease, _ in open_log().claim_runs("w:next", 30, 5)}
    assert set(ids[1:]) <= claimable  # the next worker takes them at once
