"""The lease on a live run: one driver at a time, a dead driver's run taken over, a stale
driver fenced off. Real CLI processes, a real SQLite file, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from contextlib import closing

import pytest

from agentlog.actors import agent_configs, drive, start_run
from agentlog.actors.lease import acquire, owner_name
from agentlog.events import LLMCallRequested, RunStarted
from agentlog.models import Endpoint, Gateway
from agentlog.store import LeaseLost, SQLiteStore
from tests.conftest import SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_cli import TASK, agentlog
from tests.test_crash import kill_when, log_rows, start


class Gate:
    """A server responder that holds every request until opened."""

    def __init__(self) -> None:
        self.asked, self.open = threading.Event(), threading.Event()

    def __call__(self, body: dict) -> dict:
        self.asked.set()
        self.open.wait(20)
        from agentlog.models import offline

        done = offline.complete(body)
        return {"content": done.content}


@pytest.fixture
def gate():
    gate = Gate()
    yield gate
    gate.open.set()


def test_resume_of_a_live_run_exits_3_naming_the_holder_then_proceeds_once_it_is_killed(db_path, gate):
    db = str(db_path)
    with FakeOpenAIServer(responder=gate) as server:
        env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
        proc = start(["run", TASK, "--model", "gpt-4o", "--db", db, "-q"], env)
        try:
            assert gate.asked.wait(20)
            with closing(sqlite3.connect(db)) as conn:
                run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
            refused = agentlog("resume", run_id, "--db", db, "-q", env=env)
            assert refused.returncode == 3, refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("agentlog: "), refused.stderr
            assert f"driven by {socket.gethostname()}:{proc.pid}" in lines[0] and "lease expires at" in lines[0]
            assert server.count() == 1  # the refused resumer sent nothing
        finally:
            assert kill_when(proc, lambda: True)
            proc.stdout.close(), proc.stderr.close()
        gate.open.set()
        # Its holder is gone (same host, no such process): taken over at once, no expiry to wait for.
        resumed = agentlog("resume", run_id, "--db", db, "-q", env=env)
        assert resumed.returncode == 0, resumed.stderr
    with SQLiteStore(db) as store:
        assert store.lease(run_id) is None  # released when the run ended
        assert store.get_run(run_id).status == "finished"


def test_another_hosts_lease_is_waited_out_then_resume_proceeds(db_path):
    db = str(db_path)
    with SQLiteStore(db) as store:
        store.append("r1", [RunStarted(task=TASK, pipeline="content", agents=agent_configs("offline"),
                                       max_iterations=2, threshold=8)], 0)
        held = store.acquire_lease("r1", "elsewhere:4242", 60)
    refused = agentlog("resume", "r1", "--db", db, "-q")
    assert refused.returncode == 3 and "driven by elsewhere:4242" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    with SQLiteStore(db) as store:  # its last heartbeat, then the other machine goes quiet
        held = store.renew_lease(held, 0.5)
    deadline = time.monotonic() + 10
    while held.live(time.time()) and time.monotonic() < deadline:
        time.sleep(0.05)
    resumed = agentlog("resume", "r1", "--db", db, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert [t for _, t, _ in log_rows(db)][-1] == "RunFinished"


def test_a_bad_lease_time_is_one_line_and_exit_2(db_path):
    result = agentlog("run", TASK, "--model", "offline", "--db", str(db_path), "-q",
                      env=cli_env(AGENTLOG_LEASE_SECONDS="soon"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "agentlog: AGENTLOG_LEASE_SECONDS must be a number of seconds, not 'soon'"]
    assert not log_rows(str(db_path))  # refused before anything was recorded


def gateway_for(server: FakeOpenAIServer) -> Gateway:
    return Gateway(Endpoint(base_url=server.base_url, api_key=SECRET), timeout=30)


def test_a_stale_owner_records_nothing_and_sends_nothing_after_a_takeover(store, gate):
    with FakeOpenAIServer(responder=gate) as server:
        gateway = gateway_for(server)
        try:
            handle = start_run(store, TASK, agents=agent_configs("gpt-4o"), gateway=gateway)
            assert gate.asked.wait(10)
            mine = store.lease(handle.run_id)
            assert mine.owner == owner_name()
            before = store.last_seq(handle.run_id)
            store.acquire_lease(handle.run_id, "elsewhere:7", 30, take_over=mine.token)
            gate.open.set()  # the answer comes back to a process that no longer owns the run
            with pytest.raises(LeaseLost, match="now held by elsewhere:7"):
                handle.wait(timeout=10)
        finally:
            gateway.close()
        assert server.count() == 1
    assert store.last_seq(handle.run_id) == before
    assert store.lease(handle.run_id).owner == "elsewhere:7"  # the new owner's lease is untouched


def test_the_heartbeat_keeps_a_lease_live_and_notices_a_takeover(store, gate):
    with FakeOpenAIServer(responder=gate) as server:
        gateway = gateway_for(server)
        try:
            handle = start_run(store, TASK, agents=agent_configs("gpt-4o"), gateway=gateway, lease_seconds=0.3)
            assert gate.asked.wait(10)
            first = store.lease(handle.run_id)
            deadline = time.monotonic() + 10
            while store.lease(handle.run_id).expires_at < first.expires_at + 0.5 and time.monotonic() < deadline:
                time.sleep(0.02)
            renewed = store.lease(handle.run_id)
            assert renewed.token == first.token and renewed.expires_at >= first.expires_at + 0.5
            store.acquire_lease(handle.run_id, "elsewhere:8", 30, take_over=renewed.token)
            # The call is still out: the heartbeat, not an append, tells the run to stop.
            with pytest.raises(LeaseLost):
                handle.wait(timeout=10)
            assert not gate.open.is_set()
        finally:
            gate.open.set()
            gateway.close()
        assert server.count() == 1


def test_a_run_releases_its_lease_when_it_ends(store):
    summary = start_run(store, TASK, agents=agent_configs("offline")).wait(timeout=30)
    assert summary.status == "finished"
    assert store.lease(summary.run_id) is None


def test_a_log_handed_to_drive_comes_with_the_lease_it_was_read_under(store):
    """``drive(log=...)`` starts a run from a log its caller has read (a worker's claims). Read
    without the lease, it may miss what another process appended since: the run would fold it
    and send a call whose answer is already in the log. Refused; with the lease, taken."""
    summary = start_run(store, TASK, agents=agent_configs("offline")).wait(timeout=30)
    full = store.read(summary.run_id)
    # The log as a process might have read it while the run went on: up to an unanswered intent.
    stale = full[:next(i for i, s in enumerate(full) if isinstance(s.event, LLMCallRequested) and i > 3) + 1]
    with pytest.raises(ValueError, match="lease"):
        drive(store, summary.run_id, log=stale)
    assert store.lease(summary.run_id) is None  # refused before taking it
    lease = acquire(store, summary.run_id, 30.0)
    again = drive(store, summary.run_id, lease=lease, log=store.read(summary.run_id)).wait(timeout=30)
    assert again.status == "finished" and store.last_seq(summary.run_id) == full[-1].seq
