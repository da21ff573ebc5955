"""Parallel research: two researcher actors at once, parts in either order, merged findings."""

from __future__ import annotations

import json
import threading
import time

import pytest

from agentlog.actors import agent_configs, run
from agentlog.cli import main
from agentlog.events import (
    AgentConfig,
    AreaFacts,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    RunFailed,
    RunStarted,
    Usage,
    request_hash,
)
from agentlog.models import Endpoint, Gateway, RetryPolicy, offline
from agentlog.pipelines import CallModel, ContentPipeline, Record, fold, merge_findings
from agentlog.replay import build_view, verify
from agentlog.store import SQLiteStore
from tests.fake_openai import FakeOpenAIServer

FACTS = "meticulous research analyst"
COUNTER = "skeptical research analyst"
MODEL = "fake-model"


def findings(tag: str, area: str, source: str) -> Findings:
    return Findings(key_areas=[area], facts=[AreaFacts(area=area, facts=[f"{tag} fact"])],
                    misconceptions=[f"{tag} misconception"], sources=[source, "shared-source"])


FACTS_FINDINGS = findings("facts", "How it works", "facts-source")
COUNTER_FINDINGS = findings("counter", "Limitations", "counter-source")


def responder(facts_delay: float = 0.0, counter_delay: float = 0.0, counter_bad_first: bool = False):
    seen = {"counter": 0}

    def respond(body: dict) -> dict:
        system = body["messages"][0]["content"]
        if FACTS in system:
            time.sleep(facts_delay)
            return {"content": json.dumps({"key_areas": FACTS_FINDINGS.key_areas,
                                           "facts": [{"area": "How it works", "facts": ["facts fact"]}],
                                           "misconceptions": FACTS_FINDINGS.misconceptions,
                                           "sources": FACTS_FINDINGS.sources})}
        if COUNTER in system:
            time.sleep(counter_delay)
            seen["counter"] += 1
            if counter_bad_first and seen["counter"] == 1:
                return {"content": "{\"key_areas\": \"not a list\"}"}
            return {"content": json.dumps({"key_areas": COUNTER_FINDINGS.key_areas,
                                           "facts": [{"area": "Limitations", "facts": ["counter fact"]}],
                                           "misconceptions": COUNTER_FINDINGS.misconceptions,
                                           "sources": COUNTER_FINDINGS.sources})}
        return {"content": offline.complete(body).content}

    return respond


@pytest.fixture
def store(tmp_path):
    with SQLiteStore(tmp_path / "log.db", create=True) as s:
        yield s


def run_parallel(store: SQLiteStore, server: FakeOpenAIServer, **kwargs):
    gateway = Gateway(Endpoint(base_url=server.base_url, api_key="test"),
                      retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02), timeout=10)
    try:
        return run(store, "SQLite WAL", agents=agent_configs(MODEL), gateway=gateway, max_iterations=1,
                   research="parallel", **kwargs)
    finally:
        gateway.close()


def research_requests(server: FakeOpenAIServer, marker: str) -> list[dict]:
    return [r for r in server.requests if marker in r["body"]["messages"][0]["content"]]


def test_both_researchers_are_asked_at_once(store):
    # Each researcher's request is held at the server until the other's has arrived too:
    # researchers asked one after the other would leave the first waiting alone (no timing bound).
    both_there = threading.Barrier(2, timeout=5)
    met: list[bool] = []
    answer = responder()

    def respond(body: dict) -> dict:
        system = body["messages"][0]["content"]
        if FACTS in system or COUNTER in system:
            try:
                both_there.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)
        return answer(body)

    with FakeOpenAIServer(responder=respond) as server:
        summary = run_parallel(store, server)
        assert len(research_requests(server, FACTS)) == len(research_requests(server, COUNTER)) == 1
    assert summary.status == "finished"
    assert met == [True, True]  # both requests were at the server at once
    stored = store.read(summary.run_id)
    started = stored[0].event
    assert isinstance(started, RunStarted) and started.research == "parallel"
    assert started.agents["counter_researcher"].temperature == 0.2
    assert verify(summary.run_id, stored).ok


@pytest.mark.parametrize("facts_delay, counter_delay", [(0.4, 0.0), (0.0, 0.4)])
def test_parts_may_arrive_in_either_order_and_merge_the_same(store, facts_delay, counter_delay):
    with FakeOpenAIServer(responder=responder(facts_delay, counter_delay)) as server:
        summary = run_parallel(store, server)
    assert summary.status == "finished"
    events = store.events(summary.run_id)
    parts = [e.part for e in events if isinstance(e, ResearchPartReady)]
    assert parts == (["counter", "facts"] if facts_delay else ["facts", "counter"])
    (ready,) = [e for e in events if isinstance(e, FindingsReady)]
    assert ready.findings == merge_findings(FACTS_FINDINGS, COUNTER_FINDINGS)
    assert ready.findings.key_areas == ["How it works", "Limitations"]  # facts first, whatever the order
    assert ready.findings.sources == ["facts-source", "shared-source", "counter-source"]
    # The writer sees the merged findings.
    writer = next(e for e in events if isinstance(e, LLMCallRequested) and e.agent == "writer")
    assert "counter fact" in writer.request["messages"][-1]["content"]
    view = build_view(summary.run_id, store.read(summary.run_id))
    assert set(view.research_parts) == {"facts", "counter"} and view.research == "parallel"
    assert verify(summary.run_id, store.read(summary.run_id)).ok


