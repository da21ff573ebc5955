"""Real crashes: `agentlog run` in a subprocess, killed with SIGKILL, then resumed.

The server counts requests. After each kill and resume: the run completes, the stream has
no gap or duplicate, no request whose answer was in the log is sent again, and at most
the call in flight at the kill is repeated.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from contextlib import closing

import pytest

from agentlog.events import request_hash
from tests.conftest import PYTHON, SECRET, cli_env, logged_events
from tests.fake_openai import FakeOpenAIServer

TASK = "Explain how Kubernetes horizontal pod autoscaling works"
pytestmark = pytest.mark.slow


def log_rows(db: str) -> list[tuple[int, str, dict]]:
    return [(seq, t, data) for _run, seq, t, data in logged_events(db)]


def wire_hash(body: dict) -> str:
    """The request hash of what the server received (the request dict minus wire-only keys)."""
    return request_hash({k: body[k] for k in ("model", "messages", "temperature", "response_format", "max_tokens")
                         if k in body})


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "agentlog.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 30.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("kill point never reached")


def kill_points():
    """(name, predicate factory): after the n-th event, or while the n-th request is at the server."""
    # Not after 21 or 22: the last answer, its ReviewScored and RunFinished are one transaction,
    # so no moment lies between them (a kill there could only race the process's exit).
    points = [(f"after-event-{n}", "event", n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 17, 19, 20)]
    points += [(f"mid-call-{n}", "request", n) for n in (1, 2, 3, 4, 5, 6, 7)]
    return points


@pytest.fixture(scope="module")
def slow_server():
    # Each answer takes 80 ms, so a kill can land while a call is at the server.
    with FakeOpenAIServer(delay=0.08) as server:
        yield server


@pytest.mark.parametrize("name,kind,n", kill_points(), ids=[p[0] for p in kill_points()])
def test_sigkill_then_resume(tmp_path, slow_server, name, kind, n):
    server = slow_server
    db = str(tmp_path / "log.db")
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    start_count = server.count()
    proc = start(["run", TASK, "--model", "gpt-4o", "--db", db, "-q", "--retries", "2"], env)
    if kind == "event":
        killed = kill_when(proc, lambda: len(log_rows(db)) >= n)
    else:
        killed = kill_when(proc, lambda: server.count() - start_count >= n)
    err = "" if killed else proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    assert killed, f"the run finished before {name}: {err}"

    before = log_rows(db)
    answered = {d["request_hash"] for _, t, d in before if t == "LLMCallAnswered"}
    requested = {d["request_hash"] for _, t, d in before if t == "LLMCallRequested"}
    with closing(sqlite3.connect(db)) as conn:
        run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
    # The resume asks a server of its own: a request the killed process sent just before
    # its death can still be read by the first server after this point, and would pass
    # for one the resume sent (the answers are the same: the offline model's, by request).
    with FakeOpenAIServer(delay=0.08) as resume_server:
        resumed = subprocess.run([PYTHON, "-m", "agentlog.cli", "resume", run_id, "--db", db, "-q"],
                                 env={**env, "OPENAI_BASE_URL": resume_server.base_url},
                                 capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr

    after = log_rows(db)
    assert [seq for seq, _, _ in after] == list(range(1, len(after) + 1))  # no gap, no duplicate
    assert after[: len(before)] == before  # nothing recorded was changed
    assert after[-1][1] == "RunFinished" and after[-1][2]["reason"] == "approved"
    # Requests since the kill: none had an answer in the log; only the in-flight one repeats.
    resent = [wire_hash(r["body"]) for r in resume_server.requests]
    assert resent  # every kill point leaves at least the last call to make
    assert not set(resent) & answered
    assert len(set(resent) & requested) <= 1
    assert len(resent) == len(set(resent))
    # Every call of the whole run was answered exactly once in the log.
    calls = [d["call_id"] for _, t, d in after if t == "LLMCallAnswered"]
    assert len(calls) == len(set(calls)) == 7
    with open(db, "rb") as fh:
        assert SECRET.encode() not in fh.read()
