"""PostgreSQL going away mid-run: the run stops with one line and nothing recorded is lost;
once the server is back, `agentlog resume` finishes it without repeating an answered call.

The cluster is this module's own (tests/postgres.py), since it is stopped and started again.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

import pytest

from agentlog.events import LLMCallAnswered
from agentlog.store import open_store
from tests.conftest import PYTHON, SECRET, cli_env
from tests.postgres import Cluster, running_cluster
from tests.fake_openai import FakeOpenAIServer
from tests.test_watch import TIMEOUT, GatedServer
from tests.test_worker import Workers, check_log, enqueue, env_for, never_resent_after_answer, wait_for
from tests.test_worker import workers  # noqa: F401 - fixture
from tests.test_worker_campaign import all_ended
from tests.web.builders import serving
from tests.web.conftest import fetch
from agentlog.web import create_app


@pytest.fixture(scope="module")
def cluster():
    yield from running_cluster()  # its own: these tests stop and start it


def pg_ctl(cluster: Cluster, *args: str) -> None:
    cluster._run(str(cluster.bindir / "pg_ctl"), "-D", str(cluster.dir / "data"), *args, timeout=90)


def start_again(cluster: Cluster) -> None:
    """The same server, on the same port and data, after a stop."""
    pg_ctl(cluster, "-l", str(cluster.dir / "server.log"), "-w", "-t", "60", "-o",
           f"-c unix_socket_directories={cluster.dir} -c listen_addresses=127.0.0.1 -p {cluster.port}", "start")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_run_stops_in_one_line_and_resume_finishes_it_without_repeating_a_call(cluster, mode):
    url = cluster.url(cluster.database())
    env = cli_env(OPENAI_API_KEY=SECRET)
    with GatedServer(at=3) as server:  # research and the first draft answered; the first review held
        writer = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "run", "failover", "--db", url, "--base-url",
                                   server.base_url, "--model", "fake"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert server.arrived.wait(TIMEOUT)
            pg_ctl(cluster, "-m", mode, "-w", "stop")
        finally:
            server.gate.set()
            out, err = writer.communicate(timeout=TIMEOUT)
        with_line = [line for line in err.splitlines() if line.startswith("agentlog: ")]
        assert writer.returncode == 2, err
        assert len(with_line) == 1 and "Traceback" not in err
        assert "went away" in with_line[0] and "agentlog resume" in with_line[0]
        assert cluster.password not in out + err
        run_id = with_line[0].split()[-1]
        sent_before = len(server.requests)

        start_again(cluster)
        with open_store(url, create=False, read_only=True) as store:  # what was recorded is there
            kept = store.read(run_id)
        answered = [s.event.call_id for s in kept if isinstance(s.event, LLMCallAnswered)]
        assert len(answered) == 2

        resumed = subprocess.run([PYTHON, "-m", "agentlog.cli", "resume", run_id, "--db", url, "--base-url",
                                  server.base_url, "-q"], env=env, capture_output=True, text=True, timeout=TIMEOUT * 2)
        assert resumed.returncode == 0, resumed.stderr
    with open_store(url, create=False, read_only=True) as store:
        events = store.read(run_id)
        assert store.get_run(run_id).status == "finished"
    assert [s.seq for s in events][:len(kept)] == [s.seq for s in kept]  # nothing recorded was lost
    calls = Counter(s.event.call_id for s in events if isinstance(s.event, LLMCallAnswered)
                    and s.event.reused_from is None)
    assert max(calls.values()) == 1
    # Every answered call was asked once, but the one in flight when the server went: twice.
    assert sent_before == 3 and len(server.requests) == len(calls) + 1


def test_a_worker_outlives_the_server_going_away_and_finishes_its_batch(cluster, workers):
    """A worker keeps going when PostgreSQL stops mid-batch: its runs in flight stop, it
    says so in one line each (no password), and once the server is back it (or its
    next poll) claims them again and finishes every run, no answered call asked again."""
    url = cluster.url(cluster.database())
    run_ids = enqueue(url, 4)
    with FakeOpenAIServer(delay=0.3) as server:
        pool = workers(url, env_for(server, AGENTLOG_LEASE_SECONDS="2"))
        proc = pool.start("--concurrency", "2")
        wait_for(lambda: server.count() >= 3, TIMEOUT)
        pg_ctl(cluster, "-m", "fast", "-w", "stop")
        time.sleep(1.0)  # the worker's calls come back to a log that is gone
        start_again(cluster)
        try:
            wait_for(lambda: all_ended(url, run_ids), TIMEOUT)
        except AssertionError:
            raise AssertionError(f"the batch did not finish: {Workers.stderr(proc)}") from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0, Workers.stderr(proc)
        err = Workers.stderr(proc)
        check_log(url, run_ids)
        never_resent_after_answer(server, url, run_ids)
    assert cluster.password not in err and "Traceback" not in err
    # One line an outage, not one a poll: the worker said the server was gone, then that it is back.
    gone = [line for line in err.splitlines() if line.startswith("could not claim a run")]
    assert len(gone) <= 1 and ("the log answers again" in err) == bool(gone), err


def test_the_viewer_says_the_log_is_unavailable_and_reads_again_once_the_server_is_back(cluster):
    url = cluster.url(cluster.database())
    run_ids = enqueue(url, 1)  # a log with one (queued) run to show
    with serving(create_app(url, read_only=True)) as viewer:
        status, _, body = fetch(viewer + "/")
        assert status == 200 and run_ids[0] in body
        pg_ctl(cluster, "-m", "fast", "-w", "stop")
        status, _, body = fetch(viewer + "/")
        assert status == 503 and "the log cannot be read now" in body
        assert cluster.password not in body and "Traceback" not in body
        start_again(cluster)
        status, _, body = fetch(viewer + f"/runs/{run_ids[0]}")
        assert status == 200 and run_ids[0] in body
