"""Watching a run as it happens: partial answers beside the log, the terminal, a crash mid-stream."""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing

import pytest

from agentlog.actors import LiveAnswer, agent_configs, start_run
from agentlog.events import LLMCallAnswered, LLMCallRequested
from agentlog.models import Delta, Endpoint, Gateway, RetryPolicy
from agentlog.store import SQLiteStore
from agentlog.terminal import CLEAR_LINE
from tests.conftest import PYTHON, SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer

TASK = "Explain how Kubernetes horizontal pod autoscaling works"


def gateway_for(server: FakeOpenAIServer) -> Gateway:
    return Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                   retry=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02), timeout=10.0)


def partial_rows(db) -> list[tuple]:
    try:
        with closing(sqlite3.connect(db, timeout=5)) as conn:
            return conn.execute("SELECT run_id, call_id, agent, attempt, text, pieces FROM partial_answers").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def wait_for(predicate, timeout: float = 30.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended first: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError("timed out")


def run_in_process(db, server: FakeOpenAIServer, watcher=None):
    store, gateway = SQLiteStore(db), gateway_for(server)
    try:
        handle = start_run(store, TASK, agents=agent_configs("gpt-4o-mini"), gateway=gateway, watcher=watcher)
        summary = handle.wait(timeout=60)
        return summary, store.read(summary.run_id), store.partials(summary.run_id)
    finally:
        gateway.close()
        store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_answer_is_written_at_most_four_times_a_second_and_removed_at_the_end(tmp_path):
    clock, writes = Clock(), []
    with SQLiteStore(tmp_path / "log.db") as store:
        live = LiveAnswer(store, "run1", "write-1/1", "writer", {"model": "m", "messages": []}, clock=clock)
        for n in range(200):  # two seconds of pieces, one every 10 ms
            clock.now += 0.01
            live.delta(Delta(text=f"w{n} ", attempt=1))
            rows = store.partials("run1")
            if rows and (not writes or rows[0].pieces != writes[-1].pieces):
                writes.append(rows[0])
        assert 7 <= len(writes) <= 8 and writes[0].pieces >= 25  # none in the first quarter second
        assert writes[-1].text == "".join(f"w{n} " for n in range(writes[-1].pieces))
        live.delta(Delta(text="again", attempt=2))  # a retry starts the answer again
        clock.now += 0.3
        live.delta(Delta(text=" and on", attempt=2))
        [retried] = store.partials("run1")
        assert (retried.attempt, retried.text, retried.pieces) == (2, "again and on", 2)
        live.end()
        assert store.partials("run1") == []

        quick = LiveAnswer(store, "run1", "review-1/1", "reviewer", {"model": "m", "messages": []}, clock=clock)
        quick.delta(Delta(text="{}", attempt=1))
        assert store.partials("run1") == []  # a fast answer never touches the table


def test_a_streamed_run_logs_the_same_events_as_an_unstreamed_one(tmp_path):
    pieces = []
    with FakeOpenAIServer() as streaming:
        summary, events, left = run_in_process(tmp_path / "a.db", streaming, watcher=pieces.append)
        assert all(r["body"].get("stream") for r in streaming.requests)
    with FakeOpenAIServer(streaming="json") as plain:
        other, plain_events, _ = run_in_process(tmp_path / "b.db", plain)
    assert summary.status == other.status == "finished" and left == []

    def calls(stored):
        return [(s.type, s.event.request_hash, getattr(s.event, "content", None))
                for s in stored if isinstance(s.event, (LLMCallRequested, LLMCallAnswered))]

    assert calls(events) == calls(plain_events)  # hashes and answers do not depend on streaming
    assert [s.type for s in events] == [s.type for s in plain_events]  # only complete answers are events
    answers = {s.event.call_id: s.event.content for s in events if isinstance(s.event, LLMCallAnswered)}
    done = [p for p in pieces if p.done]
    assert {p.call_id for p in done} == set(answers)
    for call_id, content in answers.items():
        assert "".join(p.text for p in pieces if p.call_id == call_id) == content
    assert {p.structured for p in pieces if p.agent == "writer"} == {False}
    assert {p.structured for p in pieces if p.agent == "reviewer"} == {True}


def test_a_slow_answer_is_kept_beside_the_log_while_it_streams_and_cleared_when_it_lands(tmp_path):
    db = tmp_path / "log.db"
    with FakeOpenAIServer(chunk_delay=0.01) as server:
        result = {}
        thread = threading.Thread(target=lambda: result.update(out=run_in_process(db, server)))
        thread.start()
        seen = wait_for(lambda: partial_rows(db))
        thread.join(timeout=120)
    [(run_id, call_id, agent, attempt, text, pieces)] = seen
    summary, events, left = result["out"]
    assert run_id == summary.run_id and attempt == 1 and pieces > 0 and text
    [answer] = [s.event for s in events if isinstance(s.event, LLMCallAnswered) and s.event.call_id == call_id]
    assert answer.agent == agent and answer.content.startswith(text)
    assert left == [] and partial_rows(db) == []


def test_sigkill_mid_stream_then_resume_repeats_that_call_only(tmp_path):
    db = str(tmp_path / "log.db")
    env = cli_env(OPENAI_API_KEY=SECRET)
    with FakeOpenAIServer(chunk_delay=0.01) as server:
        args = ["--base-url", server.base_url, "--db", db]
        proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "run", TASK, "--model", "gpt-4o-mini", *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        [(run_id, call_id, *_)] = wait_for(lambda: partial_rows(db), proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        before = server.count()
        with SQLiteStore(db, create=False) as store:
            types = [s.type for s in store.read(run_id)]
        resumed = subprocess.run([PYTHON, "-m", "agentlog.cli", "resume", run_id, *args], env=env,
                                 capture_output=True, text=True, timeout=120)
        bodies = [r["body"] for r in server.requests]
    assert resumed.returncode == 0, resumed.stderr
    assert CLEAR_LINE not in resumed.stderr  # stderr is not a terminal: no streaming noise
    assert types[-1] == "LLMCallRequested"  # killed mid-answer: the intent is logged, no partial answer is
    keys = [json.dumps(b["messages"], sort_keys=True) for b in bodies]
    repeated = {k for k in keys if keys.count(k) > 1}
    assert len(repeated) == 1 and keys.index(next(iter(repeated))) == before - 1  # the call cut off, once more
    assert keys[before] == keys[before - 1]  # ... and it is the first request of the resume
    with SQLiteStore(db, create=False) as store:
        answered = [s.event.call_id for s in store.read(run_id) if isinstance(s.event, LLMCallAnswered)]
    assert answered.count(call_id) == 1 and len(answered) == len(set(answered))
    assert partial_rows(db) == []  # the resumed call cleared what the killed one left


def read_pty(master: int, out: list[bytes]) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed
            return
        if not data:
            return
        out.append(data)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_terminal_shows_the_draft_as_it_is_written_and_counts_json_tokens(tmp_path, quiet):
    db = str(tmp_path / "log.db")
    with FakeOpenAIServer(chunk_delay=0.001) as server:
        master, slave = pty.openpty()
        args = ["run", TASK, "--model", "gpt-4o-mini", "--base-url", server.base_url, "--db", db,
                "--max-iterations", "1"] + (["-q"] if quiet else [])
        proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", *args], env=cli_env(OPENAI_API_KEY=SECRET),
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks: list[bytes] = []
        reader = threading.Thread(target=read_pty, args=(master, chunks))
        reader.start()
        stdout, _ = proc.communicate(timeout=60)
        reader.join(timeout=10)
        os.close(master)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0, shown
    if quiet:
        assert "is writing" not in shown and "tokens/s" not in shown and CLEAR_LINE not in shown
        return
    draft = stdout.strip()
    assert "writer is writing:" in shown
    echoed = shown.split("writer is writing:", 1)[1].replace("\r\n", "\n")
    assert draft.splitlines()[0] in echoed and draft.splitlines()[-1] in echoed  # the draft, as it streamed
    assert CLEAR_LINE in shown and "researcher: " in shown and "tokens/s" in shown  # a counter for JSON answers
    assert "[research] researcher -> gpt-4o-mini" in shown  # progress lines still come through
