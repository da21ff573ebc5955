"""A sweep's comparison: per variant and per run, from the members' events alone (pure, no I/O).

A sweep is paired: every variant of a recorded run is forked from the same parent at the
same branch point (or, for fresh tasks, started from the same task), so differences
between variants, and changes against the parent, are measured on the same material.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import msgspec

from agentlog.events import SweepMember, SweepSpec
from agentlog.models.prices import PriceTable
from agentlog.store import StoredEvent

from .cost import run_cost
from .view import build_view


class MemberResult(msgspec.Struct, kw_only=True):
    """One member run of a sweep, as the comparison sees it."""

    run_id: str
    variant: str
    sample: int
    source: str  # the parent run id, or "task N"
    parent_run_id: str | None = None
    task: str = ""
    status: str = "running"
    finish_reason: str | None = None
    failure: str | None = None
    score: int | None = None  # the last review's score
    parent_score: int | None = None
    delta: int | None = None  # score minus the parent's
    approved: bool = False
    iterations: int = 0
    spent_tokens: int = 0
    reused_tokens: int = 0
    spent_usd: float | None = 0.0
    saved_usd: float | None = 0.0
    unpriced: list[str] = []
    calls_made: int = 0
    calls_reused: int = 0
    latency_s: float = 0.0  # model time of the run's live calls


class VariantSummary(msgspec.Struct, kw_only=True):
    variant: str
    runs: int
    finished: int
    failed: int
    scored: int  # runs with a score
    mean_score: float | None
    sd_score: float | None  # sample standard deviation (0 for one run)
    min_score: int | None
    max_score: int | None
    mean_delta: float | None  # mean score change against the parent
    approval_rate: float | None
    mean_iterations: float | None
    tokens_spent: int
    tokens_reused: int
    cost_usd: float | None  # None: a model without a price
    saved_usd: float | None
    mean_latency_s: float | None
    calls_made: int
    calls_reused: int
    unpriced: list[str] = []


class Disagreement(msgspec.Struct, kw_only=True):
    """One source (parent run or task) and sample on which the variants do not agree."""

    source: str
    sample: int
    parent_score: int | None
    scores: dict[str, int | None]
    approved: dict[str, bool]


class Comparison(msgspec.Struct, kw_only=True):
    sweep_id: str
    spec: SweepSpec
    paired: str  # says what the pairing is
    expected: int  # members the spec asks for
    variants: list[VariantSummary]
    members: list[MemberResult]
    disagreements: list[Disagreement]


class SweepInfo(msgspec.Struct, kw_only=True):
    """One line of ``agentlog sweep list``."""

    sweep_id: str
    created_at: float
    at: str
    sources: int
    variants: list[str]
    samples: int
    expected: int
    members: int
    finished: int
    failed: int


def own_members(joined: Sequence[StoredEvent], fork_seqs: Mapping[str, int | None]) -> list[StoredEvent]:
    """The ``SweepMember`` events of ``joined`` that their run recorded itself: a fork of a member
    copies its parent's membership (up to its fork point, ``fork_seqs``) but is not a member."""
    return [s for s in joined if isinstance(s.event, SweepMember) and s.seq > (fork_seqs.get(s.run_id) or 0)]


def sweep_infos(joined: Sequence[StoredEvent], statuses: Mapping[str, str]) -> list[SweepInfo]:
    """The sweeps that ``joined`` (``SweepMember`` events) record, newest first."""
    found: dict[str, list[StoredEvent]] = {}
    for s in joined:
        if isinstance(s.event, SweepMember):
            found.setdefault(s.event.sweep_id, []).append(s)
    out = []
    for sid, members in found.items():
        spec = members[0].event.spec  # type: ignore[attr-defined]
        status = [statuses.get(s.run_id, "") for s in members]
        sources = len(spec.runs) or len(spec.tasks)
        out.append(SweepInfo(sweep_id=sid, created_at=min(s.recorded_at for s in members), at=spec.at,
                             sources=sources, variants=[v.label for v in spec.variants], samples=spec.samples,
                             expected=sources * len(spec.variants) * spec.samples, members=len(members),
                             finished=status.count("finished"), failed=status.count("failed")))
    return sorted(out, key=lambda i: (i.created_at, i.sweep_id), reverse=True)


