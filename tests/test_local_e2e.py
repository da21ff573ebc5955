"""A whole pipeline on a real language model (SmolLM2-135M on llama.cpp), then replayed offline.

Needs the `local` extra; CI installs it. Short generation limits keep it to a few minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from agentlog.models import local
from agentlog.replay import Overrides, build_view, fork
from agentlog.store import SQLiteStore
from tests.conftest import PYTHON, cli_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not local.local_available() and not os.environ.get("AGENTLOG_REQUIRE_LOCAL"),
                       reason=f"the local model is not installed: {local.LOCAL_EXTRA_HINT}"),
]

TASK = "Explain how Kubernetes horizontal pod autoscaling works"


def server_processes(tag: str) -> list[int]:
    """The llama.cpp servers started by this test's commands (their environment carries the
    test's tag): other servers on the machine, another test run's, are not this test's."""
    found = []
    marker = f"AGENTLOG_TEST_TAG={tag}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"llama_cpp.server" in cmdline and marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_pipeline_on_the_local_model_then_replay_asks_nothing_again(tmp_path, monkeypatch):
    assert local.local_available(), "AGENTLOG_REQUIRE_LOCAL is set but the local extra is missing"
    db = str(tmp_path / "log.db")
    tag = uuid.uuid4().hex
    result = subprocess.run(
        [PYTHON, "-m", "agentlog.cli", "run", TASK, "--db", db, "--max-iterations", "1", "--max-tokens", "400"],
        capture_output=True, text=True, env=cli_env(AGENTLOG_TEST_TAG=tag), timeout=900)
    assert "using the local model" in result.stderr  # no key, no base URL: the local model, said in one line
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # a draft written by the model
    assert server_processes(tag) == []  # the server is gone after the run

    with SQLiteStore(db, create=False) as store:
        [summary] = store.list_runs()
        view = build_view(summary.run_id, store.read(summary.run_id))
        assert view.status == "finished" and view.findings is not None and len(view.drafts) == 1
        assert {a.model for a in view.agents.values()} == {"local"} and view.live_tokens > 0
        answered = [c for c in view.calls if c.status == "answered"]
        assert answered and all(c.latency_ms > 0 for c in answered)

        # Replay needs no server: the CLI rebuilds the run from the log alone.
        replay = subprocess.run([PYTHON, "-m", "agentlog.cli", "replay", summary.run_id, "--db", db, "--json"],
                                capture_output=True, text=True, env=cli_env(AGENTLOG_TEST_TAG=tag), timeout=60)
        assert replay.returncode == 0 and json.loads(replay.stdout)["drafts"][0]["draft"] == view.drafts[0].draft
        assert server_processes(tag) == []

        # Re-running the same run from its start asks the model nothing: every call is reused.
        def no_server(self):
            raise AssertionError("a local server was started: a recorded call was asked again")

        monkeypatch.setattr(local.LocalServer, "start", no_server)
        again = fork(store, summary.run_id, 1, overrides=Overrides()).wait()
        replayed = build_view(again.run_id, store.read(again.run_id))
        assert replayed.status == "finished" and all(c.status == "reused" for c in replayed.calls)
        assert replayed.drafts[0].draft == view.drafts[0].draft and again.tokens == 0


def test_ctrl_c_during_a_local_run_stops_its_server_and_leaves_a_resumable_log(tmp_path):
    import signal
    import time

    db = str(tmp_path / "log.db")
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [PYTHON, "-m", "agentlog.cli", "run", TASK, "--db", db, "--max-iterations", "1", "--max-tokens", "400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(AGENTLOG_TEST_TAG=tag),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 120
    while not server_processes(tag):
        assert proc.poll() is None and time.monotonic() < deadline, "the local server never started"
        time.sleep(0.05)
    started = set(server_processes(tag))
    time.sleep(1.0)  # into the research call
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the log is consistent" in err and "agentlog resume" in err
    deadline = time.monotonic() + 10
    while started & set(server_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not started & set(server_processes(tag))  # the server went with the run
    with SQLiteStore(db, create=False) as store:
        [summary] = store.list_runs()
        assert summary.status == "running" and summary.last_seq >= 2  # the call's intent is logged
