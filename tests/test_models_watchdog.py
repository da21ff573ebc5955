"""An in-process model under the run's timeout runs inline, watched by one timer thread.

Real runs, real threads, synchronised by events (every wait bounded): a model that hangs is
settled as a ``timeout`` failure and retried by the policy while it still hangs; another
run's call through the same agents answers meanwhile; the late answers, once released, are
never recorded; an answer at the deadline's instant settles its call once; and the threads
end once idle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agentlog import Completion, FunctionModel, Gateway, ModelRequest, RetryPolicy, SQLiteStore, agent_configs, run
from agentlog.actors import start_run
from agentlog.actors.dispatch import DISPATCHER
from agentlog.models import CallFailed, offline
from agentlog.models.inprocess import ModelTimeout, Overtaken, Watchdog
from tests.test_runtime_threads import WAIT, settle, threads

TASK = "Explain how Kubernetes horizontal pod autoscaling works"


def offline_answer(request: ModelRequest) -> Completion:
    return offline.complete({"model": request.model, "messages": request.messages, "tools": request.tools,
                             "response_format": request.response_format, **request.parameters})


def quick_gateway(timeout: float, max_attempts: int, **kwargs: Any) -> Gateway:
    """No waiting between retries, so the tests stay fast."""
    return Gateway(timeout=timeout, retry=RetryPolicy(max_attempts=max_attempts, initial_wait=0.0, max_wait=0.0),
                   sleep=lambda seconds: None, **kwargs)


class Hang:
    """A model whose calls on a task containing ``HANGS`` block until ``release()``; others answer."""

    def __init__(self) -> None:
        self.release_event = threading.Event()
        self._cond = threading.Condition()
        self.entered = self.returned = 0

    def release(self) -> None:
        self.release_event.set()

    def wait_for(self, what: str, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: getattr(self, what) >= n, timeout=WAIT)

    def __call__(self, request: ModelRequest) -> Completion:
        if "HANGS" in request.prompt:
            with self._cond:
                self.entered += 1
                self._cond.notify_all()
            assert self.release_event.wait(WAIT), "never released"
            with self._cond:
                self.returned += 1
                self._cond.notify_all()
        return offline_answer(request)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "log.db")
    yield s
    s.close()


def of_type(store: SQLiteStore, run_id: str, name: str) -> list:
    return [s.event for s in store.read(run_id) if s.type == name]


def test_a_hung_model_is_recorded_as_timeouts_and_failed_by_the_policy_its_late_answers_dropped(store):
    baseline = settle(threads())
    model = Hang()
    gateway = quick_gateway(0.2, 2, models=FunctionModel(model, name="hangs"))
    started = time.monotonic()
    try:
        summary = run(store, f"{TASK} HANGS", agents=agent_configs("hangs"), gateway=gateway)
        elapsed = time.monotonic() - started
        # Both tries still hang: the run was settled by the timeout, not by the model.
        assert (model.entered, model.returned) == (2, 0)
    finally:
        model.release()
        gateway.close()
    assert elapsed < WAIT, "the timeout did not apply"
    assert summary.status == "failed"
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.attempt, f.error_kind, f.retryable, f.gave_up) for f in failed] == [
        (1, "timeout", True, False), (2, "timeout", True, True)]
    assert failed[0].message == "in-process model 'hangs' did not answer within 0.2 s"

    # Released, the two late answers come back and are dropped: nothing more is written.
    assert model.wait_for("returned", 2)
    assert settle(baseline) <= baseline, "the hung calls' threads and the watchdog end once idle"
    assert store.read(summary.run_id)[-1].seq == summary.last_seq
    assert not of_type(store, summary.run_id, "LLMCallAnswered")


def test_a_timeout_then_an_answer_is_retried_on_another_thread_and_the_run_finishes(store):
    calls = []
    release = threading.Event()

    def first_hangs(request: ModelRequest) -> Completion:
        calls.append((request.step, request.retry, threading.current_thread().name))
        if len(calls) == 1:
            assert release.wait(WAIT), "never released"
        return offline_answer(request)

    gateway = quick_gateway(0.2, 3, models=FunctionModel(first_hangs, name="first-hangs"))
    try:
        summary = run(store, TASK, agents=agent_configs("first-hangs"), gateway=gateway, max_iterations=1)
    finally:
        release.set()
        gateway.close()
    assert summary.status == "finished"
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.attempt, f.error_kind, f.gave_up) for f in failed] == [(1, "timeout", False)]
    # The first try's thread is still held by it: the retry ran on another.
    (step, retry0, hung), (same, retry1, other) = calls[:2]
    assert (step, retry0, retry1) == (same, 0, 1) and hung != other
    answered = of_type(store, summary.run_id, "LLMCallAnswered")
    assert len(answered) == len(of_type(store, summary.run_id, "LLMCallRequested"))


def test_another_runs_call_answers_through_the_same_agents_while_one_hangs(store):
    model = Hang()
    gateway = quick_gateway(WAIT, 1, models=FunctionModel(model, name="shared"))
    try:
        hung = start_run(store, f"{TASK} HANGS", agents=agent_configs("shared"), gateway=gateway)
        assert model.wait_for("entered", 1)
        other = run(store, "Explain how a B-tree stays balanced", agents=agent_configs("shared"), gateway=gateway)
        assert other.status == "finished"
        assert (model.entered, model.returned) == (1, 0), "the other run went on while this call hung"
        assert not of_type(store, hung.run_id, "LLMCallFailed")
        model.release()
        assert hung.wait(timeout=WAIT).status == "finished"  # released before its deadline: answered
    finally:
        model.release()
        gateway.close()


def test_an_answer_at_the_deadline_settles_its_call_once():
    """Direct calls whose model returns as its timeout comes: each call ends exactly one way."""
    timeout, calls = 0.01, 40
    never = threading.Event()

    def at_deadline(request: ModelRequest) -> str:
        if request.retry:
            return "retry"
        never.wait(timeout)  # returns as the deadline comes: a race with the watchdog
        return "late"

    gateway = quick_gateway(timeout, 2, models=FunctionModel(at_deadline, name="edge"))
    request = {"model": "edge", "messages": [{"role": "user", "content": "hi"}]}
    outcomes = []
    try:
        for _ in range(calls):
            failures: list = []
            resumed: list = []
            done = threading.Event()

            def handoff(resume: Any, resumed: list = resumed, done: threading.Event = done) -> None:
                def go() -> None:
                    try:
                        resumed.append(resume().content)
                    finally:
                        done.set()

                threading.Thread(target=go).start()

            try:
                content = gateway.complete(request, failures.append, handoff=handoff).content
            except Overtaken:
                assert done.wait(WAIT), "the overtaken call was never resumed"
                assert [f.error_kind for f in failures] == ["timeout"] and resumed == ["retry"]
                outcomes.append("timeout")
            else:
                assert not done.is_set() and content == "late" and not failures and not resumed
                outcomes.append("answered")
    finally:
        gateway.close()
    assert len(outcomes) == calls


def test_the_watchdog_settles_each_deadline_once_under_a_race():
    watchdog = Watchdog(idle_seconds=0.05)
    rounds = 300
    expired: list[int] = []
    expiries = threading.Semaphore(0)

    def expire(i: int) -> None:
        expired.append(i)
        expiries.release()

    won = 0
    for i in range(rounds):
        deadline = watchdog.arm(0.0, lambda i=i: expire(i))  # due at once: the timer races this settle
        won += watchdog.settle(deadline)
        assert not watchdog.settle(deadline), "settled twice"
    for _ in range(rounds - won):  # the expiries the settles lost to, some maybe still on their way
        assert expiries.acquire(timeout=WAIT), f"{won} settled, only {len(expired)} expired of {rounds}"
    assert not expiries.acquire(timeout=0.1), "a deadline settled by its caller expired too"
    assert sorted(expired) == sorted(set(expired))


def test_a_direct_call_without_a_handoff_still_times_out():
    release = threading.Event()
    gateway = quick_gateway(0.1, 1, models=FunctionModel(lambda r: release.wait(WAIT) and "late", name="slow"))
    try:
        with pytest.raises(CallFailed) as caught:
            gateway.complete({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        release.set()
        gateway.close()
    assert caught.value.failure.error_kind == "timeout" and isinstance(caught.value.__cause__, ModelTimeout)


def test_hung_calls_as_many_as_the_dispatchers_threads_do_not_freeze_the_process(store, monkeypatch):
    """Each overrun try keeps its thread until the model returns; that thread no longer counts
    against the dispatcher's cap, so the retries, the failure and other runs still get threads."""
    cap, tries = 4, 4
    monkeypatch.setattr(DISPATCHER, "max_threads", cap)  # restored after the test
    model = Hang()
    gateway = quick_gateway(0.2, tries, models=FunctionModel(model, name="hangs-everywhere"))
    hung = start_run(store, f"{TASK} HANGS", agents=agent_configs("hangs-everywhere"), gateway=gateway)
    try:
        assert model.wait_for("entered", tries), f"only {model.entered} of {tries} tries began"
        summary = hung.wait(timeout=10.0)  # before the fix: pykka.Timeout, every thread held by a hung try
        other = start_run(store, "Explain how a B-tree stays balanced", agents=agent_configs("hangs-everywhere"),
                          gateway=gateway).wait(timeout=10.0)
        assert (model.entered, model.returned) == (tries, 0), "the runs settled while every try still hung"
        assert DISPATCHER.threads <= cap
    finally:
        model.release()
        if not hung.ended():  # a failure above: the run settles once its threads come back
            hung.wait(timeout=WAIT)
        gateway.close()
    assert summary.status == "failed" and other.status == "finished"
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.attempt, f.error_kind, f.gave_up) for f in failed] == [
        (n, "timeout", n == tries) for n in range(1, tries + 1)]
    # Released, the hung threads return, drop their late answers and leave the pool.
    assert model.wait_for("returned", tries)
    assert not of_type(store, summary.run_id, "LLMCallAnswered")


