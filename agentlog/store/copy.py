"""Moving a log: every run's events from one store into another, identical, any backend to any.

Events are copied as they read (decoded, so an event of an older version arrives as today's
version, as ``export`` writes it) with their seq and ``recorded_at``; the destination encodes
them its own way (its own blobs) and builds its runs index from them, as ``rebuild_index``
would. Parents are copied before their forks, so a fork shares its parent's prefix again
rather than holding a copy of it. Leases and answers being streamed are not the log: they
stay behind.

Each run is one transaction at the destination: an interrupted copy leaves every run either
as it was or with all the events it was given, and copying again finishes the job. A run
the destination already holds must hold the source's first events exactly; then only the
events after them are copied (none when it is up to date). A destination whose run differs
is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from .errors import StoreError
from .records import RunSummary, StoredEvent


class Diverged(StoreError):
    """The destination holds a run that is not a prefix of the source's."""


class _Readable(Protocol):
    def list_runs(self) -> list[RunSummary]: ...
    def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]: ...
    def last_seq(self, run_id: str) -> int: ...


class _Writable(_Readable, Protocol):
    def append_recorded(self, run_id: str, stored: Sequence[StoredEvent], expected_seq: int) -> int: ...


class Copied(NamedTuple):
    run_id: str
    events: int  # copied now
    last_seq: int  # the run's last event at the destination afterwards
    status: str  # the source's status for the run


def same_event(a: StoredEvent, b: StoredEvent) -> bool:
    """The same recorded event in two logs: the stored version may differ (one log upcast it)."""
    return (a.run_id, a.seq, a.type, a.recorded_at, a.event) == (b.run_id, b.seq, b.type, b.recorded_at, b.event)


def parents_first(runs: Sequence[RunSummary]) -> list[RunSummary]:
    """The runs ordered so that a run's parent (when in the log) comes before it."""
    by_id = {r.run_id: r for r in runs}
    ordered: list[RunSummary] = []
    placed: set[str] = set()
    for run in sorted(runs, key=lambda r: (r.created_at, r.run_id)):
        chain = []
        while run is not None and run.run_id not in placed and run not in chain:
            chain.append(run)
            run = by_id.get(run.parent_run_id) if run.parent_run_id else None
        for r in reversed(chain):
            placed.add(r.run_id)
            ordered.append(r)
    return ordered


def check_copyable(source: _Readable, dest: _Readable, runs: Sequence[RunSummary]) -> dict[str, int]:
    """Each run's last seq at the destination, once every one is checked to be a prefix of the
    source's; ``Diverged`` naming the first run and event that differ."""
    at: dict[str, int] = {}
    for run in runs:
        held = dest.last_seq(run.run_id)
        if held:
            theirs = dest.read(run.run_id)
            ours = source.read(run.run_id, upto=held)
            for mine, other in zip(ours, theirs):
                if not same_event(mine, other):
                    raise Diverged(f"run {run.run_id} differs at event {mine.seq} in the destination; "
                                   "nothing was copied")
            if len(theirs) > len(ours):
                raise Diverged(f"run {run.run_id} has {len(theirs)} events in the destination, more than the "
                               f"source's {len(ours)}; nothing was copied")
        at[run.run_id] = held
    return at


def copy_log(source: _Readable, dest: _Writable,
             on_run: Callable[[Copied], None] | None = None) -> list[Copied]:
    """Copy every run of ``source`` into ``dest`` (see the module); return what each run got."""
    runs = parents_first(source.list_runs())
    held = check_copyable(source, dest, runs)
    done = []
    for run in runs:
        new = source.read(run.run_id, held[run.run_id])
        last = dest.append_recorded(run.run_id, new, held[run.run_id])
        done.append(Copied(run.run_id, len(new), last, run.status))
        if on_run is not None:
            on_run(done[-1])
    return done
