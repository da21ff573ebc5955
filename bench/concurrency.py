"""4. Concurrency: 100 runs at once against an OpenAI-compatible server answering in 50 ms.

The server is tests/fake_openai.py in a child process (as a real model server would be,
with TCP_NODELAY, as real servers set it),
answering like the offline model: a run is research -> write -> review -> write -> review
(max_iterations=2), so its critical path is 5 calls. The ideal wall time of N runs at
once is one run's own wall time, measured alone first; efficiency = ideal / actual.
Each run gets the default wiring unless "shared gateway", where all runs are given one
Gateway. (The default wiring gave each run its own Gateway until runs given none came to
share the process's gateway for their endpoint, with its agents: the two cases are now the
same wiring; the "per-run gateway" label is kept for the results' keys.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agentlog.actors import agent_configs, run, start_run
from agentlog.models import Endpoint, Gateway
from agentlog.store import SQLiteStore

from .common import median, openai_env, rss_mb

ROOT = Path(__file__).resolve().parent.parent


class _Server:
    def __init__(self, delay: float):
        self._dir = tempfile.mkdtemp(prefix="agentlog-bench-")
        port_file = os.path.join(self._dir, "url")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_openai", "--delay", str(delay), "--port-file", port_file],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.05)
        self.base_url = open(port_file).read().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class _Peak:
    """Samples live threads and RSS while runs are in flight."""

    def __init__(self) -> None:
        self.threads, self.rss = threading.active_count(), rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.threads = max(self.threads, threading.active_count())
            self.rss = max(self.rss, rss_mb())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _many(store: SQLiteStore, n: int, gateway: Gateway | None) -> tuple[float, _Peak]:
    agents = agent_configs("fake-model")
    peak = _Peak()
    start = time.perf_counter()
    handles = [start_run(store, f"concurrent task {i}", agents=agents, max_iterations=2, gateway=gateway)
               for i in range(n)]
    for h in handles:
        summary = h.wait(timeout=120)
        assert summary.status == "finished" and summary.iterations == 2, summary
    elapsed = time.perf_counter() - start
    peak.stop()
    return elapsed, peak


def bench(quick: bool, delay: float = 0.05, n_runs: int = 100) -> dict[str, Any]:
    reps = 3 if quick else 5
    server = _Server(delay)
    try:
        with openai_env(server.base_url):
            tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
            store = SQLiteStore(os.path.join(tmp, "concurrency.db"))
            agents = agent_configs("fake-model")
            run(store, "warm-up", agents=agents, max_iterations=2)
            singles = []
            for _ in range(reps):
                t = time.perf_counter()
                run(store, "one run alone", agents=agents, max_iterations=2)
                singles.append(time.perf_counter() - t)
            ideal = median(singles)
            threads_before, rss_before = threading.active_count(), rss_mb()
            cpu_start = time.process_time()
            results: dict[str, dict[str, list[float]]] = {}
            for _ in range(reps):
                for label, gateway in (("per-run gateway", None),
                                       ("shared gateway", Gateway(Endpoint.from_env()))):
                    elapsed, peak = _many(store, n_runs, gateway)
                    if gateway is not None:
                        gateway.close()
                    r = results.setdefault(label, {"wall": [], "threads": [], "rss": []})
                    r["wall"].append(elapsed)
                    r["threads"].append(peak.threads - threads_before)
                    r["rss"].append(peak.rss - rss_before)
            cpu = (time.process_time() - cpu_start) / (2 * reps)  # per batch of n_runs
            store.close()
    finally:
        server.stop()
    out: dict[str, Any] = {"runs": n_runs, "server_delay_s": delay, "calls_per_run": 5, "reps": reps,
                           "ideal_s": ideal, "critical_path_floor_s": 5 * delay}
    for label, r in results.items():
        key = label.replace(" ", "_").replace("-", "_")
        wall = median(r["wall"])
        out[key] = {"wall_s": wall, "efficiency": ideal / wall,
                    "threads_per_run": median(r["threads"]) / n_runs,
                    "rss_mb_per_run": median(r["rss"]) / n_runs}
    out["goal"] = "efficiency >= 0.9"
    out["met"] = out["per_run_gateway"]["efficiency"] >= 0.9
    out["process_cpu_s"] = cpu
    return out
