"""Verify a recorded run against today's deciders, as Temporal's replayer does.

The recorded events are folded one by one; before each event that a decider produces
(a call's intent, an outcome, the run's end), today's ``decide`` is asked what it would
do in that state. The first recorded decision it would not make is reported. Inputs
from outside the decider (answers, failures, overrides, a person's decisions, a budget that
stopped the run and the failure it recorded) are folded as recorded.
"""

from __future__ import annotations

import msgspec

from agentlog.events import (
    ApprovalRequested,
    BudgetReached,
    DraftReady,
    Event,
    FindingsReady,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunStarted,
    ToolInvoked,
    request_hash,
)
from agentlog.pipelines import CallModel, InvokeTool, Pipeline, Record, get_pipeline
from agentlog.store import StoredEvent

# What the decider produces. A person's ApprovalDecided is an input, folded as recorded like an answer.
DECISIONS = (LLMCallRequested, ToolInvoked, OutputRejected, ResearchPartReady, FindingsReady, DraftReady,
             ReviewScored, RunFinished, RunFailed, ApprovalRequested)


class Divergence(msgspec.Struct, frozen=True):
    seq: int
    recorded: str
    expected: list[str]


class VerifyResult(msgspec.Struct, frozen=True):
    run_id: str
    checked: int  # decisions compared
    events: int
    divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


def _expected(pipeline: Pipeline, state: object) -> list[Event]:
    out: list[Event] = []
    for command in pipeline.decide(state):
        if isinstance(command, Record):
            out.append(command.event)
        elif isinstance(command, CallModel) and command.call_id not in state.calls:  # type: ignore[attr-defined]
            out.append(LLMCallRequested(
                call_id=command.call_id, agent=command.agent, step=command.step, attempt=command.attempt,
                request=command.request, request_hash=request_hash(command.request), round=command.round,
            ))
        elif isinstance(command, InvokeTool) and command.tool_call_id not in state.calls[command.call_id].invoked:  # type: ignore[attr-defined]
            out.append(ToolInvoked(call_id=command.call_id, tool_call_id=command.tool_call_id, name=command.name,
                                   arguments=command.arguments))
    return out


def _same(recorded: Event, expected: Event) -> bool:
    if isinstance(recorded, LLMCallRequested) and isinstance(expected, LLMCallRequested):
        return (recorded.call_id, recorded.request_hash) == (expected.call_id, expected.request_hash)
    if isinstance(recorded, DraftReady) and isinstance(expected, DraftReady):
        # Copied drafts carry their source; the decision is the draft itself.
        return (recorded.iteration, recorded.draft, recorded.call_id) == (expected.iteration, expected.draft, expected.call_id)
    return recorded == expected


def describe(event: Event) -> str:
    if isinstance(event, LLMCallRequested):
        return f"LLMCallRequested {event.call_id} ({event.agent}, model {event.request.get('model')}, hash {event.request_hash[:12]})"
    text = repr(event)
    return text if len(text) <= 200 else text[:197] + "..."


def verify(run_id: str, stored: list[StoredEvent], pipeline: Pipeline | None = None) -> VerifyResult:
    if pipeline is None:
        first = stored[0].event if stored else None
        pipeline = get_pipeline(first.pipeline if isinstance(first, RunStarted) else "content")
    state = pipeline.initial_state()
    checked = 0
    copying = stopped = False
    for s in stored:
        event = s.event
        # The orchestrator, not the decider, stops a run at its budget.
        budget_stop, stopped = stopped and isinstance(event, RunFailed), isinstance(event, BudgetReached)
        # A re-review's findings and drafts were copied in, decided by another run.
        if isinstance(event, RunStarted):
            copying = event.parent_run_id is not None
        elif copying and not isinstance(event, (FindingsReady, DraftReady)):
            copying = False
        if isinstance(event, DECISIONS) and not copying and not budget_stop:
            expected = _expected(pipeline, state)
            checked += 1
            if not any(_same(event, x) for x in expected):
                return VerifyResult(run_id, checked, len(stored), Divergence(
                    seq=s.seq, recorded=describe(event), expected=[describe(x) for x in expected]))
        state = pipeline.evolve(state, event)
    return VerifyResult(run_id, checked, len(stored))
