"""Sweeps: every selected run (or fresh task) x every variant x every sample, as forks, concurrently.

A sweep is identified by the hash of its spec (runs or tasks, branch point, variants,
samples), so running the same sweep again finds the runs it already has: finished ones
are left alone (zero calls), unfinished ones are resumed, missing ones are started.
Membership is recorded as a ``SweepMember`` event in the same batch as a member's first
events, so a sweep has no table of its own: it is a fold of its members' events, and
``agentlog sweep list``/``show`` rebuild it from them.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec
import pykka

from agentlog.actors import Budget, RunHandle, SharedBudget, agent_configs, start_run
from agentlog.actors.runtime import Models, register_models
from agentlog.events import BudgetReached, LLMCallRequested, RunFailed, SweepMember, SweepSpec, SweepVariant
from agentlog.models import Gateway
from agentlog.models.prices import PriceTable
from agentlog.pipelines import get_pipeline
from agentlog.store import Store, StoredEvent

from .compare import Comparison, SweepInfo, comparison_from_events, own_members, sweep_infos
from .continuation import Overrides, ReplayError, fork, resume
from .view import build_view

_canonical = msgspec.json.Encoder(order="sorted")


class SweepError(ReplayError):
    """A sweep that cannot run as asked (a user's mistake): nothing was written."""


def sweep_id(spec: SweepSpec) -> str:
    return hashlib.sha256(_canonical.encode(spec)).hexdigest()[:12]


def variants(models: Sequence[tuple[str, list[str]]] = (), temperatures: Sequence[tuple[str, list[float]]] = (),
             thresholds: Sequence[int] = (), max_iterations: Sequence[int] = (),
             named: Sequence[SweepVariant] = ()) -> list[SweepVariant]:
    """Every combination of the axes given (one axis per flag), then the named variants.

    ``models=[("reviewer", ["a", "b"])], temperatures=[("writer", [0.2, 0.8])]`` is four variants.
    """
    axes: list[list[tuple[str, dict]]] = []
    for agent, names in models:
        axes.append([(f"{agent}={m}", {"models": {agent: m}}) for m in names])
    for agent, values in temperatures:
        axes.append([(f"{agent}.temperature={t:g}", {"temperatures": {agent: t}}) for t in values])
    if thresholds:
        axes.append([(f"threshold={t}", {"threshold": t}) for t in thresholds])
    if max_iterations:
        axes.append([(f"max_iterations={n}", {"max_iterations": n}) for n in max_iterations])
    found: list[SweepVariant] = []
    if axes:
        for combo in itertools.product(*axes):
            merged: dict = {"models": {}, "temperatures": {}}
            for _, part in combo:
                for key, value in part.items():
                    if isinstance(value, dict):
                        merged[key].update(value)
                    else:
                        merged[key] = value
            found.append(SweepVariant(label=" ".join(label for label, _ in combo), **merged))
    found += named
    labels = [v.label for v in found]
    if len(set(labels)) != len(labels):
        raise SweepError(f"variants must differ: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))} "
                         f"given twice")
    return found


def branch_seq(stored: Sequence[StoredEvent], at: str) -> int:
    """The last event a fork at ``at`` copies: a seq, or just before a step's first call."""
    last = stored[-1].seq if stored else 0
    if at.isdigit():
        seq = int(at)
        if not 1 <= seq <= last:
            raise ReplayError(f"has events 1 to {last}, not {seq}")
        return seq
    steps: list[str] = []
    for s in stored:
        if isinstance(s.event, LLMCallRequested):
            if s.event.step == at:
                return s.seq - 1
            if s.event.step not in steps:
                steps.append(s.event.step)
    raise ReplayError(f"has no step {at} (its steps: {', '.join(steps) or 'none'})")


@dataclass
class Planned:
    """One member the sweep should have."""

    key: tuple[str, str, int]  # (source, variant, sample)
    variant: SweepVariant
    sample: int
    parent_run_id: str | None = None
    at_seq: int = 0
    task_index: int | None = None
    run_id: str | None = None  # the member, once it exists
    status: str = "missing"  # missing | running | failed | finished
    resumable: bool = True


@dataclass
class SweepPlan:
    spec: SweepSpec
    sweep_id: str
    members: list[Planned]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run, why)

    def models(self, store: Store) -> list[str]:
        """Every model a member may call."""
        found: set[str] = set()
        for p in self.members:
            if p.parent_run_id is not None:
                agents = build_view(p.parent_run_id, store.read(p.parent_run_id, 0, p.at_seq)).agents
                found |= {p.variant.models.get(name, a.model) for name, a in agents.items()}
            else:
                found.add(self.spec.base_model)
                found |= set(p.variant.models.values())
        return sorted(found)


