"""The runs index as a fold over a run's events, shared by both faces of the store."""

from __future__ import annotations

import msgspec

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


def apply(row: RunSummary | None, run_id: str, seq: int, recorded_at: float, event: Event) -> RunSummary:
    if row is None:
        row = RunSummary(run_id, None, None, "", "", "running", recorded_at, recorded_at, None, 0, 0, 0)
    changes: dict = {"updated_at": recorded_at, "last_seq": seq}
    if row.status == "waiting" and type(event) not in _KEEPS_WAITING:
        changes["status"] = "running"
    if type(event) not in _MOVES:
        return msgspec.structs.replace(row, **changes)
    match event:
        case RunStarted():
            changes |= {"task": event.task, "pipeline": event.pipeline, "status": "running"}
            if event.parent_run_id:
                changes["parent_run_id"] = event.parent_run_id
        case RunForked():
            # Tokens count what this run spent, not what it copied from its parent.
            changes |= {"parent_run_id": event.parent_run_id, "fork_seq": event.parent_seq,
                        "status": "waiting" if row.status == "waiting" else "running", "tokens": 0}
        case RunResumed() | RunClaimed():
            changes["status"] = "waiting" if row.status == "waiting" else "running"
        case RunQueued():
            changes["status"] = "waiting" if row.status == "waiting" else "queued"
        case ApprovalRequested():
            changes["status"] = "waiting"
        case ApprovalDecided():
            changes["status"] = "running"
        case DraftReady():
            changes["iterations"] = max(row.iterations, event.iteration)
        case ReviewScored():
            changes["score"] = event.review.score
        case LLMCallAnswered() if event.reused_from is None:
            changes["tokens"] = row.tokens + event.usage.total_tokens
        case RunFinished():
            changes["status"] = "finished"
            if event.score is not None:
                changes["score"] = event.score
        case RunFailed():
            changes["status"] = "failed"
    return msgspec.structs.replace(row, **changes)
