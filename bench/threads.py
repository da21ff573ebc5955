"""9. The runtime's threads and per-step cost: threads per run in flight, and benchmark 1's ratio.

Threads: 1, 10 and 100 runs started at once against ``tests/fake_openai.py`` in a child
process answering after ``--delay`` (50 ms), each run research -> write -> review -> write ->
review (5 calls), every run with the default wiring. While they are in flight the live
threads of the process are sampled every 5 ms; the figure is the peak minus the threads
before the runs began, divided by the number of runs. "Before" is the process after one
warm-up run, once its idle threads have ended; the lease heartbeat (one thread per
process, from its first run on) is not counted. After each repetition the process waits (up to 30 s) for its
thread count to come back down to that, and says whether it did.

Overhead: benchmark 1 (``bench/pipeline.py``) run here too, so the two goals of the runtime
are measured by one command::

    python -m bench.threads [--quick] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import Any

from agentlog.actors import agent_configs, run, start_run
from agentlog.store import SQLiteStore

from . import pipeline
from .common import machine, median
from .concurrency import _Server

COUNTS = (1, 10, 100)


class _PeakThreads:
    """The most threads alive at once while it samples."""

    def __init__(self) -> None:
        self.peak = _threads()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _threads())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - 1  # not counting the sampler itself


def _threads() -> int:
    return sum(t.name != "agentlog-lease-heartbeat" for t in threading.enumerate())


def _settle(baseline: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _threads() > baseline:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def threads_in_flight(store: SQLiteStore, n: int, reps: int, baseline: int) -> dict[str, Any]:
    agents = agent_configs("fake-model")
    per_run, back = [], True
    for _ in range(reps):
        sampler = _PeakThreads()
        handles = [start_run(store, f"threads task {n} {i}", agents=agents, max_iterations=2) for i in range(n)]
        for h in handles:
            summary = h.wait(timeout=120)
            assert summary.status == "finished" and summary.iterations == 2, summary
        peak = sampler.stop()
        per_run.append((peak - baseline) / n)
        back = _settle(baseline) and back
    return {"runs": n, "threads_per_run": median(per_run), "all": per_run, "back_to_baseline": back}


def bench(quick: bool, delay: float = 0.05) -> dict[str, Any]:
    reps = 3 if quick else 5
    server = _Server(delay)
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = server.base_url, "sk-bench-not-a-key"
    try:
        store = SQLiteStore(os.path.join(tempfile.mkdtemp(prefix="agentlog-bench-"), "threads.db"))
        baseline = _threads()
        run(store, "warm-up", agents=agent_configs("fake-model"), max_iterations=2)
        _settle(baseline)
        rows = [threads_in_flight(store, n, reps, baseline) for n in COUNTS]
        store.close()
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    overhead = pipeline.bench(quick)
    at_100 = rows[-1]["threads_per_run"]
    return {
        "server_delay_s": delay, "reps": reps, "threads": rows, "overhead": overhead,
        "goal": "threads per run in flight <= 1.2 (100 runs); per-step overhead <= 2x",
        "met": at_100 <= 1.2 and overhead["met"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--delay", type=float, default=0.05, help="the server's answer time in seconds")
    args = parser.parse_args(argv)
    print(" ".join(f"{k}={v}" for k, v in machine().items()), flush=True)
    r = bench(args.quick, args.delay)
    for row in r["threads"]:
        print(f"{row['runs']:>4} runs at once: {row['threads_per_run']:.2f} threads per run in flight "
              f"(reps {', '.join(f'{x:.2f}' for x in row['all'])}); "
              f"back to the baseline afterwards: {'yes' if row['back_to_baseline'] else 'no'}")
    o = r["overhead"]
    print(f"per-step overhead: agentlog {o['agentlog_us_per_step']:.0f} us/step, minimal durable log "
          f"{o['baseline_us_per_step']:.0f} us/step: {o['ratio']:.2f}x ({o['reps']} reps of {o['runs_per_rep']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
