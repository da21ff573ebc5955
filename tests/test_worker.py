"""Workers in real subprocesses (`agentlog worker`) sharing one log, against a real HTTP server.

Runs are queued (`--queue`, or ``enqueue_run``), workers claim and drive them. Checked at
the server: no request whose answer was already in the log is ever sent again, whatever
happens to the workers (SIGTERM hands runs back, SIGKILL leaves them to lease expiry).
Each test runs on an SQLite file and on a database of the test PostgreSQL cluster.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from agentlog.actors import agent_configs, enqueue_run
from agentlog.store import open_store
from tests.conftest import PYTHON, SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_crash import wire_hash

CALLS_PER_RUN = 7  # research, then write and review three times (the fake server approves the third)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> str:
    """Where the log is (``--db``): an SQLite file, or an empty database of the test cluster."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "log.db")


def create(target: str) -> None:
    """Make the log (a worker never creates one)."""
    open_store(target).close()


def enqueue(db: str | Path, n: int, tag: str = "topic") -> list[str]:
    with open_store(db) as store:
        return [enqueue_run(store, f"Explain {tag} {i} of distributed logs", agents=agent_configs("gpt-4o"))
                for i in range(n)]


class Workers:
    """Worker subprocesses on one log, their stderr in files (read on failure)."""

    def __init__(self, tmp_path: Path, db: str, env: dict):
        self.tmp_path, self.db, self.env = tmp_path, db, env
        self.procs: list[subprocess.Popen] = []

    def start(self, *extra: str) -> subprocess.Popen:
        err = open(self.tmp_path / f"worker-{len(self.procs)}.err", "w+")
        proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "worker", "--db", self.db, "--poll", "0.05", *extra],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        proc.err = err  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def stderr(proc: subprocess.Popen) -> str:
        proc.err.seek(0)  # type: ignore[attr-defined]
        return proc.err.read()  # type: ignore[attr-defined]

    def wait_started(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        wait_for(lambda: "driving queued runs" in self.stderr(proc) or proc.poll() is not None, timeout)
        assert proc.poll() is None, self.stderr(proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.err.close()  # type: ignore[attr-defined]


@pytest.fixture
def workers(tmp_path):
    made: list[Workers] = []

    def make(db: str, env: dict) -> Workers:
        made.append(Workers(tmp_path, db, env))
        return made[-1]

    yield make
    for w in made:
        w.close()


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def env_for(server: FakeOpenAIServer, **extra: str) -> dict:
    return cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url, **extra)


def check_log(db: str, run_ids: list[str]) -> dict[str, list]:
    """Every run finished, with seqs 1..n and each call answered once; its stored events."""
    out = {}
    with open_store(db) as store:
        for run_id in run_ids:
            stored = store.read(run_id)
            assert [s.seq for s in stored] == list(range(1, len(stored) + 1)), run_id
            assert stored[-1].type == "RunFinished", (run_id, [s.type for s in stored])
            answered = [s.event.call_id for s in stored if s.type == "LLMCallAnswered"]
            assert len(answered) == len(set(answered)) == CALLS_PER_RUN, run_id
            assert store.get_run(run_id).status == "finished"
            intents = {s.event.call_id: s.event.request_hash for s in stored if s.type == "LLMCallRequested"}
            for s in stored:
                if s.type == "LLMCallAnswered":
                    # The request sent is the one whose intent is in the log (a takeover decides the same one).
                    assert s.event.request_hash == intents[s.event.call_id], (run_id, s.seq, s.event.call_id)
            out[run_id] = stored
        assert store.queued_runs() == []  # a run leaves the queue with its last event
    return out


def never_resent_after_answer(server: FakeOpenAIServer, db: str, run_ids: list[str]) -> int:
    """No request reached the server after its answer was in the log; returns how many were sent twice."""
    offset = time.time() - time.monotonic()  # the server stamps requests with this process's monotonic clock
    answered_at = {}
    with open_store(db) as store:
        for run_id in run_ids:
            for s in store.read(run_id):
                if s.type == "LLMCallAnswered":
                    answered_at[s.event.request_hash] = s.recorded_at
    sent = [(wire_hash(r["body"]), r["at"] + offset) for r in server.requests]
    for (digest, at), r in zip(sent, server.requests):
        assert digest in answered_at, ("sent, never answered in the log", r["body"]["model"],
                                       [m["content"][:80] for m in r["body"]["messages"]])
        assert at < answered_at[digest], "a call was sent again after its answer was in the log"
    hashes = [d for d, _ in sent]
    return len(hashes) - len(set(hashes))


def test_a_queued_run_is_driven_by_a_worker(target, workers):
    db = target
    with FakeOpenAIServer() as server:
        env = env_for(server)
        queued = subprocess.run([PYTHON, "-m", "agentlog.cli", "run", "Explain write-ahead logging", "--model",
                                 "gpt-4o", "--queue", "--db", db], env=env, capture_output=True, text=True, timeout=60)
        assert queued.returncode == 0, queued.stderr
        run_id = queued.stdout.strip()
        assert len(run_id) == 16 and server.count() == 0  # nothing is sent by the enqueuing process
        listed = subprocess.run([PYTHON, "-m", "agentlog.cli", "runs", "--status", "queued", "--db", db],
                                env=env, capture_output=True, text=True, timeout=60)
        assert run_id in listed.stdout and " queued " in listed.stdout

        proc = workers(db, env).start("--idle-exit", "0.5", "--concurrency", "2")
        assert proc.wait(timeout=60) == 0, Workers.stderr(proc)
        stderr = Workers.stderr(proc)
        assert f"run {run_id} claimed" in stderr and f"run {run_id} finished" in stderr
        stored = check_log(db, [run_id])[run_id]
        assert [s.type for s in stored[:3]] == ["RunStarted", "RunQueued", "RunClaimed"]
        assert server.count() == CALLS_PER_RUN
        assert never_resent_after_answer(server, db, [run_id]) == 0
    final = subprocess.run([PYTHON, "-m", "agentlog.cli", "runs", "--db", db], env=env, capture_output=True,
                           text=True, timeout=60)
    assert " finished " in final.stdout
    password = urllib.parse.urlsplit(db).password
    if password:  # a Postgres URL's password is in no output
        for text in (queued.stdout, queued.stderr, listed.stdout, listed.stderr, stderr, final.stdout, final.stderr):
            assert password not in text


def test_two_workers_share_one_log_and_drive_each_run_once(target, workers):
    db = target
    create(db)
    with FakeOpenAIServer(delay=0.02) as server:
        pool = workers(db, env_for(server))
        # Idle for 3 s after the batch, not 1: a worker idle since its start must still be
        # there when the batch is queued, which on a loaded machine took more than a second.
        procs = [pool.start("--idle-exit", "3", "--concurrency", "2") for _ in range(2)]
        for proc in procs:
            pool.wait_started(proc)
        run_ids = enqueue(db, 8)
        for proc in procs:
            assert proc.wait(timeout=60) == 0, Workers.stderr(proc)
        stored = check_log(db, run_ids)
        assert server.count() == 8 * CALLS_PER_RUN
        assert never_resent_after_answer(server, db, run_ids) == 0
    claims = {run_id: [s.event.worker for s in events if s.type == "RunClaimed"] for run_id, events in stored.items()}
    assert all(len(c) == 1 for c in claims.values()), claims  # no run driven twice
    assert len({c[0] for c in claims.values()}) == 2, claims  # both workers took a share


def test_sigterm_hands_back_at_a_step_boundary_and_another_worker_goes_on(target, workers):
    db = target
    run_ids = enqueue(db, 2)
    with FakeOpenAIServer(delay=0.4) as server:
        pool = workers(db, env_for(server))
        proc = pool.start("--concurrency", "2")
        wait_for(lambda: server.count() >= 2, 30)  # both runs have a call at the server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, Workers.stderr(proc)
        assert Workers.stderr(proc).count("handed back") >= 2
        sent_before = server.count()
        with open_store(db) as store:
            for run_id in run_ids:
                stored = store.read(run_id)
                requested = {s.event.call_id for s in stored if s.type == "LLMCallRequested"}
                answered = {s.event.call_id for s in stored if s.type == "LLMCallAnswered"}
                assert requested and requested == answered  # the calls in flight were recorded: no half call
                assert store.lease(run_id) is None  # released: claimable at once
                assert store.get_run(run_id).status == "running"
            assert store.queued_runs() == sorted(run_ids, key=run_ids.index)
        proc = pool.start("--idle-exit", "0.5", "--concurrency", "2")
        assert proc.wait(timeout=60) == 0, Workers.stderr(proc)
        assert sent_before < server.count() == 2 * CALLS_PER_RUN  # nothing was asked twice
        check_log(db, run_ids)
        assert never_resent_after_answer(server, db, run_ids) == 0


def test_ctrl_c_stops_an_idle_worker_with_130(tmp_path, workers):
    db = str(tmp_path / "log.db")
    create(db)
    pool = workers(db, cli_env())
    proc = pool.start()
    pool.wait_started(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "Traceback" not in Workers.stderr(proc)


def test_a_sigkilled_workers_runs_are_taken_over_once_its_leases_expire(target, workers):
    db = target
    run_ids = enqueue(db, 2)
    with FakeOpenAIServer(delay=0.15) as server:
        pool = workers(db, env_for(server, AGENTLOG_LEASE_SECONDS="1"))
        first = pool.start("--concurrency", "2")
        wait_for(lambda: server.count() >= 5, 30)  # mid-batch, calls in flight
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        second = pool.start("--idle-exit", "3", "--concurrency", "2")
        assert second.wait(timeout=60) == 0, Workers.stderr(second)
        stored = check_log(db, run_ids)
        repeated = never_resent_after_answer(server, db, run_ids)
        assert repeated <= 2  # at most the calls in flight at the kill, one per run
    for run_id, events in stored.items():
        claims = [s for s in events if s.type == "RunClaimed"]
        assert len(claims) == 2 and claims[0].event.worker != claims[1].event.worker
        # Taken over only once the dead worker's lease had expired (1 s after its last heartbeat).
        assert claims[1].recorded_at - claims[0].recorded_at >= 1.0
    assert time.monotonic() - killed_at < 30


def test_worker_bad_input_is_one_line(tmp_path):
    env = cli_env()
    missing = subprocess.run([PYTHON, "-m", "agentlog.cli", "worker", "--db", str(tmp_path / "none.db")],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("agentlog: no agentlog database")
    out = subprocess.run([PYTHON, "-m", "agentlog.cli", "run", "a task", "--model", "offline", "--queue", "--out",
                          str(tmp_path / "draft.md"), "--db", str(tmp_path / "log.db")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "--queue" in out.stderr
    assert not (tmp_path / "log.db").exists()
    bad = subprocess.run([PYTHON, "-m", "agentlog.cli", "worker", "--concurrency", "0", "--db",
                          str(tmp_path / "log.db")], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_worker_loads_the_model_client_before_it_claims_a_run(tmp_path):
    """The client library is imported as the worker starts (a long-lived process), not in the
    first run's first call, where every run claimed at once would wait for it."""
    db = tmp_path / "log.db"
    create(str(db))
    code = ("import sys; from agentlog.store import open_store; from agentlog.worker import Worker; "
            "assert 'openai' not in sys.modules, 'imported before the worker'; "
            f"Worker(open_store({str(db)!r})); print('openai' in sys.modules)")
    done = subprocess.run([PYTHON, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
