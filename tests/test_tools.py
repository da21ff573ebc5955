"""The tool loop, recorded and replayable: the real openai client against a local server
that scripts tool calls, tools that count their invocations, and the log as the witness."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from agentlog.actors import agent_configs, drive, run, start_run
from agentlog.cli import main
from agentlog.events import (
    LLMCallAnswered,
    LLMCallRequested,
    RunFailed,
    RunFinished,
    RunStarted,
    ToolInvoked,
    ToolReturned,
)
from agentlog.models import Endpoint, Gateway, RetryPolicy, offline
from agentlog.pipelines import MAX_TOOL_ROUNDS
from agentlog.replay import build_view, fork, resume, verify
from agentlog.store import SQLiteStore
from agentlog.tools import Tool, ToolNotRegistered, ToolRegistry
from tests.fake_openai import FakeOpenAIServer

RESEARCHER = "meticulous research analyst"
MODEL = "fake-model"


class CountingTool:
    """A tool that records every call it gets."""

    def __init__(self, name: str = "lookup", fail: bool = False):
        self.name, self.fail = name, fail
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str) -> str:
        with self._lock:
            self.calls.append({"topic": topic})
        if self.fail:
            raise ValueError(f"the index for {topic!r} is corrupt")
        return f"a recorded fact about {topic}"

    def tool(self) -> Tool:
        return Tool(name=self.name, description="Look a topic up.",
                    parameters={"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
                    fn=self)


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def scripted(research: Callable[[dict, int], dict | None]) -> Callable[[dict], dict]:
    """A responder: ``research(body, round)`` answers researcher requests (``None``: like the
    offline model); every other agent is answered like the offline model."""

    def respond(body: dict) -> dict:
        messages = body["messages"]
        if RESEARCHER in messages[0]["content"]:
            rounds = sum(1 for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
            answer = research(body, rounds)
            if answer is not None:
                return answer
        completion = offline.complete({k: v for k, v in body.items() if k != "tools"})
        return {"content": completion.content}

    return respond


def one_lookup(body: dict, rounds: int) -> dict | None:
    """Call ``lookup`` once, then answer with findings citing its result."""
    if rounds == 0:
        return {"content": None, "tool_calls": [tool_call("call_1", "lookup", {"topic": "WAL"})]}
    result = next(m["content"] for m in body["messages"] if m["role"] == "tool")
    return {"content": json.dumps({"key_areas": ["WAL"], "facts": [{"area": "WAL", "facts": [result]}],
                                   "misconceptions": [], "sources": ["lookup"]})}


@pytest.fixture
def store(tmp_path):
    with SQLiteStore(tmp_path / "log.db", create=True) as s:
        yield s


def gateway_for(server: FakeOpenAIServer) -> Gateway:
    return Gateway(Endpoint(base_url=server.base_url, api_key="sk-test-secret"),
                   retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02), timeout=10)


def run_with_tool(store: SQLiteStore, server: FakeOpenAIServer, counter: CountingTool, **kwargs: Any):
    gateway = gateway_for(server)
    try:
        return run(store, "SQLite WAL", agents=agent_configs(MODEL), gateway=gateway, max_iterations=1,
                   tools={"researcher": ["lookup"]}, registry=ToolRegistry([counter.tool()]), **kwargs)
    finally:
        gateway.close()


def events_of(store: SQLiteStore, run_id: str, cls: type) -> list:
    return [e for e in store.events(run_id) if isinstance(e, cls)]


def researcher_requests(server: FakeOpenAIServer) -> list[dict]:
    return [r["body"] for r in server.requests if RESEARCHER in r["body"]["messages"][0]["content"]]


def test_tool_call_is_recorded_and_its_result_goes_to_the_next_request(store):
    counter = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        summary = run_with_tool(store, server, counter)
    assert summary.status == "finished"
    assert counter.calls == [{"topic": "WAL"}]
    invoked = events_of(store, summary.run_id, ToolInvoked)
    returned = events_of(store, summary.run_id, ToolReturned)
    assert [(e.call_id, e.tool_call_id, e.name, json.loads(e.arguments)) for e in invoked] == [
        ("research/1", "call_1", "lookup", {"topic": "WAL"})]
    assert [(e.result, e.is_error, e.reused_from) for e in returned] == [("a recorded fact about WAL", False, None)]
    # The intent is logged before the tool runs, the result after.
    types = [s.type for s in store.read(summary.run_id)]
    assert types.index("ToolInvoked") < types.index("ToolReturned")

    first, second = researcher_requests(server)
    assert first["tools"][0]["function"]["name"] == "lookup"  # the tools are part of the request
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1",
                                      "content": "a recorded fact about WAL"}
    requested = events_of(store, summary.run_id, LLMCallRequested)
    assert [(e.call_id, e.round) for e in requested if e.agent == "researcher"] == [
        ("research/1", 0), ("research/1.1", 1)]
    assert "tools" in requested[0].request  # so the request hash covers them
    assert verify(summary.run_id, store.read(summary.run_id)).ok


def test_replay_shows_tool_calls_without_calling_anything(store, capsys, tmp_path):
    counter = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        summary = run_with_tool(store, server, counter)
        requests_after_run = len(server.requests)
        view = build_view(summary.run_id, store.read(summary.run_id))
        assert [(t.name, t.status, t.step, t.agent, t.result) for t in view.tools] == [
            ("lookup", "returned", "research", "researcher", "a recorded fact about WAL")]
        assert main(["replay", summary.run_id, "--db", str(tmp_path / "log.db")]) == 0
        out = capsys.readouterr().out
        assert "tool calls" in out and "lookup" in out
        assert main(["verify", summary.run_id, "--db", str(tmp_path / "log.db")]) == 0
        assert len(server.requests) == requests_after_run
    assert len(counter.calls) == 1


def test_resume_after_a_recorded_tool_result_does_not_run_the_tool_or_repeat_a_request(store):
    """A crash right after ``ToolReturned``: the resumed run goes on from the result."""
    counter = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        original = run_with_tool(store, server, counter)
    stored = store.read(original.run_id)
    cut = next(s.seq for s in stored if s.type == "ToolReturned")
    store.append("crashed", [s.event for s in stored[:cut]], 0)  # what a crash at that point leaves

    fresh = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        gateway = gateway_for(server)
        try:
            summary = resume(store, "crashed", gateway=gateway, tools=ToolRegistry([fresh.tool()])).wait(timeout=30)
        finally:
            gateway.close()
        bodies = [json.dumps(r["body"], sort_keys=True) for r in server.requests]
        first_research = researcher_requests(server)
    assert summary.status == "finished"
    assert fresh.calls == []  # the recorded result was used
    assert len(events_of(store, "crashed", ToolReturned)) == 1
    assert len(first_research) == 1 and first_research[0]["messages"][-1]["role"] == "tool"
    assert len(bodies) == len(set(bodies))  # no request was sent twice
    assert verify("crashed", store.read("crashed")).ok


def test_stopping_mid_loop_and_resuming_makes_no_repeated_call(store):
    """Stop the actors while the request after the tool result is in flight, then resume."""
    counter = CountingTool()
    release = threading.Event()
    blocked = threading.Event()

    def research(body: dict, rounds: int) -> dict | None:
        if rounds == 1 and not release.is_set():
            blocked.set()
            release.wait(10)
            return {"content": "not json: the run was stopped before this arrived"}
        return one_lookup(body, rounds)

    with FakeOpenAIServer(responder=scripted(research)) as server:
        gateway = gateway_for(server)
        try:
            handle = start_run(store, "SQLite WAL", agents=agent_configs(MODEL), gateway=gateway,
                               max_iterations=1, tools={"researcher": ["lookup"]},
                               registry=ToolRegistry([counter.tool()]))
            assert blocked.wait(10)
            handle.stop()
            release.set()
            assert [s.type for s in store.read(handle.run_id)][-2:] == ["ToolReturned", "LLMCallRequested"]
            assert len(counter.calls) == 1

            summary = resume(store, handle.run_id, gateway=gateway,
                             tools=ToolRegistry([counter.tool()])).wait(timeout=30)
        finally:
            gateway.close()
        research_bodies = researcher_requests(server)
    assert summary.status == "finished"
    assert len(counter.calls) == 1  # not called again on resume
    # The tool-less first request was never repeated; only the in-flight one was made again.
    assert [len([m for m in b["messages"] if m["role"] == "tool"]) for b in research_bodies] == [0, 1, 1]
    assert verify(handle.run_id, store.read(handle.run_id)).ok


def test_fork_before_the_result_reuses_the_parents_tool_result(store):
    counter = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        original = run_with_tool(store, server, counter)
        before = len(server.requests)
        at = next(s.seq for s in store.read(original.run_id) if s.type == "ToolInvoked")
        gateway = gateway_for(server)
        try:
            forked = fork(store, original.run_id, at, gateway=gateway,
                          tools=ToolRegistry([counter.tool()])).wait(timeout=30)
        finally:
            gateway.close()
        assert len(server.requests) == before  # every answer reused by request hash
    assert len(counter.calls) == 1
    (returned,) = events_of(store, forked.run_id, ToolReturned)
    parent_seq = next(s.seq for s in store.read(original.run_id) if s.type == "ToolReturned")
    assert returned.reused_from is not None
    assert (returned.reused_from.run_id, returned.reused_from.seq) == (original.run_id, parent_seq)
    assert returned.result == "a recorded fact about WAL"
    assert forked.status == "finished"
    assert verify(forked.run_id, store.read(forked.run_id)).ok
    view = build_view(forked.run_id, store.read(forked.run_id))
    (row,) = [r for r in view.timeline if r.type == "ToolReturned"]
    assert row.reused and not row.live and row.link_run == original.run_id
    assert f"reused from {original.run_id} event {parent_seq}" in row.description
    assert all(r.copied == (r.seq <= at) for r in view.timeline)


def test_a_tool_that_raises_gives_the_model_the_error_and_the_run_goes_on(store):
    counter = CountingTool(fail=True)
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        summary = run_with_tool(store, server, counter)
        second = researcher_requests(server)[1]
    assert summary.status == "finished"
    (returned,) = events_of(store, summary.run_id, ToolReturned)
    assert returned.is_error
    assert "ValueError" in returned.result and "corrupt" in returned.result
    assert second["messages"][-1]["content"] == returned.result
    assert build_view(summary.run_id, store.read(summary.run_id)).tools[0].status == "error"


def test_a_tool_loop_that_does_not_converge_fails_after_the_bound(store):
    counter = CountingTool()

    def forever(body: dict, rounds: int) -> dict:
        return {"content": None, "tool_calls": [tool_call(f"call_{rounds}", "lookup", {"topic": f"t{rounds}"})]}

    with FakeOpenAIServer(responder=scripted(forever)) as server:
        summary = run_with_tool(store, server, counter)
        assert len(researcher_requests(server)) == MAX_TOOL_ROUNDS + 1
    assert summary.status == "failed"
    assert len(counter.calls) == MAX_TOOL_ROUNDS
    failed = events_of(store, summary.run_id, RunFailed)[-1]
    assert failed.step == "research"
    assert "did not converge" in failed.reason and str(MAX_TOOL_ROUNDS) in failed.reason
    assert verify(summary.run_id, store.read(summary.run_id)).ok


def test_a_tool_the_agent_was_not_given_is_an_error_result(store):
    counter = CountingTool()

    def wrong_tool(body: dict, rounds: int) -> dict | None:
        if rounds == 0:
            return {"content": None, "tool_calls": [tool_call("call_x", "rm_rf", {"path": "/"})]}
        return one_lookup(body, 1)

    with FakeOpenAIServer(responder=scripted(wrong_tool)) as server:
        summary = run_with_tool(store, server, counter)
    assert summary.status == "finished"
    (returned,) = events_of(store, summary.run_id, ToolReturned)
    assert returned.is_error and "no tool named 'rm_rf'" in returned.result and "lookup" in returned.result
    assert counter.calls == []


def test_a_run_whose_tool_is_not_registered_stops_unrecorded_and_resumes_once_it_is(store):
    counter = CountingTool()
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        gateway = gateway_for(server)
        try:
            # A run that offers ``lookup``, driven by a process that has not registered it.
            store.append("r1", [RunStarted(task="SQLite WAL", pipeline="content", agents=agent_configs(MODEL),
                                           max_iterations=1, threshold=8,
                                           tools={"researcher": [counter.tool().spec]})], 0)
            handle = drive(store, "r1", gateway=gateway, tools=ToolRegistry())
            with pytest.raises(ToolNotRegistered, match="lookup"):
                handle.wait(timeout=30)
            assert events_of(store, handle.run_id, ToolInvoked) == []  # nothing claims the tool ran
            summary = resume(store, handle.run_id, gateway=gateway,
                             tools=ToolRegistry([counter.tool()])).wait(timeout=30)
        finally:
            gateway.close()
    assert summary.status == "finished"
    assert len(counter.calls) == 1


def test_the_offline_model_calls_the_first_tool_then_answers_from_its_result(store):
    counter = CountingTool()
    summary = run(store, "SQLite WAL", agents=agent_configs("offline"), max_iterations=1,
                  tools={"researcher": ["lookup"]}, registry=ToolRegistry([counter.tool()]))
    assert summary.status == "finished"
    assert counter.calls == [{"topic": "SQLite WAL"}]
    answered = events_of(store, summary.run_id, LLMCallAnswered)
    assert answered[0].tool_calls[0].name == "lookup"
    assert isinstance(store.events(summary.run_id)[-1], RunFinished)


def test_no_secret_is_recorded(store, tmp_path):
    with FakeOpenAIServer(responder=scripted(one_lookup)) as server:
        run_with_tool(store, server, CountingTool())
    assert b"sk-test-secret" not in (tmp_path / "log.db").read_bytes()
