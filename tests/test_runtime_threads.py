"""The runtime's threads: runs share agent actors and a few threads, none of their own.

Structural bounds, not timings: many runs with a call each held open use about one thread
per call in flight (none per run), their agents are one actor per role, a slow call of one
run leaves another run's call free to go (real HTTP on 127.0.0.1), an agent's crash fails
only its own run, and the threads end once the runs have. And when a run writes: a new
run's first intents commit with its RunStarted and lease, and an ended run's actors (with
its state) are freed at once, not left to the cycle collector.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from typing import Any

import pykka
import pytest

from agentlog import pipelines
from agentlog.actors import AgentDied, agent_configs, start_run
from agentlog.actors.agent import AgentActor
from agentlog.actors.dispatch import IDLE_SECONDS, Dispatcher, PooledActor
from agentlog.actors.lease import owner_name
from agentlog.actors.orchestrator import Orchestrator
from agentlog.actors.sharing import AGENTS
from agentlog.models import Endpoint, FunctionModel, Gateway, ModelRequest, RetryPolicy, offline
from agentlog.pipelines import ContentPipeline
from agentlog.store import SQLiteStore
from tests.conftest import SECRET
from tests.fake_openai import FakeOpenAIServer

WAIT = 30.0  # every wait's bound


def offline_answer(request: ModelRequest) -> Any:
    return offline.complete({"model": request.model, "messages": request.messages, "tools": request.tools,
                             "response_format": request.response_format, **request.parameters})


def threads() -> int:
    """Threads alive, less the one lease heartbeat a process keeps from its first run on."""
    return sum(t.name != "agentlog-lease-heartbeat" for t in threading.enumerate())


def settle(baseline: int, timeout: float = IDLE_SECONDS + WAIT) -> int:
    """Wait for the process's threads to come back down to ``baseline``; the count reached."""
    deadline = time.monotonic() + timeout
    while threads() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return threads()


class Gate:
    """Holds every call until ``open()``; counts the calls waiting at it."""

    def __init__(self) -> None:
        self.arrived = 0
        self._cond = threading.Condition()
        self._open = threading.Event()

    def wait_for(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.arrived >= n, timeout=WAIT)

    def open(self) -> None:
        self._open.set()

    def __call__(self, request: ModelRequest) -> Any:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
        assert self._open.wait(WAIT), "the gate was never opened"
        return offline_answer(request)


def test_sixty_runs_in_flight_use_a_thread_per_call_and_one_agent_per_role(store):
    runs = 60
    baseline = settle(threads())
    gate = Gate()
    gateway = Gateway(timeout=None, models={"gated": FunctionModel(gate, name="gated")})
    handles = []
    try:
        handles = [start_run(store, f"topic {i}", agents=agent_configs("gated"), gateway=gateway, max_iterations=1)
                   for i in range(runs)]
        assert gate.wait_for(runs), f"only {gate.arrived} of {runs} calls arrived"
        held = threads() - baseline
        names = [t.name for t in threading.enumerate()]
        # A thread per call in flight and a few more (the lease heartbeat, a turn or two):
        # before, each run held four threads of its own (240 here).
        assert held <= runs + 8, f"{held} threads for {runs} runs"
        assert not [n for n in names if n.startswith(("Orchestrator", "AgentActor"))], names
        # The runs share their agents: one actor per role of the gateway.
        agents = [ref for ref in pykka.ActorRegistry.get_all() if ref.actor_class.__name__ == "AgentActor"]
        assert sorted(ref.proxy().name.get(timeout=WAIT) for ref in agents) == ["researcher", "reviewer", "writer"]
    finally:
        gate.open()
        summaries = [h.wait(timeout=WAIT) for h in handles]
        gateway.close()
    assert all(s.status == "finished" for s in summaries), summaries
    assert not pykka.ActorRegistry.get_all(), "the agents end with their gateway"
    assert settle(baseline) <= baseline, "the dispatcher's threads end once idle"


