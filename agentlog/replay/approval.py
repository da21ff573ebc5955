"""A person's decision on a waiting run: approve, edit or reject, recorded as one event.

A run waits for a person when its decider recorded ``ApprovalRequested`` and asks for
nothing more. ``decide_run`` appends the person's ``ApprovalDecided`` at the sequence
number where the run waits (optimistic concurrency): of two people deciding at once,
exactly one is recorded and the other gets ``NotWaiting`` naming what happened. The run
then goes on through ``resume`` (the same path as any process picking a run up again).
"""

from __future__ import annotations

import getpass
from typing import Literal

import msgspec

from agentlog.events import ApprovalDecided, ApprovalRequested, RunStarted
from agentlog.pipelines import fold, get_pipeline
from agentlog.store import ConcurrencyError, Store, StoredEvent

from .continuation import ReplayError

Decision = Literal["approve", "edit", "reject"]
DECISIONS: tuple[Decision, ...] = ("approve", "edit", "reject")


class NotWaiting(ReplayError):
    """The run does not wait for a person (finished, running, failed, or already decided)."""


class Waiting(msgspec.Struct, frozen=True):
    """What a waiting run asks a person: the draft, its latest review's score, and where it waits."""

    run_id: str
    seq: int  # the run's last event: a decision is appended right after it
    iteration: int
    point: str
    draft: str
    score: int | None


def waiting(run_id: str, stored: list[StoredEvent]) -> Waiting | None:
    """The question a run waits on, or ``None`` if it does not wait for a person."""
    if not stored or not isinstance(stored[0].event, RunStarted):
        return None
    pipeline = get_pipeline(stored[0].event.pipeline)
    state = fold(pipeline, (s.event for s in stored))
    iteration = getattr(state, "waiting", None)
    if iteration is None:
        return None
    score = state.reviews[-1].score if state.reviews else None
    return Waiting(run_id, stored[-1].seq, iteration, state.asked[iteration], state.drafts[iteration - 1], score)


def default_decider() -> str:
    """Who decides when no name is given: the operating-system user."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def decision_event(question: Waiting, decision: str, *, by: str, note: str = "",
                   draft: str | None = None) -> ApprovalDecided:
    """The event for ``decision`` on ``question``; raises ``ReplayError`` for an incomplete one."""
    if decision not in DECISIONS:
        raise ReplayError(f"a decision is one of {', '.join(DECISIONS)}, not {decision!r}")
    note = note.strip()
    if decision == "reject" and not note:
        raise ReplayError("a rejection needs a note: say what the writer should change")
    if decision == "edit":
        if draft is None or not draft.strip():
            raise ReplayError("an edit needs the draft: your version of the text is empty")
    elif draft is not None:
        raise ReplayError(f"only an edit carries a draft, not {decision!r}")
    if not by.strip():
        raise ReplayError("name who decides (the name is empty)")
    return ApprovalDecided(iteration=question.iteration, decision=decision,  # type: ignore[arg-type]
                           by=by.strip(), note=note, draft=draft)


def decide_run(store: Store, run_id: str, decision: str, *, by: str | None = None, note: str = "",
               draft: str | None = None, at_seq: int | None = None) -> int:
    """Record a person's decision on waiting run ``run_id``; returns the decision's sequence number.

    ``at_seq`` is the last event the person saw (the browser's page): if the run moved on
    since, the decision is refused rather than applied to a state they did not see.
    Raises ``NotWaiting`` if the run does not wait (or another decision won the race),
    ``ReplayError`` for an incomplete decision.
    """
    stored = store.read(run_id)
    question = waiting(run_id, stored)
    if question is None or (at_seq is not None and at_seq != question.seq):
        raise NotWaiting(_not_waiting(store, run_id, stored))
    event = decision_event(question, decision, by=by or default_decider(), note=note, draft=draft)
    try:
        store.append(run_id, [event], question.seq)
    except ConcurrencyError:
        raise NotWaiting(_not_waiting(store, run_id, store.read(run_id))) from None
    return question.seq + 1


def _not_waiting(store: Store, run_id: str, stored: list[StoredEvent]) -> str:
    """Why a decision on ``run_id`` cannot be taken now, in one line."""
    if waiting(run_id, stored) is not None:
        return f"run {run_id} changed since the page was loaded; reload it and decide again"
    asked = [s for s in stored if isinstance(s.event, ApprovalRequested)]
    decided = [s.event for s in stored if isinstance(s.event, ApprovalDecided)]
    if asked and decided and decided[-1].iteration == asked[-1].event.iteration:
        last = decided[-1]
        return (f"run {run_id} is not waiting for a person: {last.by} already decided on draft {last.iteration} "
                f"({last.decision})")
    status = store.get_run(run_id).status if stored else "empty"
    return f"run {run_id} is not waiting for a person (it is {status})"


__all__ = ["DECISIONS", "NotWaiting", "Waiting", "decide_run", "decision_event", "default_decider", "waiting"]
