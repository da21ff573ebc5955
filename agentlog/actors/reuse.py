"""Reuse of recorded calls: an answer with the same request hash in the run's lineage."""

from __future__ import annotations

from agentlog.events import CallRef, LLMCallAnswered
from agentlog.store import Store


def find_recorded_answer(store: Store, request_hash: str, lineage: list[str]) -> tuple[CallRef, LLMCallAnswered] | None:
    """The earliest answer to ``request_hash`` in the first run of ``lineage`` that has one.

    The returned reference points at where the answer was first made live, following
    answers that were themselves reused.
    """
    rank = {run_id: i for i, run_id in enumerate(lineage)}
    candidates = [s for s in store.find_answers(request_hash) if s.run_id in rank]
    if not candidates:
        return None
    best = min(candidates, key=lambda s: (rank[s.run_id], s.seq))
    answer = best.event
    assert isinstance(answer, LLMCallAnswered)
    origin = answer.reused_from or CallRef(run_id=best.run_id, seq=best.seq, call_id=answer.call_id)
    return origin, answer
