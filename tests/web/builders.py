"""Databases and servers for the viewer's tests (and the screenshot script).

Forks and re-reviews are built by appending their events directly, as the replay family
would write them, so these tests depend on the event vocabulary and not on replay code.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from agentlog.actors.runtime import agent_configs, run
from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    AreaFacts,
    CallRef,
    DraftReady,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunStarted,
    SettingsChanged,
    Usage,
)
from agentlog.store import SQLiteStore

XSS_DRAFT = ('# Harmless title\n\n<script>window.__pwned = "script"</script>\n'
             '<img src="x" onerror="window.__pwned = \'img\'">\nThe end.')
FORK_LINE = "With WAL, readers never block the writer."


@dataclass(frozen=True)
class Runs:
    finished: str
    fork: str
    fork_seq: int
    rereview: str
    failed: str
    running: str
    xss: str


def request(call_id: str, agent: str, step: str, model: str) -> LLMCallRequested:
    return LLMCallRequested(call_id=call_id, agent=agent, step=step, attempt=1,
                            request={"model": model, "messages": []}, request_hash=f"hash-{call_id}-{model}")


def answer(call_id: str, agent: str, model: str, content: str, tokens: int = 300,
           reused_from: CallRef | None = None) -> LLMCallAnswered:
    return LLMCallAnswered(call_id=call_id, agent=agent, request_hash=f"hash-{call_id}-{model}", content=content,
                           usage=Usage(tokens // 3, tokens - tokens // 3, tokens), latency_ms=420.0, model=model,
                           reused_from=reused_from)


def review(score: int, approved: bool, n: int) -> Review:
    return Review(score=score, approved=approved, issues=[f"issue {n}: too vague"], missed_topics=["checkpoints"],
                  suggestions=[f"suggestion {n}: add an example"], summary=f"review {n}: score {score}")


def started(task: str, **kw) -> RunStarted:
    return RunStarted(task=task, pipeline=kw.pop("pipeline", "content"),
                      agents=kw.pop("agents", agent_configs("offline")), max_iterations=3, threshold=8, **kw)


def build_database(path: str) -> Runs:
    """One of each kind of run the viewer must show."""
    with SQLiteStore(path) as store:
        finished = run(store, "Explain SQLite WAL mode", agents=agent_configs("offline")).run_id
        parent = store.read(finished)
        fork_seq = next(s.seq for s in parent if s.type == "ReviewScored")
        draft1 = next(s.event for s in parent if s.type == "DraftReady")
        # A fork at the first review, with a hotter writer on another model.
        fork = "f0rk" + finished[4:]
        seq = store.append(fork, [s.event for s in parent[:fork_seq]], 0)
        draft2 = draft1.draft + f"\n\n## An example\n\n{FORK_LINE}\n"
        store.append(fork, [
            RunForked(parent_run_id=finished, parent_seq=fork_seq),
            AgentReconfigured(agent="writer", model="offline-creative", temperature=0.9),
            SettingsChanged(threshold=9),
            request("write-2/1", "writer", "write-2", "offline-creative"),
            answer("write-2/1", "writer", "offline-creative", draft2, tokens=900),
            DraftReady(iteration=2, draft=draft2, call_id="write-2/1"),
            request("review-2/1", "reviewer", "review-2", "offline"),
            answer("review-2/1", "reviewer", "offline", "{}", reused_from=CallRef(finished, 15, "review-2/1")),
            ReviewScored(iteration=2, review=review(9, True, 2), call_id="review-2/1"),
            RunFinished(reason="approved", iterations=2, score=9),
        ], seq)
        # A re-review of the finished run by a stricter reviewer.
        rereview = "2e2e" + finished[4:]
        strict = {"reviewer": AgentConfig(model="offline-strict", temperature=0.0)}
        events = [started("Explain SQLite WAL mode", pipeline="rereview", parent_run_id=finished, agents=strict)]
        events += [s.event for s in parent if s.type == "FindingsReady"]
        for s in parent:
            if s.type == "DraftReady":
                i = s.event.iteration
                events += [
                    DraftReady(iteration=i, draft=s.event.draft, call_id=s.event.call_id,
                               source=CallRef(finished, s.seq, s.event.call_id)),
                    request(f"review-{i}/1", "reviewer", f"review-{i}", "offline-strict"),
                    answer(f"review-{i}/1", "reviewer", "offline-strict", "{}"),
                    ReviewScored(iteration=i, review=review(2 + i, False, i), call_id=f"review-{i}/1"),
                ]
        events.append(RunFinished(reason="reviewed", iterations=3, score=5))
        store.append(rereview, events, 0)
        # A run that failed at its first call.
        failed = "fa11ed0000000001"
        store.append(failed, [
            started("Summarise the Raft paper"),
            request("research/1", "researcher", "research", "offline"),
            LLMCallFailed(call_id="research/1", agent="researcher", attempt=1, error_kind="rate_limit",
                          message="429 Too Many Requests", retryable=True),
            LLMCallFailed(call_id="research/1", agent="researcher", attempt=2, error_kind="rate_limit",
                          message="429 Too Many Requests", retryable=True, gave_up=True),
            RunFailed(reason="researcher: rate limited after 2 attempts", step="research", retryable=True),
        ], 0)
        running = running_run(store, "4a4a000000000001", "Compare B-trees and LSM trees")
        xss = "c0ffee0000000001"
        store.append(xss, [
            started('<script>window.__pwned = "task"</script> escaping probe'),
            FindingsReady(findings=Findings(key_areas=["<b>bold?</b>"],
                                            facts=[AreaFacts(area="<i>area</i>", facts=["<u>fact</u>"])],
                                            misconceptions=[], sources=["javascript:alert(1)"]),
                          call_id="research/1"),
            DraftReady(iteration=1, draft=XSS_DRAFT, call_id="write-1/1"),
            ReviewScored(iteration=1, review=Review(score=3, approved=False,
                                                    issues=['<img src=x onerror="window.__pwned=\'review\'">'],
                                                    missed_topics=[], suggestions=[], summary="<script>"),
                         call_id="review-1/1"),
            RunFinished(reason="max_iterations", iterations=1, score=3),
        ], 0)
    return Runs(finished, fork, fork_seq, rereview, failed, running, xss)


def running_run(store: SQLiteStore, run_id: str, task: str) -> str:
    store.append(run_id, [
        started(task),
        request("research/1", "researcher", "research", "offline"),
        answer("research/1", "researcher", "offline", "{}"),
        FindingsReady(findings=Findings(key_areas=["basics"], facts=[AreaFacts("basics", ["a fact"])],
                                        misconceptions=[], sources=[]), call_id="research/1"),
        request("write-1/1", "writer", "write-1", "offline"),
    ], 0)
    return run_id


def build_many(path: str, count: int) -> None:
    """``count`` small finished runs, one transaction each, as a long-lived log would hold."""
    with SQLiteStore(path, durability="off") as store:
        for n in range(count):
            store.append(f"bulk{n:012d}", [
                started(f"bulk task number {n}"),
                RunFinished(reason="approved", iterations=1, score=1 + n % 10),
            ], 0)


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        # uvicorn offers no event for "started"; its flag is the documented signal.
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the viewer did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


SWEEP_XSS_LABEL = '<img src=x onerror="window.__pwned=1">harsh'
SWEEP_TASKS = ("Explain SQLite WAL mode", "Explain the Raft consensus algorithm", "Explain B-trees",
               "Explain <b>HTML</b> escaping")


def _judging_responder(body: dict) -> dict:
    """The offline model's answers, but reviewers judge by model: gpt-4o is kinder, o4-mini harsher,
    by an amount that varies with the task (so the sweep has something to show)."""
    import hashlib

    import msgspec

    from agentlog.models import offline

    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
    c = offline.complete(body)
    content = c.content
    if schema == "Review" and body["model"] in ("gpt-4o", "o4-mini"):
        task = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
        spread = hashlib.sha256(task.encode()).digest()[0] % 4
        score = 6 + spread if body["model"] == "gpt-4o" else 3 + spread
        content = msgspec.json.encode(Review(score=min(score, 10), approved=score >= 8, issues=["depth"],
                                             missed_topics=[], suggestions=[], summary=f"score {score}")).decode()
    return {"content": content, "prompt_tokens": c.prompt_tokens, "completion_tokens": len(content) // 4}


def build_sweep_database(path: str, harsh_label: str = SWEEP_XSS_LABEL) -> tuple[str, list[str]]:
    """Runs on a real chat-completions server on 127.0.0.1, then a sweep of three reviewers over them
    (the third's name, as a variants file could give it, is markup unless told otherwise)."""
    from agentlog.events import SweepSpec, SweepVariant
    from agentlog.models import Endpoint, Gateway
    from agentlog.replay.sweep import plan_sweep, run_sweep
    from tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(responder=_judging_responder) as server, SQLiteStore(path) as store:
        gateway = Gateway(Endpoint(base_url=server.base_url, api_key="sk-viewer-tests"))
        try:
            parents = sorted(run(store, task, agents=agent_configs("gpt-4o-mini"), gateway=gateway).run_id
                             for task in SWEEP_TASKS)
            spec = SweepSpec(runs=parents, at="review-1", variants=[
                SweepVariant(label="reviewer=gpt-4o-mini", models={"reviewer": "gpt-4o-mini"}),
                SweepVariant(label="reviewer=gpt-4o", models={"reviewer": "gpt-4o"}),
                SweepVariant(label=harsh_label, models={"reviewer": "o4-mini"}),
            ])
            comparison = run_sweep(store, plan_sweep(store, spec), gateway=gateway, concurrency=4)
        finally:
            gateway.close()
    return comparison.sweep_id, parents
