"""Parallel research takes the time of the slower researcher, not the sum of both.

Three ways to run the research phase of the same content pipeline against a local
OpenAI-compatible server that answers every request after ``--delay`` seconds
(tests/fake_openai.FakeOpenAIServer, reached through the real ``openai`` client):

- single:     one researcher (one call), for reference;
- sequential: the facts and the counter researcher, their calls made one after the other
              (the same run as ``parallel``; a gateway lock lets one request out at a time);
- parallel:   the facts and the counter researcher as two agent actors at once.

The research phase is measured from the log: from the first ``LLMCallRequested`` to
``FindingsReady`` (``recorded_at``). Cases are interleaved per repetition; medians are
reported. Run from the repository root::

    python -m bench.parallel_research [--delay 0.5] [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agentlog.actors import agent_configs, run
from agentlog.models import Endpoint, Gateway, RetryPolicy
from agentlog.store import SQLiteStore
from tests.fake_openai import FakeOpenAIServer


class SerialGateway(Gateway):
    """A gateway that lets one request out at a time: the sequential baseline."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._one_at_a_time = threading.Lock()

    def complete(self, request: dict[str, Any], *args: Any, **kwargs: Any):  # type: ignore[override]
        with self._one_at_a_time:
            return super().complete(request, *args, **kwargs)


def one_run(store: SQLiteStore, base_url: str, case: str) -> tuple[float, float, int]:
    """``(research phase seconds, whole run seconds, research calls)`` of one run."""
    cls = SerialGateway if case == "sequential" else Gateway
    gateway = cls(Endpoint(base_url=base_url, api_key="bench"), retry=RetryPolicy(max_attempts=1), timeout=60)
    started = time.perf_counter()
    try:
        summary = run(store, f"benchmark task {case} {time.perf_counter_ns()}", agents=agent_configs("bench-model"),
                      gateway=gateway, max_iterations=1, research="single" if case == "single" else "parallel")
    finally:
        gateway.close()
    wall = time.perf_counter() - started
    assert summary.status == "finished", summary
    stored = store.read(summary.run_id)
    first = next(s for s in stored if s.type == "LLMCallRequested")
    ready = next(s for s in stored if s.type == "FindingsReady")
    calls = sum(1 for s in stored if s.type == "LLMCallRequested" and s.event.step.startswith("research"))
    return ready.recorded_at - first.recorded_at, wall, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the server takes per request")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    cases = ("single", "sequential", "parallel")
    research: dict[str, list[float]] = {c: [] for c in cases}
    whole: dict[str, list[float]] = {c: [] for c in cases}
    calls: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(delay=args.delay) as server, \
            SQLiteStore(Path(tmp) / "bench.db", create=True) as store:
        one_run(store, server.base_url, "parallel")  # warm-up: connections, imports
        for _ in range(args.reps):
            for case in cases:
                phase, wall, n = one_run(store, server.base_url, case)
                research[case].append(phase)
                whole[case].append(wall)
                calls[case] = n
    print(f"research phase, server delay {args.delay:.2f}s per request, {args.reps} runs per case "
          f"(medians; min-max in brackets)\n")
    header = f"{'case':<11} {'research calls':>14} {'research phase (s)':>24} {'whole run (s)':>20}"
    print(header)
    print("-" * len(header))
    for case in cases:
        r, w = research[case], whole[case]
        print(f"{case:<11} {calls[case]:>14} {statistics.median(r):>8.3f} [{min(r):.3f}-{max(r):.3f}]"
              f" {statistics.median(w):>8.3f} [{min(w):.3f}-{max(w):.3f}]")
    speedup = statistics.median(research["sequential"]) / statistics.median(research["parallel"])
    print(f"\nparallel research phase = {1 / speedup:.2f} x sequential ({speedup:.2f}x faster)")


if __name__ == "__main__":
    main()