def test_instant_runs_at_once_use_a_few_threads_whatever_their_number(store):
    baseline = settle(threads())
    peak = [threads()]
    done = threading.Event()

    def sample() -> None:  # the structural bound is on the peak, however the runs interleave
        while not done.wait(0.002):
            peak[0] = max(peak[0], threads())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    gateway = Gateway(timeout=None, models={"instant": FunctionModel(offline_answer, name="instant")})
    try:
        handles = [start_run(store, f"topic {i}", agents=agent_configs("instant"), gateway=gateway,
                             max_iterations=2) for i in range(50)]
        summaries = [h.wait(timeout=WAIT) for h in handles]
    finally:
        done.set()
        sampler.join(WAIT)
        gateway.close()
    assert all(s.status == "finished" for s in summaries)
    # Nothing blocks, so nothing needs a thread of its own: 50 runs never held one each.
    assert peak[0] - 1 - baseline < 25, f"{peak[0] - 1 - baseline} threads at the peak for 50 runs"


def _offline_body(body: dict) -> dict:
    completion = offline.complete(body)
    return {"content": completion.content, "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens}


def test_a_slow_call_of_one_run_does_not_hold_up_another_runs_call_over_http(store):
    slow_asked, release = threading.Event(), threading.Event()

    def responder(body: dict) -> dict:
        if "the slow topic" in str(body["messages"]):
            slow_asked.set()
            release.wait(WAIT)
        return _offline_body(body)

    with FakeOpenAIServer(responder=responder) as server:
        gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET), timeout=WAIT,
                          retry=RetryPolicy(max_attempts=1))
        try:
            slow = start_run(store, "the slow topic", agents=agent_configs("gpt-4o"), gateway=gateway)
            assert slow_asked.wait(WAIT)
            # Same gateway, so the same researcher actor, whose slow call is still out.
            fast = start_run(store, "the quick topic", agents=agent_configs("gpt-4o"), gateway=gateway)
            summary = fast.wait(timeout=WAIT)
            assert summary.status == "finished"
            assert not release.is_set() and slow.store.read(slow.run_id)[-1].type == "LLMCallRequested"
        finally:
            release.set()
        assert slow.wait(timeout=WAIT).status == "finished"
        gateway.close()


class Fatal(BaseException):
    """Worse than an exception: what kills an agent's call."""


def test_an_agents_crash_in_one_run_fails_that_run_only(store):
    go = threading.Event()

    def answer(request: ModelRequest) -> Any:
        if "doomed" in request.prompt:
            raise Fatal("the model pulled the plug")
        assert go.wait(WAIT)
        return offline_answer(request)

    gateway = Gateway(timeout=None, models={"m": FunctionModel(answer, name="m")})
    try:
        survivor = start_run(store, "a survivor topic", agents=agent_configs("m"), gateway=gateway)
        doomed = start_run(store, "a doomed topic", agents=agent_configs("m"), gateway=gateway)
        with pytest.raises(AgentDied, match="agent researcher died .*Fatal: the model pulled the plug"):
            doomed.wait(timeout=WAIT)
        go.set()
        assert survivor.wait(timeout=WAIT).status == "finished"
    finally:
        go.set()
        gateway.close()


# --- the pooled actor itself --------------------------------------------------------------