def member_result(member: SweepMember, stored: Sequence[StoredEvent], parent: Sequence[StoredEvent] | None,
                  prices: PriceTable | None = None) -> MemberResult:
    run_id = stored[0].run_id if stored else ""
    view = build_view(run_id, list(stored))
    cost = run_cost((s.event for s in stored), prices)
    parent_scores = build_view(member.parent_run_id or "", list(parent)).scores if parent else []
    score = view.scores[-1] if view.scores else None
    parent_score = parent_scores[-1] if parent_scores else None
    source = member.parent_run_id or f"task {member.task_index}"
    return MemberResult(
        run_id=run_id, variant=member.variant, sample=member.sample, source=source,
        parent_run_id=member.parent_run_id, task=view.task, status=view.status, finish_reason=view.finish_reason,
        failure=view.failure, score=score, parent_score=parent_score,
        delta=None if score is None or parent_score is None else score - parent_score,
        approved=view.finish_reason == "approved", iterations=len(view.drafts),
        spent_tokens=cost.spent_tokens, reused_tokens=cost.reused_tokens, spent_usd=cost.spent_usd,
        saved_usd=cost.saved_usd, unpriced=cost.unpriced, calls_made=cost.calls_made,
        calls_reused=cost.calls_reused, latency_s=round(cost.latency_ms / 1000, 3),
    )


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def _sum_usd(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else round(sum(v for v in values if v is not None), 6)


def summarise(variant: str, members: Sequence[MemberResult]) -> VariantSummary:
    scores = [m.score for m in members if m.score is not None]
    deltas = [m.delta for m in members if m.delta is not None]
    ended = [m for m in members if m.status == "finished"]
    return VariantSummary(
        variant=variant, runs=len(members), finished=len(ended),
        failed=sum(m.status == "failed" for m in members), scored=len(scores),
        mean_score=_mean(scores), sd_score=round(statistics.stdev(scores), 3) if len(scores) > 1 else
        (0.0 if scores else None),
        min_score=min(scores) if scores else None, max_score=max(scores) if scores else None,
        mean_delta=_mean(deltas), approval_rate=round(sum(m.approved for m in ended) / len(ended), 3) if ended else None,
        mean_iterations=_mean([m.iterations for m in members]),
        tokens_spent=sum(m.spent_tokens for m in members), tokens_reused=sum(m.reused_tokens for m in members),
        cost_usd=_sum_usd([m.spent_usd for m in members]), saved_usd=_sum_usd([m.saved_usd for m in members]),
        mean_latency_s=_mean([m.latency_s for m in members]),
        calls_made=sum(m.calls_made for m in members), calls_reused=sum(m.calls_reused for m in members),
        unpriced=sorted({u for m in members for u in m.unpriced}),
    )


def compare(sweep_id: str, spec: SweepSpec, members: Sequence[MemberResult]) -> Comparison:
    labels = [v.label for v in spec.variants]
    by_variant = {label: [m for m in members if m.variant == label] for label in labels}
    rows: dict[tuple[str, int], dict[str, MemberResult]] = {}
    for m in members:
        rows.setdefault((m.source, m.sample), {})[m.variant] = m
    disagreements = []
    for (source, sample), found in rows.items():
        scores = {label: found[label].score if label in found else None for label in labels}
        approved = {label: found[label].approved for label in labels if label in found}
        if len(set(scores.values())) > 1 or len(set(approved.values())) > 1:
            parent_score = next((m.parent_score for m in found.values()), None)
            disagreements.append(Disagreement(source=source, sample=sample, parent_score=parent_score,
                                              scores=scores, approved=approved))
    sources = len(spec.runs) or len(spec.tasks)
    if spec.runs:
        paired = (f"paired: every variant forked from the same {len(spec.runs)} parent run(s) at the same "
                  f"branch point ({spec.at}); score change is against each member's own parent")
    else:
        paired = f"paired: every variant ran the same {len(spec.tasks)} task(s) from the start"
    return Comparison(
        sweep_id=sweep_id, spec=spec, paired=paired, expected=sources * len(labels) * spec.samples,
        variants=[summarise(label, by_variant[label]) for label in labels],
        members=sorted(members, key=lambda m: (m.source, m.sample, labels.index(m.variant)
                                               if m.variant in labels else len(labels))),
        disagreements=disagreements,
    )


def comparison_from_events(sweep_id: str, joined: Sequence[StoredEvent],
                           streams: Mapping[str, Sequence[StoredEvent]],
                           prices: PriceTable | None = None) -> Comparison:
    """The comparison of sweep ``sweep_id``: ``joined`` are its ``SweepMember`` events,
    ``streams`` the events of its members and of their parents, by run id."""
    members = [s for s in joined if isinstance(s.event, SweepMember) and s.event.sweep_id == sweep_id]
    if not members:
        raise KeyError(sweep_id)
    spec = members[0].event.spec  # type: ignore[attr-defined]
    results = []
    for s in members:
        member = s.event
        assert isinstance(member, SweepMember)
        parent = streams.get(member.parent_run_id) if member.parent_run_id else None
        results.append(member_result(member, streams.get(s.run_id, []), parent, prices))
    return compare(sweep_id, spec, results)
