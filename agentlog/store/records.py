"""What the store hands back: stored events and rows of the runs index."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from agentlog.events import CodecError, Event, decode
from agentlog.events.packed import Resolve
from agentlog.events.rows import Reader

from .errors import DamagedEvent


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    run_id: str
    seq: int
    type: str
    version: int
    recorded_at: float
    event: Event

    @classmethod
    def from_row(cls, row: tuple, resolve: Resolve | Reader | None = None) -> "StoredEvent":
        """The event of one ``events`` row; ``resolve`` reads the large text it refers to.
        A row that does not decode is a ``DamagedEvent`` naming run and seq."""
        run_id, seq, type_name, version, recorded_at, data = row
        try:
            if not isinstance(type_name, str) or not isinstance(version, int):
                raise CodecError(f"stored type {type_name!r} / version {version!r} are not a name and a number")
            return cls(run_id, seq, type_name, version, recorded_at, decode(type_name, version, data, resolve))
        except (CodecError, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise DamagedEvent(run_id, seq, str(exc)) from exc

    @classmethod
    def from_rows(cls, rows: Iterable[tuple], reader: Reader, run_id: str | None = None) -> list["StoredEvent"]:
        """The events of ``rows``, as ``from_row`` makes each (rows of the current format and
        version decoded straight by ``reader``). Given ``run_id``, the rows are one run's and
        leave out its id: ``(seq, type, version, recorded_at, data)``."""
        def other(run: str, row: tuple) -> StoredEvent:
            return cls.from_row((run, *row), reader)

        if run_id is not None:
            return reader.stored(run_id, rows, cls, other)
        return [stored for row in rows for stored in reader.stored(row[0], (row[1:],), cls, other)]


class RunSummary(msgspec.Struct, frozen=True):
    """One row of the runs index; rebuildable from the run's events alone."""

    run_id: str
    parent_run_id: str | None
    fork_seq: int | None
    task: str
    pipeline: str
    status: str  # queued (for a worker) | running | waiting (for a person) | finished | failed
    created_at: float
    updated_at: float
    score: int | None
    iterations: int
    tokens: int
    last_seq: int

    @classmethod
    def from_row(cls, row: tuple) -> "RunSummary":
        return cls(*row)

    def as_row(self) -> tuple:
        return msgspec.structs.astuple(self)


class Lease(msgspec.Struct, frozen=True):
    """Who drives a run: ``owner`` (``host:pid``) until ``expires_at`` (Unix time, renewed by
    heartbeat). ``token`` is the fencing epoch: it grows with every acquisition, and an append
    made under a lease commits only while the run's token is still this one."""

    run_id: str
    owner: str
    token: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


class PartialAnswer(msgspec.Struct, frozen=True):
    """An answer still being streamed (``text`` so far, of attempt ``attempt``): not an event,
    kept apart from the log for watchers in other processes, gone once the call ends."""

    run_id: str
    call_id: str
    agent: str
    attempt: int
    text: str
    pieces: int
    started_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: tuple) -> "PartialAnswer":
        return cls(*row)

    def as_row(self) -> tuple:
        return msgspec.structs.astuple(self)
