"""The runs index as a fold over a run's events, shared by both faces of the store."""

from __future__ import annotations

from collections.abc import Sequence

from agentlog.events import (
    AgentReconfigured,
    ApprovalDecided,
    ApprovalRequested,
    DraftReady,
    Event,
    LLMCallAnswered,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunClaimed,
    RunForked,
    RunQueued,
    RunResumed,
    RunStarted,
    SettingsChanged,
)

from .records import RunSummary

# By exact type (event types are not subclassed): a set lookup, where the isinstance checks
# of a match statement took most of an append's index work.
# Events that do not move a run waiting for a person: only a decision (or the decider going on
# after a setting change) does.
_KEEPS_WAITING = frozenset({RunForked, RunResumed, RunQueued, RunClaimed, AgentReconfigured, SettingsChanged,
                            ApprovalRequested})
# Events that change more of the row than its last seq and time.
_MOVES = frozenset({RunStarted, RunForked, RunResumed, RunClaimed, RunQueued, ApprovalRequested, ApprovalDecided,
                    DraftReady, ReviewScored, LLMCallAnswered, RunFinished, RunFailed})


def fold(row: RunSummary | None, run_id: str, seq: int, events: Sequence[Event], at: float,
         times: Sequence[float] | None = None) -> RunSummary:
    """The run's index row ``row`` (``None``: a run with no events yet) after ``events``, the
    first of them event ``seq``, recorded at ``at`` (or each at its own time in ``times``).
    One row made for the whole batch, its columns kept in locals meanwhile."""
    if row is None:
        parent, fork_seq, task, pipeline, status = None, None, "", "", "running"
        created, score, iterations, tokens = at if times is None else times[0], None, 0, 0
    else:
        parent, fork_seq, task, pipeline, status = row.parent_run_id, row.fork_seq, row.task, row.pipeline, row.status
        created, score, iterations, tokens = row.created_at, row.score, row.iterations, row.tokens
    for event in events:
        kind = type(event)
        if status == "waiting" and kind not in _KEEPS_WAITING:
            status = "running"
        if kind not in _MOVES:
            continue
        if kind is LLMCallAnswered:
            if event.reused_from is None:
                tokens += event.usage.total_tokens
        elif kind is DraftReady:
            iterations = max(iterations, event.iteration)
        elif kind is ReviewScored:
            score = event.review.score
        elif kind is RunStarted:
            task, pipeline, status = event.task, event.pipeline, "running"
            if event.parent_run_id:
                parent = event.parent_run_id
        elif kind is RunForked:
            # Tokens count what this run spent, not what it copied from its parent.
            parent, fork_seq, tokens = event.parent_run_id, event.parent_seq, 0
            if status != "waiting":
                status = "running"
        elif kind is RunResumed or kind is RunClaimed:
            if status != "waiting":
                status = "running"
        elif kind is RunQueued:
            if status != "waiting":
                status = "queued"
        elif kind is ApprovalRequested:
            status = "waiting"
        elif kind is ApprovalDecided:
            status = "running"
        elif kind is RunFinished:
            status = "finished"
            if event.score is not None:
                score = event.score
        elif kind is RunFailed:
            status = "failed"
    updated = at if times is None else times[len(events) - 1]
    return RunSummary(run_id, parent, fork_seq, task, pipeline, status, created, updated, score, iterations, tokens,
                      seq + len(events) - 1)
