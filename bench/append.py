"""2. Append throughput: events/s into one SQLite file from 1, 8 and 64 concurrent runs.

Each run is a thread appending its own stream one event per ``append`` (as an
orchestrator does), cycling through the 17 events of a real run (755 bytes of JSON on
average). The baselines insert rows of the same sizes with raw ``sqlite3`` into a table
and index of the same schema, from one thread: one commit per row, and 100 rows per
commit. All in WAL mode with ``synchronous=NORMAL``, the store's default.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from typing import Any

from agentlog.events import encode
from agentlog.store import MIGRATIONS, SQLiteStore

from .common import append_rate, median, sample_run_events

CONCURRENCY = (1, 8, 64)


def _store_rate(path: str, runs: int, per_run: int) -> float:
    with SQLiteStore(path) as store:
        return append_rate(store, runs, per_run, os.path.basename(path))


def _raw_rate(path: str, total: int, rows_per_commit: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for _name, sql in MIGRATIONS:  # the same table and index as the store
        db.executescript(sql)
    payloads = [(type(e).__name__, type(e).VERSION, encode(e)[2].decode()) for e in sample_run_events()]
    runs = 64
    rows = [(f"raw-{i % runs:04d}", i // runs + 1, *payloads[(i // runs) % len(payloads)][:2], 0.0,
             payloads[(i // runs) % len(payloads)][2]) for i in range(total)]
    start = time.perf_counter()
    for i in range(0, total, rows_per_commit):
        db.execute("BEGIN")
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows[i:i + rows_per_commit])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return total / elapsed


def bench(quick: bool) -> dict[str, Any]:
    total = 6400 if quick else 19200
    reps = 3 if quick else 5
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    rates: dict[str, list[float]] = {}
    for rep in range(reps):
        for rows_per_commit in (1, 100):
            key = f"raw_{rows_per_commit}_per_commit"
            rates.setdefault(key, []).append(_raw_rate(os.path.join(tmp, f"{key}-{rep}.db"), total, rows_per_commit))
        for runs in CONCURRENCY:
            key = f"store_{runs}_runs"
            rates.setdefault(key, []).append(_store_rate(os.path.join(tmp, f"{key}-{rep}.db"), runs, total // runs))
    out: dict[str, Any] = {"events_per_rep": total, "reps": reps}
    out |= {f"{k}_events_per_s": median(v) for k, v in rates.items()}
    batched = rates["raw_100_per_commit"]
    for runs in CONCURRENCY:
        out[f"ratio_{runs}_runs_to_raw_batched"] = median(
            [s / b for s, b in zip(rates[f"store_{runs}_runs"], batched)])
    out["goal"] = "64 runs >= 0.5 x raw batched"
    out["met"] = out["ratio_64_runs_to_raw_batched"] >= 0.5
    return out
