"""Following a run as it is appended to, from any process: wake, then re-read by seq.

A reader never learns what was appended from the wake-up itself; it reads the run's
events after the last seq it has. On SQLite the wake-up is a timer (polling); a store
that can say when a run changed (Postgres: LISTEN/NOTIFY) wakes its readers early, and
the timer still bounds how late a missed notification can make them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from .records import RunSummary, StoredEvent
from .url import is_postgres

INTERVAL = 0.25
# A run stops being followed when it stops running: finished, failed, or waiting for a person.
ENDED = ("finished", "failed", "waiting")


class Reader(Protocol):
    def get_run(self, run_id: str) -> RunSummary: ...
    def read(self, run_id: str, after: int = 0, upto: int | None = None) -> list[StoredEvent]: ...


Wait = Callable[[str, float], None]  # (run id, at most this long): returns early once the run may have changed


def sleep_wait(run_id: str, timeout: float) -> None:
    time.sleep(timeout)


@contextmanager
def waker(store: object) -> Iterator[Wait]:
    """How a follower of ``store`` waits: LISTEN on PostgreSQL (a connection of its own, for
    as long as the context lasts), a timer on SQLite."""
    url = getattr(store, "url", None)
    if not (isinstance(url, str) and is_postgres(url)):
        yield sleep_wait
        return
    from .pgnotify import Listener

    with Listener(url) as listener:
        yield listener.wait


def follow(store: Reader, run_id: str, *, after: int = 0, wait: Wait = sleep_wait,
           interval: float = INTERVAL) -> Iterator[Sequence[StoredEvent] | RunSummary]:
    """The run's events after ``after``, batch by batch as they are appended; last, the
    run's summary once it has ended (``ENDED``) and every event up to it was given."""
    seq = after
    while True:
        summary = store.get_run(run_id)  # read first: the events read next are never behind it
        new = store.read(run_id, seq)
        if new:
            seq = new[-1].seq
            yield new
        if summary.status in ENDED and seq >= summary.last_seq:
            yield summary
            return
        wait(run_id, interval)