def all_members(store: Store) -> list[StoredEvent]:
    """Every run's own ``SweepMember`` event (not the copies its forks hold)."""
    joined = store.events_of_type("SweepMember")
    return own_members(joined, {s.run_id: store.get_run(s.run_id).fork_seq for s in joined})


def member_events(store: Store, sweep: str) -> list[StoredEvent]:
    return [s for s in all_members(store) if s.event.sweep_id == sweep]  # type: ignore[attr-defined]


def plan_sweep(store: Store, spec: SweepSpec) -> SweepPlan:
    """What the sweep needs, what it already has, and the runs it cannot branch (with why).

    Raises ``SweepError`` for a sweep that cannot run at all; writes nothing.
    """
    if not spec.variants:
        raise SweepError("no variants: give at least one of --model AGENT=A,B, --temperature AGENT=T1,T2, "
                         "--threshold N,M, --max-iterations N,M or --variants FILE")
    if not spec.runs and not spec.tasks:
        raise SweepError("the selection is empty: name runs, or match some with --search/--status, or give --tasks FILE")
    if spec.samples < 1:
        raise SweepError(f"--samples must be at least 1, not {spec.samples}")
    roles = get_pipeline("content").roles
    for v in spec.variants:
        for agent in (*v.models, *v.temperatures):
            if agent not in roles:
                raise SweepError(f"unknown variant key {agent!r} (agents: {', '.join(roles)})")
        try:
            Overrides(models=v.models, temperatures=v.temperatures, max_iterations=v.max_iterations,
                      threshold=v.threshold).events({a: None for a in (*v.models, *v.temperatures)})  # type: ignore[misc]
        except ValueError as exc:
            raise SweepError(f"variant {v.label}: {exc}") from None
    sid = sweep_id(spec)
    planned: list[Planned] = []
    skipped: list[tuple[str, str]] = []
    for parent in spec.runs:
        stored = store.read(parent)
        if not stored:
            skipped.append((parent, "has no events"))
            continue
        try:
            at_seq = branch_seq(stored, spec.at)
        except ReplayError as exc:
            skipped.append((parent, str(exc)))
            continue
        agents = build_view(parent, stored[:at_seq]).agents
        missing = sorted({a for v in spec.variants for a in (*v.models, *v.temperatures) if a not in agents})
        if missing:
            skipped.append((parent, f"has no agent {', '.join(missing)} (its agents: {', '.join(agents)})"))
            continue
        for v, k in itertools.product(spec.variants, range(1, spec.samples + 1)):
            planned.append(Planned((parent, v.label, k), v, k, parent_run_id=parent, at_seq=at_seq))
    for n, _task in enumerate(spec.tasks):
        for v, k in itertools.product(spec.variants, range(1, spec.samples + 1)):
            planned.append(Planned((f"task {n}", v.label, k), v, k, task_index=n))
    if not planned:
        reasons = "; ".join(f"{run}: {why}" for run, why in skipped)
        raise SweepError(f"no run can be branched at {spec.at}: {reasons}")
    existing = {}
    for s in member_events(store, sid):
        m = s.event
        assert isinstance(m, SweepMember)
        source = m.parent_run_id or f"task {m.task_index}"
        existing[(source, m.variant, m.sample)] = s.run_id
    for p in planned:
        if p.key in existing:
            p.run_id = existing[p.key]
            p.status = store.get_run(p.run_id).status
            if p.status == "failed":
                p.resumable = _resumable(store.read(p.run_id))
    return SweepPlan(spec, sid, planned, skipped)


def _resumable(stored: Sequence[StoredEvent]) -> bool:
    """A failed member is tried again when a budget stopped it, or its failure was transient."""
    if len(stored) >= 2 and isinstance(stored[-2].event, BudgetReached):
        return True
    last = stored[-1].event if stored else None
    return isinstance(last, RunFailed) and last.retryable


