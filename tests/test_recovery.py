"""Recovery paths a user meets: a swapped model rescues a failed or in-flight call.

Driven from the CLI against a real HTTP server on 127.0.0.1 that counts requests per model.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from types import SimpleNamespace

import pytest

from agentlog.actors import RunStopped, agent_configs, start_run
from agentlog.events import RunFailed
from agentlog.models import Endpoint, Gateway, RetryPolicy
from tests.conftest import SECRET, cli_env, logged_events
from tests.fake_openai import Fault, FakeOpenAIServer
from tests.test_cli import TASK, agentlog

DOWN, UP = "model-down", "model-up"


@pytest.fixture
def down_server():
    with FakeOpenAIServer(down={DOWN: 404}) as server:
        yield server


def events_of(db: str, run_id: str) -> list[tuple[int, str, dict]]:
    return [(seq, t, data) for run, seq, t, data in logged_events(db) if run == run_id]


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


# --- a crashed agent never hangs a run --------------------------------------------------

TOOL_MODULE = '''
from agentlog.tools import Tool, default_registry

class Boom(BaseException):
    """Not an Exception: what kills an actor's thread."""

def odd(query: str) -> object:
    return {(1, 2): query}  # json.dumps cannot encode a tuple key

def fatal(query: str) -> str:
    raise Boom("the tool pulled the plug")

PARAMS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
default_registry.register(Tool(name="odd", description="odd", parameters=PARAMS, fn=odd))
default_registry.register(Tool(name="fatal", description="fatal", parameters=PARAMS, fn=fatal))
'''


def tool_config(tmp_path, tool: str):
    (tmp_path / "crash_tools.py").write_text(TOOL_MODULE)
    config = tmp_path / f"{tool}.toml"
    config.write_text(f'model = "offline"\ntool_modules = ["crash_tools"]\n'
                      f'[agents.researcher]\ntools = ["{tool}"]\n')
    return str(config)


def test_a_tool_result_json_cannot_encode_is_an_error_result_and_the_run_goes_on(db_path, tmp_path):
    db = str(db_path)
    result = agentlog("run", TASK, "--db", db, "--config", tool_config(tmp_path, "odd"), "-q", timeout=60)
    assert result.returncode == 0, result.stderr
    returned = [d for _, t, d in events_of(db, newest_run(db)) if t == "ToolReturned"]
    assert len(returned) == 1 and returned[0]["is_error"]
    assert "not JSON" in returned[0]["result"]


def test_an_agent_that_dies_fails_its_run_in_one_line(db_path, tmp_path):
    db = str(db_path)
    result = agentlog("run", TASK, "--db", db, "--config", tool_config(tmp_path, "fatal"), "-q", timeout=60)
    assert result.returncode == 1, result.stderr
    lines = [x for x in result.stderr.splitlines() if not x.startswith("note: using the offline model")]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "agent researcher died" in line and "Boom: the tool pulled the plug" in line
    assert "agentlog resume" in line
    rows = events_of(db, newest_run(db))
    assert rows[-1][1] == "ToolInvoked"  # the log is consistent: resume runs the tool again


def test_a_client_raising_a_foreign_exception_is_a_named_run_failure(store):
    class BrokenGateway(Gateway):
        def _client(self, spec):
            def create(**_kw):
                raise RuntimeError("the client library broke")
            return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))), spec.name

    gateway = BrokenGateway(Endpoint(base_url="http://127.0.0.1:9/v1", api_key=SECRET),
                            retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02))
    summary = start_run(store, TASK, agents=agent_configs("gpt-4o"), gateway=gateway).wait(timeout=10)
    assert summary.status == "failed"
    failed = store.events(summary.run_id)[-1]
    assert isinstance(failed, RunFailed) and "RuntimeError: the client library broke" in failed.reason


def test_stop_settles_the_run_and_a_later_wait_raises_promptly(store):
    asked, release = threading.Event(), threading.Event()

    def slow(body: dict) -> dict:
        asked.set()
        release.wait(10)
        return {"content": "too late"}

    with FakeOpenAIServer(responder=slow) as server:
        gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET), timeout=20)
        try:
            handle = start_run(store, TASK, agents=agent_configs("gpt-4o"), gateway=gateway)
            assert asked.wait(10)
            handle.stop()
            with pytest.raises(RunStopped, match="resume"):
                handle.wait(timeout=5)
        finally:
            release.set()
            gateway.close()
    assert store.read(handle.run_id)[-1].type == "LLMCallRequested"


# --- facts first ---------------------------------------------------------------------------


def test_a_paid_answer_reaches_the_log_before_the_run_fails(db_path, tmp_path):
    """fail -> fix -> resume: the answer bought before the run failed is not bought again."""
    db = str(db_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hpa.md").write_text("The horizontal pod autoscaler scales replicas on CPU utilisation.\n")

    def researcher_asks(server: FakeOpenAIServer) -> list[int]:
        """For each researcher request: how many tool results it carried."""
        return [sum(m["role"] == "tool" for m in r["body"]["messages"]) for r in server.requests
                if r["body"].get("tools")]  # only the researcher is offered a tool

    with FakeOpenAIServer() as server:
        env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
        server.inject(Fault.status(400, message="bad request, once"))
        first = agentlog("run", TASK, "--db", db, "--model", "gpt-4o", "--docs", str(docs), "-q", env=env)
        assert first.returncode == 1, first.stderr
        run_id = newest_run(db)
        # Resumed by a process without the documents tool: the answer asks for it.
        broken = agentlog("resume", run_id, "--db", db, "-q", env=env)
        assert broken.returncode == 2 and "search_documents" in broken.stderr, broken.stderr
        assert "Traceback" not in broken.stderr
        answered = [d["call_id"] for _, t, d in events_of(db, run_id) if t == "LLMCallAnswered"]
        assert answered == ["research/1"]  # the fact is in the log, though the run could not go on
        fixed = agentlog("resume", run_id, "--db", db, "--docs", str(docs), "-q", env=env)
        assert fixed.returncode == 0, fixed.stderr
        # failed once, answered once (with a tool call), then asked with the tool's result
        assert researcher_asks(server) == [0, 0, 1]
    assert agentlog("verify", run_id, "--db", db).returncode == 0
