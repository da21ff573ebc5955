"""What the viewer shows of a run, folded from its stored events (pure: no I/O, no HTML)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    CallRef,
    DraftReady,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunResumed,
    RunStarted,
    SettingsChanged,
    ToolInvoked,
    ToolReturned,
)
from agentlog.store import RunSummary, StoredEvent


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    recorded_at: float
    type: str
    step: str = ""
    agent: str = ""
    model: str = ""
    latency_ms: float | None = None
    tokens: int | None = None
    reused_from: CallRef | None = None
    live: bool = False  # an answer that came from a model, not from the log
    copied: bool = False  # a fork's copy of its parent's event
    detail: str = ""
    link_run: str | None = None  # a run the detail refers to


@dataclass(frozen=True)
class Draft:
    iteration: int
    text: str
    seq: int
    source: CallRef | None


@dataclass(frozen=True)
class ScoredReview:
    iteration: int
    review: Review
    seq: int


@dataclass(frozen=True)
class ConfigChange:
    seq: int
    what: str


@dataclass
class RunView:
    summary: RunSummary
    started: RunStarted | None = None
    rows: list[TimelineRow] = field(default_factory=list)
    findings: Findings | None = None
    drafts: list[Draft] = field(default_factory=list)
    reviews: list[ScoredReview] = field(default_factory=list)
    agents: dict[str, AgentConfig] = field(default_factory=dict)
    settings: dict[str, int] = field(default_factory=dict)
    changes: list[ConfigChange] = field(default_factory=list)
    outcome: str = ""

    @property
    def scores(self) -> dict[int, int]:
        """The score of each iteration; a later review of the same iteration wins."""
        return {r.iteration: r.review.score for r in self.reviews}

    @property
    def final_draft(self) -> Draft | None:
        return self.drafts[-1] if self.drafts else None


def build_view(summary: RunSummary, events: list[StoredEvent]) -> RunView:
    view = RunView(summary)
    steps: dict[str, str] = {}  # call id -> pipeline step
    fork_seq = summary.fork_seq or 0
    for stored in events:
        view.rows.append(_row(stored, steps, copied=stored.seq <= fork_seq))
        _fold(view, stored)
    return view


def _fold(view: RunView, stored: StoredEvent) -> None:
    match stored.event:
        case RunStarted() as e:
            view.started = e
            view.agents = dict(e.agents)
            view.settings = {"max_iterations": e.max_iterations, "threshold": e.threshold}
        case AgentReconfigured() as e:
            old = view.agents.get(e.agent)
            fields = {k: getattr(e, k) for k in ("model", "temperature", "system_prompt", "max_tokens")
                      if getattr(e, k) is not None}
            if old is not None:
                view.agents[e.agent] = AgentConfig(**({f: getattr(old, f) for f in AgentConfig.__struct_fields__}
                                                      | fields))
            elif "model" in fields and "temperature" in fields:
                view.agents[e.agent] = AgentConfig(**fields)
            view.changes.append(ConfigChange(stored.seq, f"{e.agent}: " + ", ".join(
                f"{k}={v}" for k, v in fields.items())))
        case SettingsChanged() as e:
            for key in ("max_iterations", "threshold"):
                if getattr(e, key) is not None:
                    view.settings[key] = getattr(e, key)
            view.changes.append(ConfigChange(stored.seq, ", ".join(
                f"{k}={getattr(e, k)}" for k in ("max_iterations", "threshold") if getattr(e, k) is not None)))
        case FindingsReady() as e:
            view.findings = e.findings
        case DraftReady() as e:
            view.drafts.append(Draft(e.iteration, e.draft, stored.seq, e.source))
        case ReviewScored() as e:
            view.reviews.append(ScoredReview(e.iteration, e.review, stored.seq))
        case RunFinished() as e:
            view.outcome = f"finished: {e.reason.replace('_', ' ')} after {e.iterations} iteration(s)"
        case RunFailed() as e:
            view.outcome = f"failed: {e.reason}" + (f" (at {e.step})" if e.step else "")
        case RunResumed():
            view.outcome = ""


def _row(stored: StoredEvent, steps: dict[str, str], *, copied: bool) -> TimelineRow:
    base = {"seq": stored.seq, "recorded_at": stored.recorded_at, "type": stored.type, "copied": copied}
    match stored.event:
        case RunStarted() as e:
            models = ", ".join(f"{name}: {c.model}" for name, c in e.agents.items())
            return TimelineRow(**base, detail=f"{e.pipeline}: {e.task} [{models}]", link_run=e.parent_run_id)
        case RunForked() as e:
            return TimelineRow(**base, detail=f"forked from {e.parent_run_id} at event {e.parent_seq}",
                               link_run=e.parent_run_id)
        case RunResumed() as e:
            return TimelineRow(**base, detail=f"resumed after event {e.previous_seq}")
        case AgentReconfigured() as e:
            return TimelineRow(**base, agent=e.agent, model=e.model or "",
                               detail=", ".join(f"{k}={getattr(e, k)}" for k in
                                                ("model", "temperature", "system_prompt", "max_tokens")
                                                if getattr(e, k) is not None))
        case SettingsChanged() as e:
            return TimelineRow(**base, detail=", ".join(f"{k}={getattr(e, k)}" for k in
                                                        ("max_iterations", "threshold") if getattr(e, k) is not None))
        case LLMCallRequested() as e:
            steps[e.call_id] = e.step
            return TimelineRow(**base, step=e.step, agent=e.agent, model=str(e.request.get("model", "")),
                               detail=f"call {e.call_id}, attempt {e.attempt}")
        case LLMCallAnswered() as e:
            reused = e.reused_from
            return TimelineRow(
                **base, step=steps.get(e.call_id, ""), agent=e.agent, model=e.model, latency_ms=e.latency_ms,
                tokens=e.usage.total_tokens, reused_from=reused, live=reused is None,
                detail=(f"reused from {reused.run_id} event {reused.seq}" if reused else f"call {e.call_id}")
                + (f", {len(e.tool_calls)} tool call(s)" if e.tool_calls else ""),
                link_run=reused.run_id if reused else None,
            )
        case LLMCallFailed() as e:
            return TimelineRow(**base, step=steps.get(e.call_id, ""), agent=e.agent,
                               detail=f"attempt {e.attempt}: {e.error_kind}: {e.message}"
                               + (" (gave up)" if e.gave_up else " (will retry)" if e.retryable else ""))
        case OutputRejected() as e:
            return TimelineRow(**base, step=e.step, agent=e.agent, detail=e.reason)
        case ToolInvoked() as e:
            return TimelineRow(**base, step=steps.get(e.call_id, ""), detail=f"{e.name}({e.arguments})")
        case ToolReturned() as e:
            return TimelineRow(**base, step=steps.get(e.call_id, ""),
                               detail=f"{e.name} -> " + ("error: " if e.is_error else "") + e.result)
        case FindingsReady() as e:
            return TimelineRow(**base, step=steps.get(e.call_id, "research"),
                               detail=f"{len(e.findings.key_areas)} key areas, {len(e.findings.sources)} sources")
        case DraftReady() as e:
            source = f", copied from {e.source.run_id} event {e.source.seq}" if e.source else ""
            return TimelineRow(**base, step=steps.get(e.call_id, ""),
                               detail=f"draft {e.iteration}: {len(e.draft)} characters{source}",
                               link_run=e.source.run_id if e.source else None)
        case ReviewScored() as e:
            verdict = "approved" if e.review.approved else "not approved"
            return TimelineRow(**base, step=steps.get(e.call_id, ""),
                               detail=f"draft {e.iteration}: score {e.review.score}, {verdict}")
        case RunFinished() as e:
            return TimelineRow(**base, detail=f"{e.reason.replace('_', ' ')}, {e.iterations} iteration(s)"
                               + (f", score {e.score}" if e.score is not None else ""))
        case RunFailed() as e:
            return TimelineRow(**base, step=e.step or "", detail=e.reason + (" (retryable)" if e.retryable else ""))
    return TimelineRow(**base)


def config_table(a: RunView, b: RunView) -> list[tuple[str, str, str]]:
    """(setting, value in a, value in b) for every agent parameter and run setting of either run."""
    rows = []
    for name in sorted(set(a.agents) | set(b.agents)):
        for f in AgentConfig.__struct_fields__:
            rows.append((f"{name}.{f}", _value(a.agents.get(name), f), _value(b.agents.get(name), f)))
    for key in ("max_iterations", "threshold"):
        rows.append((key, str(a.settings.get(key, "")), str(b.settings.get(key, ""))))
    for label, get in (("pipeline", lambda v: v.started.pipeline if v.started else ""),
                       ("research", lambda v: v.started.research if v.started else "")):
        rows.append((label, get(a), get(b)))
    return rows


def _value(config: AgentConfig | None, name: str) -> str:
    if config is None:
        return "-"
    value = getattr(config, name)
    return "default" if value is None else str(value)