class LegacyGateway(Gateway):
    """A subclass written before ``context=`` and ``handoff=``: explicit keywords, no ``**kwargs``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models_asked: list[str] = []

    def complete(self, request, on_failure=lambda f: None, *, on_delta=None):  # noqa: ANN001, ANN201
        self.models_asked.append(request["model"])
        return super().complete(request, on_failure, on_delta=on_delta)


def test_a_gateway_whose_complete_takes_no_handoff_is_called_as_before(store):
    release = threading.Event()
    calls = []

    def first_hangs(request: ModelRequest) -> Completion:
        calls.append(request.retry)
        if len(calls) == 1:
            assert release.wait(WAIT), "never released"
        return offline_answer(request)

    gateway = LegacyGateway(timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_wait=0.0, max_wait=0.0),
                            sleep=lambda seconds: None, models=FunctionModel(first_hangs, name="legacy"))
    try:
        summary = run(store, TASK, agents=agent_configs("legacy"), gateway=gateway, max_iterations=1)
    finally:
        release.set()
        gateway.close()
    assert summary.status == "finished"
    # Called with what it takes; the timeout still applies (on a worker thread, as before handoff).
    assert gateway.models_asked and set(gateway.models_asked) == {"legacy"}
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.attempt, f.error_kind, f.gave_up) for f in failed] == [(1, "timeout", False)]
    assert len(of_type(store, summary.run_id, "LLMCallAnswered")) == len(of_type(store, summary.run_id,
                                                                                 "LLMCallRequested"))
