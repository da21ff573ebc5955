"""1. Overhead per pipeline step: a whole run against an instant model vs a minimal durable log.

The run is research -> write -> review -> write -> review (max_iterations=2; the instant
reviewer scores 6, below the threshold), i.e. 5 LLM steps and 17 events. The baseline is
a plain loop that makes the same 5 calls with the same requests and writes the same rows
(``json.dumps`` of the same payloads) to SQLite, one commit per step, in WAL mode with
``synchronous=NORMAL`` like the store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import uuid
from typing import Any

from agentlog.actors import agent_configs, run
from agentlog.events import to_builtins
from agentlog.store import SQLiteStore

from .common import InstantGateway, interleaved, median

STEPS = 5


def _record_template(store: SQLiteStore, gateway: InstantGateway) -> list[tuple[str, dict[str, Any]]]:
    """The (type, payload) rows of one real run, for the baseline to write again."""
    summary = run(store, "the benchmark task", agents=agent_configs("bench-model"), gateway=gateway,
                  max_iterations=2, threshold=9)
    assert summary.last_seq == 17 and summary.iterations == 2, summary
    return [(s.type, to_builtins(s.event)) for s in store.read(summary.run_id)]


def baseline_run(db: sqlite3.Connection, gateway: InstantGateway, template: list[tuple[str, dict[str, Any]]]) -> None:
    """What a hand-written loop with a durable log would do for the same run."""
    run_id = uuid.uuid4().hex[:16]
    seq = 0

    def write(rows: list[tuple[str, dict[str, Any]]]) -> None:
        nonlocal seq
        db.execute("BEGIN")
        for type_name, payload in rows:
            seq += 1
            db.execute("INSERT INTO events VALUES (?, ?, ?, 1, 0.0, ?)", (run_id, seq, type_name, json.dumps(payload)))
        db.execute("COMMIT")

    write(template[:1])  # RunStarted
    i = 1
    for _ in range(STEPS):
        requested, answered, outcome = template[i:i + 3]
        answer = gateway.complete(requested[1]["request"])
        if answer.content.startswith("{"):
            json.loads(answer.content)  # the loop would parse structured answers too
        write([requested, answered, outcome])
        i += 3
    write(template[i:])  # RunFinished


def baseline_db(path: str) -> sqlite3.Connection:
    """The minimal durable log's table: WAL and ``synchronous=NORMAL`` like the store."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, "
               "version INTEGER NOT NULL, recorded_at REAL NOT NULL, data TEXT NOT NULL, "
               "PRIMARY KEY (run_id, seq)) WITHOUT ROWID")
    return db


def bench(quick: bool) -> dict[str, Any]:
    runs = 30 if quick else 100
    reps = 5 if quick else 9
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    store = SQLiteStore(os.path.join(tmp, "pipeline.db"))
    gateway = InstantGateway()
    template = _record_template(store, gateway)
    db = baseline_db(os.path.join(tmp, "baseline.db"))

    def agentlog_runs() -> None:
        for i in range(runs):
            run(store, f"the benchmark task {i}", agents=agent_configs("bench-model"), gateway=gateway,
                max_iterations=2, threshold=9)

    def baseline_runs() -> None:
        for _ in range(runs):
            baseline_run(db, gateway, template)

    agentlog_runs(), baseline_runs()  # warm up
    times = interleaved(reps, agentlog=agentlog_runs, baseline=baseline_runs)
    ratios = sorted(a / b for a, b in zip(times["agentlog"], times["baseline"]))
    a, b = median(times["agentlog"]) / runs, median(times["baseline"]) / runs
    store.close(), db.close()
    return {
        "runs_per_rep": runs, "reps": reps,
        "agentlog_runs_per_s": 1 / a, "baseline_runs_per_s": 1 / b,
        "agentlog_us_per_step": a / STEPS * 1e6, "baseline_us_per_step": b / STEPS * 1e6,
        "ratio": median(ratios), "goal": "ratio <= 2", "met": median(ratios) <= 2,
    }
