"""11. The runtime's threads and per-step cost: threads per run in flight, and benchmark 1's ratio.

Threads: 1, 10 and 100 runs started at once against ``tests/fake_openai.py`` in a child
process answering after ``--delay`` (50 ms), each run research -> write -> review -> write ->
review (5 calls), every run with the default wiring. While they are in flight the live
threads of the process are sampled every 5 ms; the figure is the peak minus the threads
before the runs began, divided by the number of runs. "Before" is the process after one
warm-up run, once its idle threads have ended; the lease heartbeat (one thread per
process, from its first run on) is not counted. After each repetition the process waits (up to 30 s) for its
thread count to come back down to that, and says whether it did.

Overhead: benchmark 1 (``bench/pipeline.py``: whole runs against an instant model, and the
minimal durable log writing the same rows), with a third case interleaved with them: the
store alone, appending the same run's events in the batches the orchestrator makes, under a
lease taken and given back as ``drive`` does, with no actors and no model. agentlog's time
less the store's is what the runtime (actors, decisions, reuse look-ups) adds. So the two
goals of the runtime are measured by one command::

    python -m bench.threads [--quick] [--delay 0.05]

``--before DIR`` (a checkout of an older commit) measures only the per-step CPU ratios (agentlog's,
and the store alone's) to the minimal log, of DIR and of this checkout, each in child processes with its own code, taking turns ``--rounds``
times (``--quick``'s sizes): on a loaded machine, turns of a few seconds compare better than
two runs of minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agentlog.actors import agent_configs, run, start_run
from agentlog.store import SQLiteStore

from agentlog.actors.lease import acquire

from . import pipeline
from .common import InstantGateway, machine, median, openai_env
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


# The orchestrator's appends for the standard run: RunStarted with the first call's intent
# (and the lease); then per answer its outcome and the next call's intent (the last: the
# outcome and RunFinished, giving the lease up).
BATCHES = ((0, 2), (2, 5), (5, 8), (8, 11), (11, 14), (14, 17))


def per_step(quick: bool) -> dict[str, Any]:
    runs, reps = (30, 5) if quick else (100, 9)
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    store = SQLiteStore(os.path.join(tmp, "pipeline.db"))
    gateway = InstantGateway()
    template = pipeline._record_template(store, gateway)
    db = pipeline.baseline_db(os.path.join(tmp, "baseline.db"))
    # The store alone appends runs recorded elsewhere, each with its own task: text the log
    # has not seen, as an agentlog run's prompts are (the log stores each text once).
    scratch = SQLiteStore(os.path.join(tmp, "scratch.db"))
    recorded = []
    for i in range(runs * (reps + 1)):
        summary = run(scratch, f"the store's task {i}", agents=agent_configs("bench-model"), gateway=gateway,
                      max_iterations=2, threshold=9)
        recorded.append([s.event for s in scratch.read(summary.run_id)])
    scratch.close()
    assert [type(recorded[0][i]).__name__ for i in (1, 4, 16)] == ["LLMCallRequested"] * 2 + ["RunFinished"]
    names, to_append = iter(range(10**9)), iter(recorded)

    def agentlog_runs() -> None:
        for _ in range(runs):
            run(store, f"the benchmark task {next(names)}", agents=agent_configs("bench-model"), gateway=gateway,
                max_iterations=2, threshold=9)

    def store_alone() -> None:
        for _ in range(runs):
            run_id, events = f"alone-{next(names)}", next(to_append)
            a, b = BATCHES[0]
            lease, seq = acquire(store, run_id, 30.0, first=events[a:b]), b
            for a, b in BATCHES[1:]:
                seq = store.append(run_id, events[a:b], seq, lease=lease, release=b == len(events))

    def baseline_runs() -> None:
        for _ in range(runs):
            pipeline.baseline_run(db, gateway, template)

    agentlog_runs(), store_alone(), baseline_runs()  # warm up
    cases = {"agentlog": agentlog_runs, "store": store_alone, "baseline": baseline_runs}
    wall: dict[str, list[float]] = {case: [] for case in cases}
    cpu: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(reps):  # interleaved, so load on the machine hits the cases alike
        for case, fn in cases.items():
            gc.collect()
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[case].append(time.process_time() - c)
            wall[case].append(time.perf_counter() - w)
    store.close(), db.close()

    def us_per_step(times: dict[str, list[float]], case: str) -> float:
        return median(times[case]) / runs / pipeline.STEPS * 1e6

    def ratio(times: dict[str, list[float]], case: str) -> float:
        return median([a / b for a, b in zip(times[case], times["baseline"])])

    out: dict[str, Any] = {"runs_per_rep": runs, "reps": reps}
    for label, times in (("wall", wall), ("cpu", cpu)):
        out[label] = {f"{case}_us_per_step": us_per_step(times, case) for case in cases}
        out[label] |= {"ratio": ratio(times, "agentlog"), "store_ratio": ratio(times, "store")}
    out["met"] = out["cpu"]["ratio"] <= 2  # by CPU: on this shared machine the wall time is mostly waiting for a core
    return out


def bench(quick: bool, delay: float = 0.05) -> dict[str, Any]:
    reps = 3 if quick else 5
    server = _Server(delay)
    try:
        with openai_env(server.base_url):
            store = SQLiteStore(os.path.join(tempfile.mkdtemp(prefix="agentlog-bench-"), "threads.db"))
            baseline = _threads()
            run(store, "warm-up", agents=agent_configs("fake-model"), max_iterations=2)
            _settle(baseline)
            rows = [threads_in_flight(store, n, reps, baseline) for n in COUNTS]
            store.close()
    finally:
        server.stop()
    overhead = per_step(quick)
    at_100 = rows[-1]["threads_per_run"]
    return {
        "server_delay_s": delay, "reps": reps, "threads": rows, "overhead": overhead,
        "goal": "threads per run in flight <= 1.2 (100 runs); per-step overhead <= 2x",
        "met": at_100 <= 1.2 and overhead["met"],
    }


# A child process measures one checkout's per-step cost (``--before``) with that checkout's own code.
_CHILD = "import json; from bench.threads import per_step; print(json.dumps(per_step(quick=True)))"


def beside(before: Path, rounds: int) -> dict[str, Any]:
    """The per-step CPU ratios of ``before`` (an older checkout) and this one, measured in child
    processes taking turns (``--quick``'s sizes each), so load on the machine hits both alike."""
    ratios: dict[str, list[float]] = {"before": [], "after": []}
    store: dict[str, list[float]] = {"before": [], "after": []}  # the store alone's
    for _ in range(rounds):
        for side, checkout in (("before", before), ("after", Path(__file__).resolve().parent.parent)):
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            out = subprocess.run([sys.executable, "-c", _CHILD], cwd=checkout, env=env, check=True,
                                 capture_output=True, text=True).stdout
            cpu = json.loads(out.splitlines()[-1])["cpu"]
            ratios[side].append(cpu["ratio"])
            store[side].append(cpu["store_ratio"])
    pairs = [a / b for a, b in zip(ratios["after"], ratios["before"])]
    store_pairs = [a / b for a, b in zip(store["after"], store["before"])]
    return {"rounds": rounds, **ratios, "before_ratio": median(ratios["before"]),
            "after_ratio": median(ratios["after"]), "after_over_before": median(pairs),
            "store": store, "store_before_ratio": median(store["before"]), "store_after_ratio": median(store["after"]),
            "store_after_over_before": median(store_pairs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--delay", type=float, default=0.05, help="the server's answer time in seconds")
    parser.add_argument("--before", type=Path,
                        help="an older checkout: only the per-step CPU ratios, its and this one's, in turns")
    parser.add_argument("--rounds", type=int, default=6, help="turns of each checkout with --before")
    args = parser.parse_args(argv)
    print(" ".join(f"{k}={v}" for k, v in machine().items()), flush=True)
    if args.before is not None:
        b = beside(args.before, args.rounds)
        print(f"per step, CPU, agentlog / the minimal durable log: before {b['before_ratio']:.2f}x "
              f"({', '.join(f'{x:.2f}' for x in b['before'])}), after {b['after_ratio']:.2f}x "
              f"({', '.join(f'{x:.2f}' for x in b['after'])}); after / before, by round: "
              f"{b['after_over_before']:.2f} (median of {b['rounds']} rounds)")
        print(f"per step, CPU, the store alone / the minimal durable log: before {b['store_before_ratio']:.2f}x "
              f"({', '.join(f'{x:.2f}' for x in b['store']['before'])}), after {b['store_after_ratio']:.2f}x "
              f"({', '.join(f'{x:.2f}' for x in b['store']['after'])}); after / before, by round: "
              f"{b['store_after_over_before']:.2f}")
        return 0
    r = bench(args.quick, args.delay)
    for row in r["threads"]:
        print(f"{row['runs']:>4} runs at once: {row['threads_per_run']:.2f} threads per run in flight "
              f"(reps {', '.join(f'{x:.2f}' for x in row['all'])}); "
              f"back to the baseline afterwards: {'yes' if row['back_to_baseline'] else 'no'}")
    o = r["overhead"]
    for label in ("wall", "cpu"):
        t = o[label]
        print(f"per step ({label} time): agentlog {t['agentlog_us_per_step']:.0f} us, the store alone "
              f"{t['store_us_per_step']:.0f} us, minimal durable log {t['baseline_us_per_step']:.0f} us: "
              f"agentlog {t['ratio']:.2f}x, the store alone {t['store_ratio']:.2f}x the minimal log "
              f"({o['reps']} reps of {o['runs_per_rep']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
