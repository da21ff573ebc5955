"""A run rebuilt from its events for people and machines: timeline, outputs, outcome.

The one fold of a run's events for display: the CLI's ``show``, ``replay`` and ``--json``
and the web viewer all read this view. Pure: reads stored events, needs no network, no
key, no model.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    ApprovalDecided,
    ApprovalRequested,
    BudgetReached,
    CallRef,
    DraftReady,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunClaimed,
    RunForked,
    RunQueued,
    RunResumed,
    RunStarted,
    SettingsChanged,
    SweepMember,
    ToolInvoked,
    ToolReturned,
    apply_reconfiguration,
)
from agentlog.store import StoredEvent


# Events after which a run that waits for a person still waits (as in the runs index).
_KEEPS_WAITING = (RunForked, RunResumed, RunQueued, RunClaimed, AgentReconfigured, SettingsChanged,
                  ApprovalRequested)


class CallView(msgspec.Struct, kw_only=True):
    seq: int
    call_id: str
    step: str
    agent: str
    model: str
    attempt: int
    status: str = "requested"  # requested | answered | reused | failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    failures: int = 0
    reused_from: CallRef | None = None
    error: str | None = None


class ToolView(msgspec.Struct, kw_only=True):
    """One tool call: what the model asked for and what it got back."""

    seq: int
    call_id: str
    tool_call_id: str
    name: str
    arguments: str
    step: str = ""
    agent: str = ""
    status: str = "invoked"  # invoked | returned | error | reused
    result: str | None = None
    reused_from: CallRef | None = None


class TimelineRow(msgspec.Struct, kw_only=True):
    """One event as a row. ``detail`` is short, for terminal tables; ``description`` says it all
    (error messages, tool results, verdicts), for the viewer, which has the room."""

    seq: int
    recorded_at: float
    type: str
    step: str = ""
    agent: str = ""
    model: str = ""
    detail: str = ""
    description: str = ""
    tokens: int = 0
    latency_ms: float | None = None
    reused: bool = False  # an answer or tool result that came from the log, not from a model or tool
    live: bool = False  # an answer that came from a model
    copied: bool = False  # a fork's copy of its parent's event
    link_run: str | None = None  # a run the row refers to: parent, or where a reused answer was recorded


class DraftView(msgspec.Struct, kw_only=True):
    iteration: int
    seq: int
    draft: str
    source: CallRef | None = None


class ReviewView(msgspec.Struct, kw_only=True):
    iteration: int
    seq: int
    review: Review
    model: str = ""


class DecisionView(msgspec.Struct, kw_only=True):
    """A person's decision on a draft: who, when (the store's clock), what, and why."""

    iteration: int
    seq: int
    recorded_at: float
    decision: str  # approve | edit | reject
    by: str
    note: str = ""


class RunView(msgspec.Struct, kw_only=True):
    run_id: str
    task: str = ""
    pipeline: str = ""
    agents: dict[str, AgentConfig] = {}
    max_iterations: int = 0
    threshold: int = 0
    parent_run_id: str | None = None
    fork_seq: int | None = None
    status: str = "running"  # queued | running | waiting | finished | failed
    approval: str = "never"
    waiting_for: int | None = None  # the draft a person is asked to decide on
    waiting_point: str | None = None  # final | review
    decisions: list[DecisionView] = []
    finish_reason: str | None = None
    failure: str | None = None
    ended: RunFinished | RunFailed | None = None  # the event that ended the run, if it has ended
    findings: Findings | None = None
    research: str = "single"
    research_parts: dict[str, Findings] = {}
    drafts: list[DraftView] = []
    reviews: list[ReviewView] = []
    calls: list[CallView] = []
    tools: list[ToolView] = []
    timeline: list[TimelineRow] = []
    last_seq: int = 0
    live_tokens: int = 0
    reused_tokens: int = 0
    budget_usd: float | None = None
    budget_tokens: int | None = None
    sample: int = 1
    sweep_id: str | None = None  # the sweep this run is a member of, and as which variant
    sweep_variant: str | None = None

    @property
    def final_draft(self) -> str | None:
        return self.drafts[-1].draft if self.drafts else None

    @property
    def scores(self) -> list[int]:
        return [r.review.score for r in self.reviews]

    def to_builtins(self) -> dict[str, Any]:
        data = msgspec.to_builtins(self)
        data["final_draft"] = self.final_draft
        data["scores"] = self.scores
        return data


def build_view(run_id: str, stored: list[StoredEvent]) -> RunView:
    view = RunView(run_id=run_id)
    calls: dict[str, CallView] = {}
    tools: dict[tuple[str, str], ToolView] = {}
    for s in stored:
        e = s.event
        row = TimelineRow(seq=s.seq, recorded_at=s.recorded_at, type=s.type)
        if view.waiting_for is not None and not isinstance(e, _KEEPS_WAITING):
            # The run went on (a decision, or a fork that turned approval off): no longer waiting.
            view.waiting_for = view.waiting_point = None
            if view.status == "waiting":
                view.status = "running"
        match e:
            case RunStarted():
                view.task, view.pipeline, view.agents = e.task, e.pipeline, dict(e.agents)
                view.max_iterations, view.threshold = e.max_iterations, e.threshold
                view.parent_run_id = e.parent_run_id or view.parent_run_id
                view.research, view.approval = e.research, e.approval
                view.budget_usd, view.budget_tokens, view.sample = e.budget_usd, e.budget_tokens, e.sample
                row.detail = f"{e.pipeline}: {e.task}" + (" (parallel research)" if e.research == "parallel" else "")
                models = ", ".join(f"{name}: {c.model}" for name, c in e.agents.items())
                row.description, row.link_run = f"{e.pipeline}: {e.task} [{models}]", e.parent_run_id
            case RunForked():
                view.parent_run_id, view.fork_seq = e.parent_run_id, e.parent_seq
                view.finish_reason, view.failure, view.ended = None, None, None
                view.status = "waiting" if view.waiting_for is not None else "running"
                # Tokens count what this run spent, not what it copied from its parent.
                view.live_tokens = view.reused_tokens = 0
                view.sweep_id = view.sweep_variant = None  # a fork of a sweep's run is not in the sweep
                for copied in view.timeline:
                    copied.copied = copied.seq <= e.parent_seq
                row.detail = f"forked from {e.parent_run_id} at event {e.parent_seq}"
                row.link_run = e.parent_run_id
            case RunResumed():
                view.failure, view.ended = None, None
                view.status = "waiting" if view.waiting_for is not None else "running"
                row.detail = f"resumed after event {e.previous_seq}"
            case RunQueued():
                view.status = "waiting" if view.waiting_for is not None else "queued"
                row.detail = "queued for a worker"
            case RunClaimed():
                view.status = "waiting" if view.waiting_for is not None else "running"
                row.detail = f"claimed by worker {e.worker} after event {e.previous_seq}"
            case AgentReconfigured():
                old = view.agents.get(e.agent, AgentConfig(model="", temperature=0.0))
                view.agents[e.agent] = apply_reconfiguration(old, e)
                row.agent, row.model = e.agent, e.model or ""
                row.detail = _assignments(e, AgentConfig.__struct_fields__)
            case SettingsChanged():
                # The view holds every setting under the event's own names, so a new setting
                # shows up here without another branch.
                for name in SettingsChanged.__struct_fields__:
                    if (value := getattr(e, name)) is not None:
                        setattr(view, name, value)
                row.description = _assignments(e, SettingsChanged.__struct_fields__)
                row.detail = row.description
            case LLMCallRequested():
                call = CallView(seq=s.seq, call_id=e.call_id, step=e.step, agent=e.agent,
                                model=str(e.request.get("model", "")), attempt=e.attempt)
                calls[e.call_id] = call
                view.calls.append(call)
                row.step, row.agent, row.model = e.step, e.agent, call.model
                row.detail = f"call {e.call_id}"
                row.description = f"call {e.call_id}, attempt {e.attempt}"
            case LLMCallAnswered():
                call = calls.get(e.call_id)
                reused = e.reused_from is not None
                if call is not None:
                    call.status = "reused" if reused else "answered"
                    call.prompt_tokens, call.completion_tokens = e.usage.prompt_tokens, e.usage.completion_tokens
                    call.latency_ms, call.reused_from = e.latency_ms, e.reused_from
                    row.step = call.step
                # The model that answered, as the provider names it; else the one asked for.
                row.model = e.model or (call.model if call else "")
                tool_calls = f", {len(e.tool_calls)} tool call(s)" if e.tool_calls else ""
                if e.reused_from is not None:
                    view.reused_tokens += e.usage.total_tokens
                    row.detail = f"reused from {e.reused_from.run_id}#{e.reused_from.seq}"
                    row.description = f"reused from {e.reused_from.run_id} event {e.reused_from.seq}{tool_calls}"
                    row.link_run = e.reused_from.run_id
                else:
                    view.live_tokens += e.usage.total_tokens
                    row.detail = f"{len(e.content)} chars" + (f", {len(e.tool_calls)} tool calls" if e.tool_calls else "")
                    row.description = f"call {e.call_id}{tool_calls}"
                row.agent, row.tokens, row.latency_ms = e.agent, e.usage.total_tokens, e.latency_ms
                row.reused, row.live = reused, not reused
            case LLMCallFailed():
                call = calls.get(e.call_id)
                if call is not None:
                    call.failures += 1
                    if e.gave_up:
                        call.status, call.error = "failed", f"{e.error_kind}: {e.message}"
                    row.step, row.model = call.step, call.model
                row.agent = e.agent
                row.detail = f"attempt {e.attempt}: {e.error_kind}" + (" (gave up)" if e.gave_up else " (retrying)")
                row.description = f"attempt {e.attempt}: {e.error_kind}: {e.message}" + (
                    " (gave up)" if e.gave_up else " (will retry)" if e.retryable else "")
            case OutputRejected():
                row.step, row.agent, row.detail = e.step, e.agent, e.reason
            case ToolInvoked():
                call = calls.get(e.call_id)
                tool = ToolView(seq=s.seq, call_id=e.call_id, tool_call_id=e.tool_call_id, name=e.name,
                                arguments=e.arguments, step=call.step if call else "", agent=call.agent if call else "")
                tools[(e.call_id, e.tool_call_id)] = tool
                view.tools.append(tool)
                row.step, row.agent = tool.step, tool.agent
                row.detail = f"{e.name}({e.arguments})"
            case ToolReturned():
                tool = tools.get((e.call_id, e.tool_call_id))
                if tool is not None:
                    tool.result, tool.reused_from = e.result, e.reused_from
                    tool.status = "error" if e.is_error else "reused" if e.reused_from else "returned"
                    row.step, row.agent = tool.step, tool.agent
                row.reused = e.reused_from is not None
                row.detail = f"{e.name} -> {len(e.result)} chars" + (" (error)" if e.is_error else "") + (
                    f", reused from {e.reused_from.run_id}#{e.reused_from.seq}" if e.reused_from else "")
                row.description = f"{e.name} -> " + ("error: " if e.is_error else "") + e.result + (
                    f" (reused from {e.reused_from.run_id} event {e.reused_from.seq})" if e.reused_from else "")
                row.link_run = e.reused_from.run_id if e.reused_from else None
            case ResearchPartReady():
                view.research_parts[e.part] = e.findings
                row.step = "research-facts" if e.part == "facts" else "research-counter"
                row.agent = "researcher" if e.part == "facts" else "counter_researcher"
                row.detail = (f"{e.part} part: {len(e.findings.key_areas)} key areas, "
                              f"{len(e.findings.sources)} sources")
            case FindingsReady():
                view.findings = e.findings
                row.step, row.agent = "research", "researcher"
                row.detail = f"{len(e.findings.key_areas)} key areas, {len(e.findings.sources)} sources"
            case DraftReady():
                view.drafts.append(DraftView(iteration=e.iteration, seq=s.seq, draft=e.draft, source=e.source))
                by_person = e.call_id.startswith("person-")  # a person's edit (see ApprovalDecided)
                row.step, row.agent = f"write-{e.iteration}", "(person)" if by_person else "writer"
                row.detail = f"draft {e.iteration}: {len(e.draft)} chars" + (", a person's edit" if by_person else "")
                row.description = f"draft {e.iteration}: {len(e.draft)} characters" + (
                    f", copied from {e.source.run_id} event {e.source.seq}" if e.source else "")
                row.link_run = e.source.run_id if e.source else None
            case ReviewScored():
                call = calls.get(e.call_id)
                view.reviews.append(ReviewView(iteration=e.iteration, seq=s.seq, review=e.review,
                                               model=call.model if call else ""))
                row.step, row.agent = f"review-{e.iteration}", "reviewer"
                row.detail = f"score {e.review.score}/10"
                row.description = (f"draft {e.iteration}: score {e.review.score}, "
                                   + ("approved" if e.review.approved else "not approved"))
            case ApprovalRequested():
                view.status, view.waiting_for, view.waiting_point = "waiting", e.iteration, e.point
                row.step = f"approve-{e.iteration}"
                row.detail = f"waiting for a person to decide on draft {e.iteration} ({e.point})"
            case ApprovalDecided():
                view.status, view.waiting_for, view.waiting_point = "running", None, None
                view.decisions.append(DecisionView(iteration=e.iteration, seq=s.seq, recorded_at=s.recorded_at,
                                                   decision=e.decision, by=e.by, note=e.note))
                row.step, row.agent = f"approve-{e.iteration}", e.by
                verb = {"approve": "approved", "edit": "edited", "reject": "sent back"}[e.decision]
                row.detail = f"{e.by} {verb} draft {e.iteration}" + (f": {e.note}" if e.note else "")
            case RunFinished():
                view.status, view.finish_reason, view.ended = "finished", e.reason, e
                row.detail = f"{e.reason} after {e.iterations} iteration(s)" + (f", score {e.score}" if e.score else "")
                row.description = f"{e.reason.replace('_', ' ')}, {e.iterations} iteration(s)" + (
                    f", score {e.score}" if e.score is not None else "")
            case BudgetReached():
                spent = f"${e.spent:,.4f} of ${e.limit:,.4f}" if e.budget == "usd" else \
                    f"{e.spent:,.0f} of {e.limit:,.0f} tokens"
                row.detail = f"{e.scope} budget reached ({spent}); call {e.call_id} not sent"
            case SweepMember():
                view.sweep_id, view.sweep_variant, view.sample = e.sweep_id, e.variant, e.sample
                row.detail = f"member of sweep {e.sweep_id}: variant {e.variant}, sample {e.sample}"
                row.link_run = e.parent_run_id
            case RunFailed():
                view.status, view.failure, view.ended = "failed", e.reason, e
                row.step, row.detail = e.step or "", e.reason
                row.description = e.reason + (" (retryable)" if e.retryable else "")
        row.description = row.description or row.detail
        view.timeline.append(row)
        view.last_seq = s.seq
    return view


def _assignments(event: AgentReconfigured | SettingsChanged, names: tuple[str, ...]) -> str:
    """``name=value`` for each of ``names`` the event sets (``None`` leaves a value alone)."""
    return ", ".join(f"{k}={getattr(event, k)}" for k in names if getattr(event, k) is not None)
