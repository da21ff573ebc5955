"""5. Resume cost as a function of log length, 100 to 100,000 events in one run.

Long logs are built by appending directly: ``RunStarted``, then cycles of a model call
with a tool round-trip (``LLMCallRequested``, ``ToolInvoked``, ``ToolReturned``,
``LLMCallAnswered``, each call with its own id), as an agent in a long tool loop writes
them. Resume is what the orchestrator does on start: read the stream, fold it, decide.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

from agentlog.events import LLMCallAnswered, LLMCallRequested, RunStarted, ToolInvoked, ToolReturned, Usage
from agentlog.pipelines import fold, get_pipeline
from agentlog.store import SQLiteStore

from .common import median, sample_run_events

LENGTHS = (100, 1_000, 10_000, 100_000)


def _long_log(store: SQLiteStore, run_id: str, length: int) -> None:
    started = sample_run_events()[0]
    assert isinstance(started, RunStarted)
    request = {"model": "bench-model", "messages": [{"role": "user", "content": "Task: t\n\n" + "x" * 600}]}

    def cycle(i: int) -> list:
        call_id = f"tool-loop/{i}"
        return [
            LLMCallRequested(call_id=call_id, agent="researcher", step=f"tool-{i}", attempt=1, request=request,
                             request_hash=f"{i:064x}"),
            ToolInvoked(call_id=call_id, tool_call_id=f"t{i}", name="search_docs", arguments='{"query": "q"}'),
            ToolReturned(call_id=call_id, tool_call_id=f"t{i}", name="search_docs", result="r" * 400),
            LLMCallAnswered(call_id=call_id, agent="researcher", request_hash=f"{i:064x}", content="c" * 300,
                            usage=Usage(100, 50, 150), model="bench-model"),
        ]

    events = [started]
    i = 0
    while len(events) < length:
        events += cycle(i)
        i += 1
    events = events[:length]
    seq = 0
    for chunk in range(0, length, 1000):
        seq = store.append(run_id, events[chunk:chunk + 1000], seq)


def bench(quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 7
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    store = SQLiteStore(os.path.join(tmp, "resume.db"))
    pipeline = get_pipeline("content")
    rows = []
    for length in LENGTHS:
        run_id = f"long-{length}"
        _long_log(store, run_id, length)
        assert store.last_seq(run_id) == length
        parts: dict[str, list[float]] = {"read": [], "fold": [], "decide": []}
        for _ in range(reps):
            t0 = time.perf_counter()
            stored = store.read(run_id)
            t1 = time.perf_counter()
            state = fold(pipeline, (s.event for s in stored))
            t2 = time.perf_counter()
            commands = pipeline.decide(state)
            t3 = time.perf_counter()
            assert commands
            parts["read"].append(t1 - t0)
            parts["fold"].append(t2 - t1)
            parts["decide"].append(t3 - t2)
        read, fold_, decide = (median(parts[k]) for k in ("read", "fold", "decide"))
        total = read + fold_ + decide
        rows.append({"events": length, "resume_ms": total * 1e3, "us_per_event": total / length * 1e6,
                     "read_share": read / total, "fold_share": fold_ / total, "decide_ms": decide * 1e3})
    store.close()
    first, last = rows[0], rows[-1]
    # Growth exponent k in time ~ length^k, from the two ends (1 = linear).
    exponent = math.log(last["resume_ms"] / first["resume_ms"]) / math.log(last["events"] / first["events"])
    # The large end, where fixed costs no longer hide the slope.
    top = math.log(rows[-1]["resume_ms"] / rows[-2]["resume_ms"]) / math.log(rows[-1]["events"] / rows[-2]["events"])
    return {
        "reps": reps, "rows": rows, "growth_exponent": exponent, "growth_exponent_top_decade": top,
        "goal": "no faster than linear (exponent <= ~1); reading dominates",
        "met": top <= 1.1 and all(r["read_share"] > 0.5 for r in rows[1:]),
    }
