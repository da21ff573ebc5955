"""The viewer's reads, all through the store's asyncio face (read-only; decisions.py writes)."""

from __future__ import annotations

from dataclasses import dataclass

from agentlog.replay import build_view
from agentlog.store import AsyncSQLiteStore, DamagedEvent, RunNotFound, RunSummary

from .views import RunPage

PAGE_SIZE = 50
STATUSES = ("running", "waiting", "finished", "failed")


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    total: int
    page: int
    pages: int
    status: str
    text: str


async def runs_page(store: AsyncSQLiteStore, *, status: str, text: str, page: int,
                    page_size: int = PAGE_SIZE) -> RunsPage:
    status = status if status in STATUSES else ""
    total = await store.count_runs(status=status or None, text=text or None)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    runs = await store.list_runs(status=status or None, text=text or None, limit=page_size,
                                 offset=(page - 1) * page_size)
    return RunsPage(runs, total, page, pages, status, text)


async def load_run(store: AsyncSQLiteStore, run_id: str) -> RunPage:
    """The run folded for display. The summary is read first, so the events are never behind it.

    A damaged event ends what can be shown: the events before it, and the damage itself."""
    summary = await store.get_run(run_id)
    try:
        return RunPage(summary, build_view(run_id, await store.read(run_id)))
    except DamagedEvent as damage:
        readable = await store.read(run_id, upto=damage.seq - 1)
        return RunPage(summary, build_view(run_id, readable), damage)


async def ancestors(store: AsyncSQLiteStore, run_id: str) -> list[RunSummary]:
    """Parent, grandparent, ...: the runs this one was forked (or re-reviewed) from."""
    found = []
    for parent in (await store.lineage(run_id))[1:]:
        try:
            found.append(await store.get_run(parent))
        except RunNotFound:  # a parent that is not in this log (the run was imported alone)
            break
    return found


async def children(store: AsyncSQLiteStore, run_id: str) -> list[RunSummary]:
    """Runs forked from, or re-reviewing, this one, oldest first."""
    return await store.children(run_id)