@dataclass
class Progress:
    """What a sweep has done so far, for its progress line."""

    total: int
    done: int = 0
    failed: int = 0
    tally: SharedBudget = field(default_factory=SharedBudget)
    on_change: Callable[["Progress"], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def finished(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += not ok
        self.changed()

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def line(self) -> str:
        t = self.tally
        usd = "unknown" if t.unpriced else f"${t.spent_usd:,.4f}"
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"sweep: {self.done}/{self.total} runs done{failed}, {t.calls_made} calls made, "
                f"{t.calls_reused} reused, {usd} spent")


class SweepInterrupted(Exception):
    pass


def run_sweep(store: Store, the_plan: SweepPlan, *, gateway: Gateway, prices: PriceTable | None = None,
              concurrency: int = 4, budget_usd: float | None = None, budget_tokens: int | None = None,
              progress: Progress | None = None, stop: threading.Event | None = None,
              tools=None, models: Models = None) -> Comparison:  # noqa: ANN001 - a ToolRegistry
    """Bring every member of the plan to an end (finished, or failed), ``concurrency`` at a time.

    ``models`` are in-process models (one, under its own name, or a mapping of names to
    models) that variants and the runs they branch from may name.

    Members that already finished are not touched. ``stop`` set (Ctrl-C) stops the members
    in flight; the log stays consistent and running the sweep again resumes them.
    """
    todo = [p for p in the_plan.members if p.status != "finished" and (p.status != "failed" or p.resumable)]
    progress = progress or Progress(total=len(the_plan.members))
    progress.total = len(the_plan.members)
    progress.done = len(the_plan.members) - len(todo)
    progress.tally.usd_limit, progress.tally.token_limit = budget_usd, budget_tokens
    stop = stop or threading.Event()
    register_models(gateway, models)
    spec, sid = the_plan.spec, the_plan.sweep_id
    handles: dict[int, RunHandle] = {}
    lock = threading.Lock()

    def observe(stored: StoredEvent) -> None:
        progress.changed()

    def start(p: Planned) -> RunHandle:
        budget = Budget(prices, progress.tally)
        if p.run_id is not None:
            return resume(store, p.run_id, gateway=gateway, observer=observe, tools=tools, budget=budget)
        member = SweepMember(sweep_id=sid, spec=spec, variant=p.variant.label, sample=p.sample,
                             parent_run_id=p.parent_run_id, task_index=p.task_index)
        if p.parent_run_id is not None:
            overrides = Overrides(models=p.variant.models, temperatures=p.variant.temperatures,
                                  max_iterations=p.variant.max_iterations, threshold=p.variant.threshold,
                                  sample=p.sample if spec.samples > 1 else None)
            return fork(store, p.parent_run_id, p.at_seq, overrides=overrides, gateway=gateway, observer=observe,
                        tools=tools, budget=budget, extra_events=[member])
        assert p.task_index is not None
        agents = agent_configs(spec.base_model, p.variant.models, p.variant.temperatures)
        options: dict = {"sample": p.sample}
        if p.variant.max_iterations is not None:
            options["max_iterations"] = p.variant.max_iterations
        if p.variant.threshold is not None:
            options["threshold"] = p.variant.threshold
        return start_run(store, spec.tasks[p.task_index], agents=agents, gateway=gateway, observer=observe,
                         registry=tools, budget=budget, extra_events=[member], **options)

    def work(n: int, p: Planned) -> None:
        if stop.is_set():
            return
        handle = start(p)
        with lock:
            handles[n] = handle
        try:
            while True:
                if stop.is_set():
                    handle.stop()
                    return
                try:
                    summary = handle.wait(timeout=0.2)
                    break
                except pykka.Timeout:
                    continue
        finally:
            with lock:
                handles.pop(n, None)
        progress.finished(summary.status == "finished")

    progress.changed()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sweep") as pool:
        futures = [pool.submit(work, n, p) for n, p in enumerate(todo)]
        try:
            for f in futures:
                while not f.done():
                    try:
                        f.result(timeout=0.25)
                    except TimeoutError:
                        continue
                f.result()
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    if stop.is_set():
        raise SweepInterrupted(sid)
    return load_comparison(store, sid, prices)


def load_comparison(store: Store, sweep: str, prices: PriceTable | None = None) -> Comparison:
    """The comparison of a recorded sweep, rebuilt from its members' events."""
    joined = member_events(store, sweep)
    if not joined:
        raise SweepError(f"no sweep {sweep} in this log (see `agentlog sweep list`)")
    streams: dict[str, list[StoredEvent]] = {}
    for s in joined:
        streams[s.run_id] = store.read(s.run_id)
        parent = s.event.parent_run_id  # type: ignore[attr-defined]
        if parent and parent not in streams:
            streams[parent] = store.read(parent)
    return comparison_from_events(sweep, joined, streams, prices)


def list_sweeps(store: Store) -> list[SweepInfo]:
    """Every sweep in the log, newest first, from its members' ``SweepMember`` events."""
    joined = all_members(store)
    return sweep_infos(joined, {s.run_id: store.get_run(s.run_id).status for s in joined})


def resolve_sweep_id(store: Store, prefix: str) -> str:
    ids = sorted({s.event.sweep_id for s in all_members(store)  # type: ignore[attr-defined]
                  if s.event.sweep_id.startswith(prefix)})  # type: ignore[attr-defined]
    if not prefix or not ids:
        raise SweepError(f"no sweep {prefix!r} in this log (see `agentlog sweep list`)")
    if len(ids) > 1:
        raise SweepError(f"sweep id {prefix!r} is ambiguous: {', '.join(ids)}")
    return ids[0]


__all__ = ["Planned", "Progress", "SweepError", "SweepInfo", "SweepInterrupted", "SweepPlan", "branch_seq",
           "list_sweeps", "load_comparison", "plan_sweep", "resolve_sweep_id", "run_sweep", "sweep_id", "variants"]