def test_invalid_output_of_one_researcher_is_re_asked_alone(store):
    with FakeOpenAIServer(responder=responder(counter_bad_first=True)) as server:
        summary = run_parallel(store, server)
        assert len(research_requests(server, FACTS)) == 1
        assert len(research_requests(server, COUNTER)) == 2
    assert summary.status == "finished"
    events = store.events(summary.run_id)
    (rejected,) = [e for e in events if isinstance(e, OutputRejected)]
    assert (rejected.agent, rejected.step, rejected.call_id) == ("counter_researcher", "research-counter",
                                                                 "research-counter/1")
    assert [e.call_id for e in events if isinstance(e, ResearchPartReady) and e.part == "counter"] == [
        "research-counter/2"]
    assert verify(summary.run_id, store.read(summary.run_id)).ok


# --- the decider alone -----------------------------------------------------------------


def _started() -> RunStarted:
    agents = {role: AgentConfig(model="m", temperature=0.2)
              for role in ("researcher", "counter_researcher", "writer", "reviewer")}
    return RunStarted(task="t", pipeline="content", agents=agents, max_iterations=1, threshold=8, research="parallel")


def _answer(command: CallModel, content: str) -> list:
    return [
        LLMCallRequested(call_id=command.call_id, agent=command.agent, step=command.step, attempt=command.attempt,
                         request=command.request, request_hash=request_hash(command.request)),
        LLMCallAnswered(call_id=command.call_id, agent=command.agent, request_hash=request_hash(command.request),
                        content=content, usage=Usage()),
    ]


def test_decide_asks_both_researchers_in_one_decision_and_merges_in_either_order():
    pipeline = ContentPipeline()
    state = fold(pipeline, [_started()])
    first = pipeline.decide(state)
    assert [(c.step, c.agent) for c in first] == [("research-facts", "researcher"),
                                                  ("research-counter", "counter_researcher")]
    facts_call, counter_call = first
    assert "counter-arguments" in counter_call.request["messages"][-1]["content"]
    answers = {"facts": _answer(facts_call, json.dumps({"key_areas": ["A"], "facts": [], "misconceptions": [],
                                                        "sources": ["s1"]})),
               "counter": _answer(counter_call, json.dumps({"key_areas": ["B"], "facts": [], "misconceptions": [],
                                                            "sources": ["s2"]}))}
    merged = []
    for order in (("facts", "counter"), ("counter", "facts")):
        state = fold(pipeline, [_started()])
        for part in order:
            state = fold(pipeline, answers[part], state)
            decided = pipeline.decide(state)
            record = next(c for c in decided if isinstance(c, Record))
            assert isinstance(record.event, ResearchPartReady) and record.event.part == part
            state = pipeline.evolve(state, record.event)
        (final,) = pipeline.decide(state)
        assert isinstance(final, Record) and isinstance(final.event, FindingsReady)
        merged.append(final.event)
    assert merged[0] == merged[1]
    assert merged[0].findings.key_areas == ["A", "B"] and merged[0].call_id == "research-facts/1"


def test_one_researcher_giving_up_fails_the_run_without_more_calls():
    from agentlog.events import LLMCallFailed

    pipeline = ContentPipeline()
    state = fold(pipeline, [_started()])
    facts_call, counter_call = pipeline.decide(state)
    state = fold(pipeline, [
        LLMCallRequested(call_id=facts_call.call_id, agent="researcher", step=facts_call.step, attempt=1,
                         request=facts_call.request, request_hash="h"),
        LLMCallFailed(call_id=facts_call.call_id, agent="researcher", attempt=3, error_kind="rate_limit",
                      message="slow down", retryable=True, gave_up=True),
    ], state)
    (command,) = pipeline.decide(state)
    assert isinstance(command, Record) and isinstance(command.event, RunFailed)
    assert command.event.step == "research-facts" and command.event.retryable


def test_cli_runs_parallel_research_offline(tmp_path, capsys):
    db = str(tmp_path / "log.db")
    assert main(["run", "SQLite WAL", "--db", db, "--model", "offline", "--research", "parallel",
                 "--max-iterations", "1", "-q"]) == 0
    with SQLiteStore(db) as store:
        (summary,) = store.list_runs()
        events = store.events(summary.run_id)
    assert [e.part for e in events if isinstance(e, ResearchPartReady)] != []
    assert len([e for e in events if isinstance(e, FindingsReady)]) == 1
    assert capsys.readouterr().out.startswith("# SQLite WAL")
