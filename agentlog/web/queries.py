"""The viewer's reads, all through the store's asyncio face (read-only; decisions.py writes)."""

from __future__ import annotations

from dataclasses import dataclass

from agentlog.models.prices import PriceTable
from agentlog.replay import build_view, run_cost
from agentlog.replay.compare import Comparison, SweepInfo, comparison_from_events, own_members, sweep_infos
from agentlog.store import DamagedEvent, RunNotFound, RunSummary
from agentlog.store.aio import AsyncReads

from .views import RunPage

PAGE_SIZE = 50
STATUSES = ("queued", "running", "waiting", "finished", "failed")


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    total: int
    page: int
    pages: int
    status: str
    text: str


async def runs_page(store: AsyncReads, *, status: str, text: str, page: int,
                    page_size: int = PAGE_SIZE) -> RunsPage:
    status = status if status in STATUSES else ""
    total = await store.count_runs(status=status or None, text=text or None)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    runs = await store.list_runs(status=status or None, text=text or None, limit=page_size,
                                 offset=(page - 1) * page_size)
    return RunsPage(runs, total, page, pages, status, text)


async def load_run(store: AsyncReads, run_id: str, prices: PriceTable | None = None) -> RunPage:
    """The run folded for display. The summary is read first, so the events are never behind it.

    A damaged event ends what can be shown: the events before it, and the damage itself."""
    summary = await store.get_run(run_id)
    try:
        stored = await store.read(run_id)
        damage = None
    except DamagedEvent as exc:
        stored, damage = await store.read(run_id, upto=exc.seq - 1), exc
    return RunPage(summary, build_view(run_id, stored), damage=damage,
                   cost=run_cost((s.event for s in stored), prices))


async def _members(store: AsyncReads) -> list:
    joined = await store.events_of_type("SweepMember")
    return own_members(joined, {s.run_id: (await store.get_run(s.run_id)).fork_seq for s in joined})


async def sweeps(store: AsyncReads) -> list[SweepInfo]:
    joined = await _members(store)
    return sweep_infos(joined, {s.run_id: (await store.get_run(s.run_id)).status for s in joined})


async def load_sweep(store: AsyncReads, prefix: str, prices: PriceTable | None = None) -> Comparison:
    """A sweep's comparison from its members' events; ``LookupError`` if ``prefix`` names no one sweep."""
    joined = await _members(store)
    ids = sorted({s.event.sweep_id for s in joined if s.event.sweep_id.startswith(prefix)})  # type: ignore[attr-defined]
    if not prefix or len(ids) != 1:
        raise LookupError(f"no sweep {prefix!r} in this log" if not ids else f"sweep id {prefix!r} is ambiguous")
    streams = {}
    for s in joined:
        if s.event.sweep_id != ids[0]:  # type: ignore[attr-defined]
            continue
        for run_id in (s.run_id, s.event.parent_run_id):  # type: ignore[attr-defined]
            if run_id and run_id not in streams:
                streams[run_id] = await store.read(run_id)
    return comparison_from_events(ids[0], joined, streams, prices)


async def ancestors(store: AsyncReads, run_id: str) -> list[RunSummary]:
    """Parent, grandparent, ...: the runs this one was forked (or re-reviewed) from."""
    found = []
    for parent in (await store.lineage(run_id))[1:]:
        try:
            found.append(await store.get_run(parent))
        except RunNotFound:  # a parent that is not in this log (the run was imported alone)
            break
    return found


async def children(store: AsyncReads, run_id: str) -> list[RunSummary]:
    """Runs forked from, or re-reviewing, this one, oldest first."""
    return await store.children(run_id)
