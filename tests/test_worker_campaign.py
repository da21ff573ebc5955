"""The workers' crash campaign: three workers share a log (an SQLite file; a PostgreSQL
database), and are SIGKILLed at random moments and restarted while they drive a batch. Every
run finishes, with no gap in any stream, and no request whose answer was in the log reaches
the server again (the seed is in the header)."""

from __future__ import annotations

import signal
import time

import pytest

from agentlog.store import open_store
from tests.fake_openai import FakeOpenAIServer
from tests.test_worker import Workers, check_log, enqueue, env_for, never_resent_after_answer, wait_for
from tests.test_worker import target, workers  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

RUNS, WORKERS, CONCURRENCY, MAX_KILLS = 24, 3, 2, 8


def all_ended(db: str, run_ids: list[str]) -> bool:
    with open_store(db) as store:
        return all(store.get_run(r).status in ("finished", "failed") for r in run_ids)


def test_three_workers_killed_at_random_finish_every_run(target, workers, rng):
    db = target
    run_ids = enqueue(db, RUNS)
    with FakeOpenAIServer(delay=0.1) as server:
        pool: Workers = workers(db, env_for(server, AGENTLOG_LEASE_SECONDS="1"))
        live = [pool.start("--concurrency", str(CONCURRENCY)) for _ in range(WORKERS)]
        kills = 0
        while kills < MAX_KILLS and not all_ended(db, run_ids):
            time.sleep(rng.uniform(0.3, 1.0))
            victim = rng.randrange(WORKERS)
            live[victim].send_signal(signal.SIGKILL)
            live[victim].wait(timeout=10)
            kills += 1
            live[victim] = pool.start("--concurrency", str(CONCURRENCY))
        wait_for(lambda: all_ended(db, run_ids), 40)
        for proc in live:
            # A worker restarted just now may still be importing: SIGTERM before its
            # handler is installed would kill it (-15) rather than test the hand-back.
            pool.wait_started(proc)
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            assert proc.wait(timeout=30) == 0, Workers.stderr(proc)
        assert kills >= 3, "the batch ended before the campaign could kill"
        stored = check_log(db, run_ids)
        repeated = never_resent_after_answer(server, db, run_ids)
    # At most the calls in flight at each kill were asked again.
    assert repeated <= kills * CONCURRENCY
    assert all(any(s.type == "RunClaimed" for s in events) for events in stored.values())