class Counter(PooledActor):
    """Records how many of its turns ever ran at once, and the order of each sender's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = self.most = 0
        self.seen: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    def on_receive(self, message: Any) -> Any:
        sender, n = message
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0)  # let another thread in, if one could get in
        self.seen.setdefault(sender, []).append(n)
        with self._lock:
            self.inside -= 1
        return n


def test_a_pooled_actor_handles_one_message_at_a_time_in_each_senders_order():
    ref = Counter.start()
    try:
        def send(sender: int) -> None:
            for n in range(300):
                ref.tell((sender, n))

        senders = [threading.Thread(target=send, args=(s,)) for s in range(8)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(WAIT)
        assert ref.ask((99, 0), timeout=WAIT) == 0  # after every message told before it
        seen, most = ref.proxy().seen.get(timeout=WAIT), ref.proxy().most.get(timeout=WAIT)
        assert most == 1
        assert all(seen[s] == list(range(300)) for s in range(8))
    finally:
        ref.stop(timeout=WAIT)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask((0, 0), timeout=WAIT)


def test_the_dispatcher_runs_blocked_work_beside_other_work_and_its_threads_end_when_idle():
    dispatcher = Dispatcher(idle_seconds=0.2, name="test-dispatcher")
    blocked, release, other = threading.Event(), threading.Event(), threading.Event()
    dispatcher.submit(lambda: (blocked.set(), release.wait(WAIT)))
    assert blocked.wait(WAIT)
    dispatcher.submit(other.set)  # the first thread is held: a second one takes this
    assert other.wait(WAIT)
    assert dispatcher.threads == 2
    release.set()
    deadline = time.monotonic() + WAIT
    while dispatcher.threads and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dispatcher.threads == 0


def test_work_submitted_when_no_thread_can_start_waits_for_a_running_one(monkeypatch):
    dispatcher = Dispatcher(idle_seconds=5, name="test-limit")
    started, release, later = threading.Event(), threading.Event(), threading.Event()
    dispatcher.submit(lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    dispatcher.submit(later.set)  # no second thread: queued for the held one, not raised, not lost
    monkeypatch.undo()
    assert not later.is_set() and dispatcher.threads == 1
    release.set()
    assert later.wait(WAIT)
    fresh = Dispatcher(idle_seconds=5, name="test-none")
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):  # no thread at all: the caller hears
        fresh.submit(later.set)


def test_a_pooled_actors_stop_can_be_waited_for_and_its_urn_is_a_uuid():
    """The lighter start of a pooled actor keeps what pykka promises of ``actor_stopped`` and ``actor_urn``."""
    refs = [Counter.start() for _ in range(50)]
    try:
        assert len({ref.actor_urn for ref in refs}) == 50
        assert {uuid.UUID(ref.actor_urn.removeprefix("urn:uuid:")).version for ref in refs} == {4}
        waiter = threading.Thread(target=lambda: refs[0].actor_stopped.wait(WAIT))
        waiter.start()
        assert not refs[0].actor_stopped.wait(0.01)
        refs[0].stop()
        assert refs[0].actor_stopped.wait(WAIT) and refs[0].actor_stopped.is_set()
        waiter.join(WAIT)
        assert not waiter.is_alive()
    finally:
        for ref in refs[1:]:
            ref.stop(timeout=WAIT)


class Asker(PooledActor):
    """Asks another pooled actor from inside its own turn and waits for the answer."""

    def __init__(self, other: pykka.ActorRef):
        super().__init__()
        self.other = other

    def on_receive(self, message: Any) -> Any:
        return self.other.ask((1, message), timeout=WAIT) + 1


def test_an_actor_may_ask_another_from_its_turn_without_deadlock():
    counter = Counter.start()
    asker = Asker.start(counter)
    try:
        assert asker.ask(41, timeout=WAIT) == 42
    finally:
        asker.stop(timeout=WAIT)
        counter.stop(timeout=WAIT)


# --- when a run writes -------------------------------------------------------------------


class NotedWrites(SQLiteStore):
    """The SQLite store, noting the event types of each transaction a run's writer commits."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.writes: list[list[str]] = []

    def acquire_lease(self, run_id: str, owner: str, ttl: float, *, take_over: int | None = None,
                      first: Any = ()) -> Any:
        lease = super().acquire_lease(run_id, owner, ttl, take_over=take_over, first=first)
        self.writes.append([type(e).__name__ for e in first])
        return lease

    def append(self, run_id: str, events: Any, expected_seq: int, **kwargs: Any) -> int:
        seq = super().append(run_id, events, expected_seq, **kwargs)
        self.writes.append([type(e).__name__ for e in events])
        return seq


