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


class OwnAnswers:
    """The answers a run holds, by request hash: what reuse finds in the run itself, kept by
    its orchestrator (the run's only writer) as it loads and appends them, so that a run
    without ancestors never looks answers up in the store."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._first: dict[str, tuple[int, LLMCallAnswered]] = {}

    def add(self, seq: int, event: object) -> None:
        if isinstance(event, LLMCallAnswered):
            self._first.setdefault(event.request_hash, (seq, event))

    def find(self, request_hash: str) -> tuple[CallRef, LLMCallAnswered] | None:
        """As ``find_recorded_answer`` over this run alone: its earliest answer to the request."""
        found = self._first.get(request_hash)
        if found is None:
            return None
        seq, answer = found
        return answer.reused_from or CallRef(run_id=self.run_id, seq=seq, call_id=answer.call_id), answer
