"""Recorded runs as OpenTelemetry spans, sent to a real OTLP/HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from agentlog.actors import agent_configs, start_run
from agentlog.events import LLMCallAnswered, LLMCallFailed, LLMCallRequested, ToolInvoked, ToolReturned
from agentlog.models import Endpoint, Gateway, RetryPolicy
from agentlog.store import SQLiteStore
from agentlog.tracing import export_runs, traces_endpoint
from tests.conftest import PYTHON, SECRET, cli_env
from tests.fake_openai import Fault, FakeOpenAIServer
from tests.otlp_receiver import OTLPReceiver

TASK = "Explain how Kubernetes horizontal pod autoscaling works"
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "agentlog.run.task")


def agentlog(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)


def attrs(item) -> dict:
    found = {}
    for kv in item.attributes:
        kind = kv.value.WhichOneof("value")
        found[kv.key] = getattr(kv.value, kind)
    return found


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """An offline run that calls a tool, and a fork of it that reuses the writer's answer (only read)."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    db = str(tmp_path / "log.db")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hpa.md").write_text("# Autoscaling\n\nThe horizontal pod autoscaler scales replicas on CPU.\n")
    result = agentlog("run", TASK, "--model", "offline", "--docs", str(docs), "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    with SQLiteStore(db, create=False) as store:
        [run] = store.list_runs()
        write = next(s.seq for s in store.read(run.run_id)
                     if isinstance(s.event, LLMCallRequested) and s.event.agent == "writer")
    result = agentlog("fork", run.run_id, "--at", str(write), "--docs", str(docs), "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    with SQLiteStore(db, create=False) as store:
        fork = next(r.run_id for r in store.list_runs() if r.parent_run_id == run.run_id)
        return db, docs, {r: store.read(r) for r in (run.run_id, fork)}, write


def test_runs_become_trees_of_genai_spans_with_times_from_the_log(recorded):
    db, docs, stored, write_seq = recorded
    [run_id, fork_id] = stored
    with OTLPReceiver() as receiver:
        result = agentlog("trace", run_id[:8], fork_id, "--otlp", receiver.url, "--db", db)
    assert result.returncode == 0, result.stderr
    assert receiver.paths == ["/v1/traces"]  # a base URL gets the traces path
    spans = receiver.spans()
    assert {attrs(resource)["service.name"] for resource, _ in spans} == {"agentlog"}
    roots = {attrs(s)["gen_ai.conversation.id"]: s for _, s in spans if not s.parent_span_id}
    assert set(roots) == {run_id, fork_id}
    assert roots[run_id].trace_id != roots[fork_id].trace_id  # one trace per run

    for rid, events in stored.items():
        root = roots[rid]
        children = [s for _, s in spans if s.trace_id == root.trace_id and s.parent_span_id]
        assert all(s.parent_span_id == root.span_id for s in children)
        root_attrs = attrs(root)
        assert root.name == "invoke_agent content" and root_attrs["gen_ai.operation.name"] == "invoke_agent"
        assert root_attrs["agentlog.run.status"] == "finished"
        assert (root.start_time_unix_nano, root.end_time_unix_nano) == (ns(events[0].recorded_at),
                                                                        ns(events[-1].recorded_at))
        requested = {s.event.call_id: s for s in events if isinstance(s.event, LLMCallRequested)}
        answered = {s.event.call_id: s for s in events if isinstance(s.event, LLMCallAnswered)}
        chats = {attrs(s)["agentlog.call.id"]: s for s in children if s.name.startswith("chat ")}
        assert set(chats) == set(requested)
        for call_id, span in chats.items():
            a, answer = attrs(span), answered[call_id].event
            assert span.name == "chat offline" and span.kind == span.SPAN_KIND_CLIENT
            assert (span.start_time_unix_nano, span.end_time_unix_nano) == (ns(requested[call_id].recorded_at),
                                                                            ns(answered[call_id].recorded_at))
            assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "offline"
            assert a["gen_ai.response.model"] == answer.model and a["gen_ai.provider.name"] == "agentlog.offline"
            assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
                answer.usage.prompt_tokens, answer.usage.completion_tokens)
            assert a["gen_ai.conversation.id"] == rid and a["gen_ai.agent.name"] == requested[call_id].event.agent
            assert a["agentlog.reused"] is (answer.reused_from is not None)
            assert not set(CONTENT_KEYS) & set(a)
        invoked = {s.event.tool_call_id: s for s in events if isinstance(s.event, ToolInvoked)}
        returned = {s.event.tool_call_id: s for s in events if isinstance(s.event, ToolReturned)}
        tools = [s for s in children if s.name.startswith("execute_tool ")]
        assert len(tools) == len(returned) >= 1
        for span in tools:
            a = attrs(span)
            assert span.name == "execute_tool search_documents" and a["gen_ai.operation.name"] == "execute_tool"
            tool_call_id = a["gen_ai.tool.call.id"]
            start = invoked.get(tool_call_id, returned[tool_call_id])
            assert (span.start_time_unix_nano, span.end_time_unix_nano) == (ns(start.recorded_at),
                                                                            ns(returned[tool_call_id].recorded_at))
            assert not set(CONTENT_KEYS) & set(a)
        assert TASK not in json.dumps([list(attrs(s).values()) for s in [root, *children]], default=str)

    first_write = next(s.event.call_id for s in stored[run_id] if s.seq == write_seq)
    [writer] = [s for _, s in spans if s.trace_id == roots[fork_id].trace_id and s.name.startswith("chat ")
                and attrs(s)["agentlog.call.id"] == first_write]
    parent_answer = next(s.seq for s in stored[run_id]
                         if isinstance(s.event, LLMCallAnswered) and s.event.call_id == first_write)
    assert attrs(writer)["agentlog.reused"] is True and attrs(writer)["agentlog.copied"] is False
    assert attrs(writer)["agentlog.reused_from"] == f"{run_id}:{parent_answer}"  # the parent's answer
    assert attrs(roots[fork_id])["agentlog.run.parent_id"] == run_id


def test_with_content_the_messages_answers_and_tool_results_go_too(recorded):
    db, _, stored, _ = recorded
    run_id = next(iter(stored))
    with OTLPReceiver() as receiver:
        result = agentlog("trace", run_id, "--otlp", receiver.url + "/v1/traces", "--with-content", "--db", db)
    assert result.returncode == 0, result.stderr
    spans = [s for _, s in receiver.spans()]
    [root] = [s for s in spans if not s.parent_span_id]
    assert attrs(root)["agentlog.run.task"] == TASK
    chat = next(attrs(s) for s in spans if attrs(s).get("gen_ai.agent.name") == "writer")
    [system] = json.loads(chat["gen_ai.system_instructions"])
    assert system["type"] == "text" and system["content"]
    inputs = json.loads(chat["gen_ai.input.messages"])
    assert inputs[0]["role"] == "user" and inputs[0]["parts"][0]["type"] == "text"
    [output] = json.loads(chat["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["parts"][0]["content"].startswith("# ")
    tool = next(attrs(s) for s in spans if s.name.startswith("execute_tool "))
    assert json.loads(tool["gen_ai.tool.call.arguments"]) and "hpa.md" in tool["gen_ai.tool.call.result"]


def test_failed_attempts_are_span_events_at_their_time(tmp_path):
    with FakeOpenAIServer() as server, SQLiteStore(tmp_path / "log.db") as store, OTLPReceiver() as receiver:
        server.inject(Fault.status(500))
        gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                          retry=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02), timeout=5.0)
        try:
            summary = start_run(store, TASK, agents=agent_configs("gpt-4o-mini"), gateway=gateway,
                                max_iterations=1).wait(timeout=60)
        finally:
            gateway.close()
        events = store.read(summary.run_id)
        assert export_runs([(summary.run_id, events)], receiver.url) == len(receiver.spans())
    [failed] = [s for s in events if isinstance(s.event, LLMCallFailed)]
    [span] = [s for _, s in receiver.spans() if attrs(s).get("agentlog.call.id") == failed.event.call_id]
    [event] = span.events
    assert event.name == "agentlog.attempt_failed" and event.time_unix_nano == ns(failed.recorded_at)
    assert attrs(event)["error.type"] == "server_error" and attrs(event)["agentlog.retryable"] is True
    assert span.name == "chat gpt-4o-mini" and attrs(span)["gen_ai.response.model"] == "gpt-4o-mini"
    assert span.status.code == span.status.STATUS_CODE_UNSET  # the retry succeeded


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentlog: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_unreachable_receiver_is_one_line_and_exit_1(recorded):
    db, _, stored, _ = recorded
    result = agentlog("trace", next(iter(stored)), "--otlp", f"http://127.0.0.1:{free_port()}",
                      "--otlp-timeout", "0.5", "--db", db)
    assert result.returncode == 1
    assert "could not send" in one_line(result.stderr)


def test_a_receiver_refusing_the_spans_is_one_line_naming_its_answer(recorded):
    db, _, stored, _ = recorded
    with OTLPReceiver(status=400) as receiver:
        result = agentlog("trace", next(iter(stored)), "--otlp", receiver.url, "--db", db)
    assert result.returncode == 1 and "HTTP 400" in one_line(result.stderr)


@pytest.mark.parametrize("url", ["localhost:4318", "http://", "ftp://127.0.0.1:4318", "http://127.0.0.1:99999",
                                 "http://127.0.0.1:port", "not a url", ""])
def test_what_is_not_an_http_url_with_a_host_is_refused_in_one_line(url):
    with pytest.raises(ValueError, match="--otlp") as refused:
        traces_endpoint(url)
    assert "\n" not in str(refused.value)


def test_a_malformed_url_is_one_line_and_exit_2_before_anything_runs(tmp_path):
    result = agentlog("trace", "abc", "--otlp", "localhost:4318", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 2 and "--otlp" in one_line(result.stderr)
    result = agentlog("run", TASK, "--model", "offline", "--otlp", "http://", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 2 and "--otlp" in one_line(result.stderr)
    assert not (tmp_path / "none.db").exists()


def test_an_unknown_run_is_one_line_and_exit_2(recorded):
    db, *_ = recorded
    with OTLPReceiver() as receiver:
        result = agentlog("trace", "nosuchrun", "--otlp", receiver.url, "--db", db)
    assert result.returncode == 2 and "nosuchrun" in one_line(result.stderr) and receiver.requests == []


def test_run_with_otlp_sends_the_run_when_it_ends_and_an_unreachable_receiver_does_not_harm_it(tmp_path):
    db = str(tmp_path / "log.db")
    with OTLPReceiver() as receiver:
        sent = agentlog("run", TASK, "--model", "offline", "--otlp", receiver.url, "--db", db)
    assert sent.returncode == 0, sent.stderr
    assert "sent " in sent.stderr and len([s for _, s in receiver.spans() if not s.parent_span_id]) == 1
    lost = agentlog("run", TASK, "--model", "offline", "--otlp", f"http://127.0.0.1:{free_port()}",
                    "--otlp-timeout", "0.5", "--db", db, "-q")
    assert lost.returncode == 0 and lost.stdout.startswith(f"# {TASK}")
    errors = [line for line in lost.stderr.splitlines() if line.startswith("agentlog: ")]
    assert len(errors) == 1 and "the run is recorded" in errors[0] and "Traceback" not in lost.stderr
    with SQLiteStore(db, create=False) as store:
        assert [r.status for r in store.list_runs()] == ["finished", "finished"]


def test_traces_endpoint_keeps_a_full_url_and_completes_a_base_one():
    assert traces_endpoint("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_endpoint("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert traces_endpoint("https://otel.example/v1/traces") == "https://otel.example/v1/traces"


def test_tracing_stays_at_the_command_line_level():
    probe = ("import sys, agentlog.store, agentlog.actors, agentlog.replay, agentlog.web, agentlog.cli; "
             "print(sorted(m for m in sys.modules if m == 'agentlog.tracing' or m.startswith('opentelemetry')))")
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
