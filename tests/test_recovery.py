"""Recovery paths a user meets: a swapped model rescues a failed or in-flight call.

Driven from the CLI against a real HTTP server on 127.0.0.1 that counts requests per model.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from tests.conftest import SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_cli import TASK, agentlog

DOWN, UP = "model-down", "model-up"


@pytest.fixture
def down_server():
    with FakeOpenAIServer(down={DOWN: 404}) as server:
        yield server


def events_of(db: str, run_id: str) -> list[tuple[int, str, dict]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT seq, type, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    return [(seq, t, json.loads(d)) for seq, t, d in rows]


def newest_run(db: str) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC").fetchone()[0]


def failed_run(db: str, server: FakeOpenAIServer) -> tuple[str, dict]:
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    result = agentlog("run", TASK, "--db", db, "--model", "gpt-4o", "--model", f"writer={DOWN}", "--retries", "1",
                      "-q", env=env)
    assert result.returncode == 1, result.stderr
    assert f"model {DOWN} is down" in result.stderr
    assert server.count_model(DOWN) == 1
    return newest_run(db), env


def assert_rescued(db: str, run_id: str, server: FakeOpenAIServer, failed_call: str) -> None:
    rows = events_of(db, run_id)
    assert rows[-1][1] == "RunFinished"
    asked = [d for _, t, d in rows if t == "LLMCallRequested" and d["agent"] == "writer"]
    after = asked[[d["call_id"] for d in asked].index(failed_call) + 1:]
    # A new attempt in the log, asked of the new model, then answered.
    assert after[0]["call_id"] == "write-1/2" and after[0]["request"]["model"] == UP
    answered = {d["call_id"] for _, t, d in rows if t == "LLMCallAnswered"}
    assert "write-1/2" in answered and failed_call not in answered
    assert server.count_model(DOWN) == 1  # nothing went to the down model after the swap
    assert agentlog("verify", run_id, "--db", db).returncode == 0


def test_resume_with_another_model_rescues_a_failed_call(db_path, down_server):
    db = str(db_path)
    run_id, env = failed_run(db, down_server)
    result = agentlog("resume", run_id, "--db", db, "--model", f"writer={UP}", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert_rescued(db, run_id, down_server, "write-1/1")


def test_fork_of_a_failed_run_with_another_model_decides_afresh(db_path, down_server):
    db = str(db_path)
    run_id, env = failed_run(db, down_server)
    last = events_of(db, run_id)[-1][0]
    result = agentlog("fork", run_id, "--at", str(last), "--db", db, "--model", f"writer={UP}", "-q", env=env)
    assert result.returncode == 0, result.stderr
    fork_id = newest_run(db)
    assert fork_id != run_id
    assert_rescued(db, fork_id, down_server, "write-1/1")


def test_fork_at_an_in_flight_call_asks_the_new_model(db_path, down_server):
    db = str(db_path)
    run_id, env = failed_run(db, down_server)
    rows = events_of(db, run_id)
    intent = next(seq for seq, t, d in rows if t == "LLMCallRequested" and d["agent"] == "writer")
    result = agentlog("fork", run_id, "--at", str(intent), "--db", db, "--model", f"writer={UP}", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert_rescued(db, newest_run(db), down_server, "write-1/1")


def test_fork_without_a_swap_asks_the_failed_call_again(db_path, down_server):
    db = str(db_path)
    run_id, env = failed_run(db, down_server)
    last = events_of(db, run_id)[-1][0]
    result = agentlog("fork", run_id, "--at", str(last), "--db", db, "-q", env=env)
    assert result.returncode == 1, result.stderr  # decided afresh: asked again, failed again
    assert down_server.count_model(DOWN) == 2
