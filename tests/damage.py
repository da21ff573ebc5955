"""Damage to a stored event, done in raw SQL as a disk error, a bad tool or a newer agentlog would.

The one place that knows how an event row is laid out: when the row format changes, only
``DAMAGES`` changes; the tests assert on behaviour (one line naming run and event, exit 2).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

# name -> the SET clause and its parameter (a function of the stored data, or a value)
DAMAGES: dict[str, tuple[str, Callable[[bytes | str], object]]] = {
    "truncated": ("data = ?", lambda data: data[: len(data) // 2]),
    "wrong-types": ("data = ?", lambda data: '{"type": "LLMCallRequested", "call_id": 5, "attempt": "one"}'),
    "binary": ("data = ?", lambda data: bytes(range(256))),
    "unknown-type": ("type = ?", lambda data: "EventFromTheFuture"),
    "newer-version": ("version = ?", lambda data: 99),
}


def damage_event(db: str | Path, run_id: str, seq: int, kind: str) -> None:
    """Overwrite one stored event of ``run_id`` with damage of ``kind`` (a key of ``DAMAGES``)."""
    assignment, value = DAMAGES[kind]
    with closing(sqlite3.connect(db)) as con, con:
        (data,) = con.execute("SELECT data FROM events WHERE run_id = ? AND seq = ?", (run_id, seq)).fetchone()
        changed = con.execute(f"UPDATE events SET {assignment} WHERE run_id = ? AND seq = ?",
                              (value(data), run_id, seq)).rowcount
    assert changed == 1, f"no event {seq} in run {run_id}"