@pytest.mark.parametrize("research", ["single", "parallel"])
def test_a_new_runs_first_intents_commit_with_its_run_started_and_lease(tmp_path, research):
    store = NotedWrites(tmp_path / "log.db")
    heard: list[int] = []
    gate = Gate()
    gateway = Gateway(timeout=None, models={"m": FunctionModel(gate, name="m")})
    try:
        handle = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("m"), gateway=gateway,
                           research=research, observer=lambda stored: heard.append(stored.seq))
        first = 2 if research == "parallel" else 1
        assert gate.wait_for(first)  # the first calls are out: their intents are in the log
        assert [s.type for s in store.read(handle.run_id)] == ["RunStarted", *["LLMCallRequested"] * first]
        assert store.writes == [["RunStarted", *["LLMCallRequested"] * first]]  # one transaction, with the lease
        assert store.lease(handle.run_id).owner == owner_name()
        gate.open()
        summary = handle.wait(timeout=WAIT)
    finally:
        gate.open()
        gateway.close()
    events = store.read(summary.run_id)
    calls = sum(s.type == "LLMCallRequested" for s in events)
    assert summary.status == "finished" and calls >= 5
    # Then one transaction per answer: each holds that answer, its outcome and the next intent.
    assert len(store.writes) == 1 + calls
    assert all(w.count("LLMCallAnswered") >= 1 for w in store.writes[1:])
    assert heard == [s.seq for s in events[1:]]  # the observer hears of every event after RunStarted
    store.close()


def test_an_ended_run_leaves_nothing_for_the_cycle_collector(store):
    """A run's orchestrator, and with it the run's state (every event, prompt and draft), is
    freed as the run ends, and its idle agents as their gateway closes: no reference cycle
    keeps them until the collector's next pass."""
    gateway = Gateway(timeout=None, models={"m": FunctionModel(offline_answer, name="m")})
    gc.collect()
    gc.disable()
    try:
        summary = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("m"), gateway=gateway).wait(
            timeout=WAIT)
        left = [type(o).__name__ for o in gc.get_objects() if isinstance(o, (Orchestrator, AgentActor))]
        gateway.close()
        after_close = [type(o).__name__ for o in gc.get_objects() if isinstance(o, AgentActor)]
    finally:
        gc.enable()
        gateway.close()
    assert summary.status == "finished"
    assert sorted(left) == ["AgentActor"] * 3  # idle, kept for the process's next run
    assert after_close == []


def test_runs_one_after_another_share_their_agents_which_end_once_the_process_is_idle(store):
    """An agent no run holds is kept for the next run (no actor started or stopped per run), and
    ends once the dispatcher's threads have (``IDLE_SECONDS`` without work), its gateway left open."""
    gateway = Gateway(timeout=None, models={"m": FunctionModel(offline_answer, name="m")})
    try:
        def agents() -> list[str]:
            return sorted(ref.actor_urn for ref in pykka.ActorRegistry.get_all()
                          if ref.actor_class is AgentActor)

        first = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("m"), gateway=gateway)
        assert first.wait(timeout=WAIT).status == "finished"
        idle = agents()
        assert len(idle) == 3 and not [r for r in pykka.ActorRegistry.get_all() if r.actor_class is Orchestrator]
        second = start_run(store, "Explain PostgreSQL's MVCC", agents=agent_configs("m"), gateway=gateway)
        assert second.wait(timeout=WAIT).status == "finished"
        assert agents() == idle, "the second run took up the first run's agents"
        deadline = time.monotonic() + IDLE_SECONDS + WAIT
        while agents() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agents() == [], "idle agents end once the process has had no work for a while"
        assert AGENTS.count() == 0
    finally:
        gateway.close()


def test_a_decider_that_raises_on_the_first_decision_fails_the_run_through_its_handle(store, monkeypatch):
    class Broken(ContentPipeline):
        def decide(self, state: Any) -> Any:
            raise RuntimeError("the decider broke")

    monkeypatch.setitem(pipelines._PIPELINES, "broken", Broken())
    handle = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline"), pipeline="broken")
    with pytest.raises(RuntimeError, match="the decider broke"):
        handle.wait(timeout=WAIT)
    assert [s.type for s in store.read(handle.run_id)] == ["RunStarted"]  # no intent was made up
