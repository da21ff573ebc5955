"""9. Workers: 100 queued runs at a server answering in 50 ms, driven by 1, 2 and 4 worker processes.

``python -m bench.workers [--quick] [--runs N] [--reps N] [--backend sqlite|postgres|both] [--no-takeover]``

The server is tests/fake_openai.py in a child process, writing each (streamed) answer in
one piece; the workers are ``agentlog worker`` processes on one log: an SQLite file, or a
database in a throwaway PostgreSQL cluster (tests/postgres.py: Debian's server binaries,
fsync off as in the tests). They are started on an empty log and left to go idle; then all
runs are queued in one transaction and the clock runs until the last one has finished.
Every configuration has the same runs in flight at once (``--concurrency`` = runs /
workers), so what changes is how many processes (and so CPUs) share the work. A run is
research -> write -> review -> write -> review (``max_iterations=2``): 5 calls, so its own
wall time alone is the ideal for the whole batch; efficiency = ideal / actual, as in
benchmark 4. The throughput ratio to one worker is what a second process buys; beside it,
the CPU the worker processes used (from /proc) per run and per wall second ("cores used"),
and per run that of what shares the cores with them: the answering server, the database
server's processes and the bench itself (it queues the runs and polls for their end). A
second worker can only help as far as the machine gives it a core.

Then the takeover, against a server answering in 500 ms (so runs are still in hand once a
second worker is up): one worker drives 4 runs, a second waits idle beside it, the first
is SIGKILLed; the time from its death until each of its runs is claimed by the other (its
second ``RunClaimed``), with a lease of ``--lease`` seconds. Beside it, the same after
SIGTERM: the runs are handed back once the calls in flight are answered.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlog.actors import agent_configs
from agentlog.events import RunQueued, RunStarted
from agentlog.store import Store, open_store

from .common import machine, median
from .concurrency import ROOT

DELAY = 0.05
TAKEOVER_DELAY = 0.5


class _Server:
    """tests/fake_openai.py in a child process (its complaints about connections cut by a
    SIGKILLed worker go nowhere), writing each answer in one piece (``--whole-streams``: the
    same bytes a word-by-word stream sends, in one write): it shares the machine's cores
    with the workers, which a real model server would not."""

    def __init__(self, delay: float):
        self._dir = tempfile.mkdtemp(prefix="agentlog-bench-")
        port_file = os.path.join(self._dir, "url")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_openai", "--delay", str(delay), "--port-file", port_file,
             "--whole-streams"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def _env(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTLOG_"))}
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-bench-not-a-key", AGENTLOG_CONFIG=os.devnull,
               PYTHONPATH=str(ROOT), **extra)
    return env


class _Pool:
    """Worker processes on one log; started, waited for until idle, stopped with SIGTERM."""

    def __init__(self, db: str, env: dict[str, str], n: int, concurrency: int):
        self.procs = []
        self._errs = []
        for i in range(n):
            err = tempfile.TemporaryFile("w+")
            self._errs.append(err)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "agentlog.cli", "worker", "--db", db, "--poll", "0.05",
                 "--concurrency", str(concurrency)], env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT))
        deadline = time.monotonic() + 60
        while not all("driving queued runs" in self.stderr(i) for i in range(n)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError("a worker did not start: " + " | ".join(self.stderr(i) for i in range(n)))
            time.sleep(0.02)

    def stderr(self, i: int) -> str:
        self._errs[i].seek(0)
        return self._errs[i].read()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for err in self._errs:
            err.close()


def _queue(store: Store, n: int, tag: str) -> list[str]:
    """``n`` runs queued in one transaction: every worker sees all of them at once."""
    agents = agent_configs("fake-model")
    ids = [f"{tag}-{i:04d}" for i in range(n)]
    store.append_all([(run_id, [RunStarted(task=f"worker bench task {run_id}", pipeline="content", agents=agents,
                                           max_iterations=2, threshold=8), RunQueued()], 0) for run_id in ids])
    return ids


def _wait_finished(store: Store, ids: list[str], timeout: float = 300.0) -> float:
    """The time the last of ``ids`` (the log's only unfinished runs) finished; one query per look."""
    deadline = time.monotonic() + timeout
    total = store.count_runs()
    # Finished runs only ever grow; "running + queued == 0" read in two queries could see a
    # run leave the queue after the first and before the second, and call the batch done
    # early. A failed run fails the batch: looked for twice a second only, so that the bench's
    # own queries take as little of the cores the workers share as they can.
    looks = 0
    while store.count_runs(status="finished") < total:
        if time.monotonic() > deadline:
            raise RuntimeError("runs did not finish")
        looks += 1
        if looks % 50 == 0 and store.count_runs(status="failed"):
            break  # reported below
        time.sleep(0.01)
    done = time.perf_counter()
    statuses = [store.get_run(r).status for r in ids]
    assert all(s == "finished" for s in statuses), statuses
    return done


class _Logs:
    """New, empty logs of one backend: SQLite files in a directory, or databases of a cluster."""

    def __init__(self, backend: str):
        self.backend = backend
        self.tmp = tempfile.mkdtemp(prefix="agentlog-bench-workers-")
        self.cluster = None
        if backend == "postgres":
            from tests.postgres import Cluster

            self.cluster = Cluster().start()

    def new(self, name: str) -> str:
        if self.cluster is None:
            return os.path.join(self.tmp, name + ".db")
        return self.cluster.url(self.cluster.database())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def server_cpu(self) -> float:
        """CPU seconds the database server's processes used so far: the postmaster's own and
        its ended children's, and every live child's (backends, writers); 0 for SQLite."""
        if self.cluster is None:
            return 0.0
        postmaster = int((self.cluster.dir / "data" / "postmaster.pid").read_text().split()[0])
        total = _cpu_seconds(postmaster, children=True)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if _stat(int(entry))[1] == postmaster:
                        total += _cpu_seconds(int(entry))
                except OSError:  # ended meanwhile: counted in the postmaster's children's time
                    pass
        return total


def _stat(pid: int) -> list[int]:
    """/proc/PID/stat's numeric fields from the state on: [state, ppid, ...] (state as 0)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return [0] + [int(f) for f in fields[1:17]]


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a (live) process, from /proc; with ``children``, plus that
    of its children it has waited for."""
    fields = _stat(pid)
    ticks = fields[11] + fields[12] + (fields[13] + fields[14] if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _others_cpu(logs: _Logs, server: _Server) -> dict[str, float]:
    """CPU seconds so far of what shares the machine with the workers: the answering server,
    the database server's processes (0 for SQLite), and this process (it queues and waits)."""
    return {"server": _cpu_seconds(server.proc.pid), "database": logs.server_cpu(), "bench": time.process_time()}


def _batch(logs: _Logs, server: _Server, workers: int, n_runs: int, rep: int) -> tuple[float, float, dict[str, float]]:
    """The batch's wall time, the CPU seconds its worker processes used meanwhile, and those
    of the answering server, the database server and the bench's own process."""
    db = logs.new(f"workers-{workers}-{rep}")
    store = open_store(db)
    pool = _Pool(db, _env(server.base_url), workers, max(1, -(-n_runs // workers)))
    try:
        cpu = [_cpu_seconds(p.pid) for p in pool.procs]
        others = _others_cpu(logs, server)
        start = time.perf_counter()
        ids = _queue(store, n_runs, f"w{workers}")
        wall = _wait_finished(store, ids) - start
        others = {k: v - others[k] for k, v in _others_cpu(logs, server).items()}
        return wall, sum(_cpu_seconds(p.pid) - c for p, c in zip(pool.procs, cpu)), others
    finally:
        pool.stop()
        store.close()


def _alone(logs: _Logs, base_url: str, reps: int) -> float:
    """One run's wall time alone, queued to an idle worker: the ideal for a batch run at once."""
    db = logs.new("alone")
    store = open_store(db)
    pool = _Pool(db, _env(base_url), 1, 1)
    try:
        times = []
        for i in range(reps + 1):  # the first one warms the worker up
            start = time.perf_counter()
            ids = _queue(store, 1, f"alone{i}")
            times.append(_wait_finished(store, ids) - start)
        return median(times[1:])
    finally:
        pool.stop()
        store.close()


def _takeover(logs: _Logs, base_url: str, lease: float, how: signal.Signals, rep: int) -> list[float]:
    """Seconds from a worker's death (or SIGTERM) to each of its runs being claimed by another."""
    db = logs.new(f"takeover-{how.name}-{rep}")
    store = open_store(db)
    env = _env(base_url, AGENTLOG_LEASE_SECONDS=str(lease))
    first = _Pool(db, env, 1, 4)
    try:
        ids = _queue(store, 4, "t")
        deadline = time.monotonic() + 60
        while not all(e.type == "LLMCallRequested" for e in [store.read(r)[-1] for r in ids]):
            if time.monotonic() > deadline:
                raise RuntimeError("the first worker never got going")
            time.sleep(0.005)
        second = _Pool(db, env, 1, 4)  # idle beside it: the first holds every run
        try:
            first.procs[0].send_signal(how)
            dead_at = time.time()
            _wait_finished(store, ids)
        finally:
            second.stop()
        moved = []
        for run_id in ids:
            claims = [s for s in store.read(run_id) if s.type == "RunClaimed"]
            if len(claims) >= 2:
                moved.append(claims[1].recorded_at - dead_at)
        return moved
    finally:
        first.stop()
        store.close()


def bench(quick: bool = False, n_runs: int = 100, reps: int | None = None, lease: float = 3.0,
          backend: str = "sqlite", takeover: bool = True) -> dict[str, Any]:
    reps = reps or (2 if quick else 3)
    logs = _Logs(backend)
    try:
        server = _Server(DELAY)
        try:
            ideal = _alone(logs, server.base_url, reps)
            walls: dict[int, list[float]] = {1: [], 2: [], 4: []}
            cpus: dict[int, list[float]] = {1: [], 2: [], 4: []}
            others: dict[int, list[dict[str, float]]] = {1: [], 2: [], 4: []}
            for rep in range(reps):
                for workers in walls:  # interleaved, so the machine's noise hits every count alike
                    wall, cpu, other = _batch(logs, server, workers, n_runs, rep)
                    walls[workers].append(wall)
                    cpus[workers].append(cpu)
                    others[workers].append(other)
        finally:
            server.stop()
        killed: list[float] = []
        termed: list[float] = []
        if takeover:
            # Slower answers for the takeover, so that runs are still in hand when the second worker is up.
            server = _Server(TAKEOVER_DELAY)
            try:
                killed = [t for rep in range(reps) for t in _takeover(logs, server.base_url, lease, signal.SIGKILL, rep)]
                termed = [t for rep in range(reps) for t in _takeover(logs, server.base_url, lease, signal.SIGTERM, rep)]
            finally:
                server.stop()
    finally:
        logs.close()
    one = median(walls[1])
    out: dict[str, Any] = {"backend": backend, "runs": n_runs, "server_delay_s": DELAY, "calls_per_run": 5,
                           "reps": reps, "ideal_s": ideal, "by_workers": {}}
    for workers, times in walls.items():
        wall = median(times)
        cpu = median(cpus[workers])
        # cores_used: the workers' CPU seconds per wall second: what the machine gave them.
        out["by_workers"][workers] = {"wall_s": wall, "runs_per_s": n_runs / wall, "efficiency": ideal / wall,
                                      "throughput_ratio": one / wall, "walls_s": times,
                                      "cpu_ms_per_run": cpu / n_runs * 1e3, "cores_used": cpu / wall,
                                      **{f"{k}_cpu_ms_per_run": median([o[k] for o in others[workers]]) / n_runs * 1e3
                                         for k in others[workers][0]}}
    out["takeover"] = {"lease_s": lease, "server_delay_s": TAKEOVER_DELAY,
                       "sigkill_median_s": median(killed) if killed else None,
                       "sigkill_max_s": max(killed) if killed else None, "sigkill_runs": len(killed),
                       "sigterm_median_s": median(termed) if termed else None, "sigterm_runs": len(termed)}
    out["goal"] = "2 workers >= 1.8x the throughput of 1"
    out["met"] = out["by_workers"][2]["throughput_ratio"] >= 1.8
    return out


def _print(r: dict[str, Any]) -> None:
    print(f"{r['backend']}: {r['runs']} runs, server {r['server_delay_s'] * 1e3:.0f} ms, one run alone "
          f"{r['ideal_s']:.3f} s (medians of {r['reps']})")
    print("| workers | wall s | runs/s | efficiency | throughput vs 1 worker | worker CPU per run | cores used "
          "| CPU per run: answering server / database server / bench |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, w in r["by_workers"].items():
        print(f"| {workers} | {w['wall_s']:.2f} | {w['runs_per_s']:.1f} | {w['efficiency']:.0%} | "
              f"{w['throughput_ratio']:.2f}x | {w['cpu_ms_per_run']:.1f} ms | {w['cores_used']:.2f} | "
              f"{w['server_cpu_ms_per_run']:.1f} / {w['database_cpu_ms_per_run']:.1f} / "
              f"{w['bench_cpu_ms_per_run']:.1f} ms |")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    t = r["takeover"]
    if t["sigkill_runs"]:
        print(f"takeover with a {t['lease_s']:g} s lease: SIGKILL -> claimed by the other worker in "
              f"{t['sigkill_median_s']:.2f} s (median of {t['sigkill_runs']} runs, max {t['sigkill_max_s']:.2f} s)"
              + (f"; SIGTERM -> {t['sigterm_median_s']:.2f} s" if t["sigterm_runs"] else ""))
    print(f"goal: {r['goal']}: {'met' if r['met'] else 'not met'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 3")
    parser.add_argument("--runs", type=int, default=100, help="runs per batch (default 100)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 2 with --quick)")
    parser.add_argument("--lease", type=float, default=3.0, help="AGENTLOG_LEASE_SECONDS for the takeover (3)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both",
                        help="the log the workers share (default both, one after the other)")
    parser.add_argument("--no-takeover", dest="takeover", action="store_false",
                        help="measure the throughput only, not the time a dead worker's runs take to move on")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    facts = machine()
    print(" ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
    results = []
    for backend in (("sqlite", "postgres") if args.backend == "both" else (args.backend,)):
        results.append(bench(args.quick, n_runs=args.runs, reps=args.reps, lease=args.lease, backend=backend,
                             takeover=args.takeover))
        _print(results[-1])
    if args.out:
        args.out.write_text(json.dumps({"machine": facts, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
