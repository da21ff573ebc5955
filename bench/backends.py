"""9. The two backends side by side: append throughput and pipeline overhead, SQLite and PostgreSQL.

The same measurements as ``bench/append.py`` (threads appending one event per ``append``,
cycling through a real run's events, from 1 and 8 concurrent runs) and ``bench/pipeline.py``
(whole runs of the content pipeline against an instant in-process model, 5 LLM steps and 17
events, per step), run against each backend in turn, interleaved, in one process:

- ``sqlite``: a file, WAL, ``synchronous=NORMAL`` (the default: no fsync per commit);
- ``postgres``: a local server over TCP on 127.0.0.1 with its default durability
  (``synchronous_commit=on``: every commit waits for its WAL flush);
- ``postgres_async_commit``: the same server with ``synchronous_commit=off`` for agentlog's
  sessions, the closest to SQLite's ``NORMAL`` (a crash of the server may lose the last
  commits, never corrupt the log).

Quoted as medians over repetitions, and as ratios to SQLite within one run. The server is
``--pg URL`` (its database is emptied first: give one for the benchmark only), or else a
throwaway cluster started from Debian's binaries as the tests do (``tests/postgres.py``),
with fsync and full page writes on. Run from the repository root::

    python -m bench.backends [--reps 5] [--pg postgresql://user:pw@host/db]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg

from agentlog.actors import agent_configs, run
from agentlog.store import open_store, redact

from .common import InstantGateway, append_rate, median, timed

CONCURRENCY = (1, 8)
STEPS = 5


def store_append_rate(target: str, runs: int, per_run: int, tag: str) -> float:
    """Events per second appended by ``runs`` threads to the log ``target`` names."""
    with open_store(target) as store:
        return append_rate(store, runs, per_run, tag)


def pipeline_seconds(target: str, runs: int, tag: str) -> float:
    """Seconds for ``runs`` whole runs against the instant model (the store opened once)."""
    store = open_store(target)
    gateway = InstantGateway()
    try:
        def go() -> None:
            for i in range(runs):
                summary = run(store, f"{tag} task {i}", agents=agent_configs("bench-model"), gateway=gateway,
                              max_iterations=2, threshold=9)
                assert summary.last_seq == 17, summary

        return timed(go)
    finally:
        store.close()


def empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP SCHEMA public CASCADE")
        db.execute("CREATE SCHEMA public")


def with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + "options=" + option.replace(" ", "%20").replace("=", "%3D")


def bench(pg: str, reps: int, appends: int, runs: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    empty(pg)
    targets: dict[str, Callable[[int], str]] = {
        "sqlite": lambda rep: os.path.join(tmp, f"log-{rep}.db"),
        "postgres": lambda rep: pg,
        "postgres_async_commit": lambda rep: with_option(pg, "-c synchronous_commit=off"),
    }
    out: dict[str, Any] = {"reps": reps, "appends_per_rep": appends, "runs_per_rep": runs, "server": redact(pg)}
    rates: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    for name, target in targets.items():  # warm up: imports, the schema, the server's caches
        pipeline_seconds(target(-1), 2, f"warm-{name}")
    for rep in range(reps):
        for name, target in targets.items():
            for n in CONCURRENCY:
                rates.setdefault(f"{name}_{n}_runs", []).append(
                    store_append_rate(target(rep), n, appends // n, f"{name}-{n}-{rep}"))
            seconds = pipeline_seconds(target(rep), runs, f"{name}-{rep}")
            steps.setdefault(name, []).append(seconds / runs / STEPS * 1e6)
    for key, values in rates.items():
        out[f"append_{key}_events_per_s"] = median(values)
    for name, values in steps.items():
        out[f"pipeline_{name}_us_per_step"] = median(values)
    for name in targets:
        if name == "sqlite":
            continue
        for n in CONCURRENCY:
            out[f"append_{name}_{n}_runs_to_sqlite"] = median(
                [p / s for p, s in zip(rates[f"{name}_{n}_runs"], rates[f"sqlite_{n}_runs"])])
        out[f"pipeline_{name}_to_sqlite"] = median([p / s for p, s in zip(steps[name], steps["sqlite"])])
    return out


def durable(cluster: Any) -> None:
    """Start the tests' throwaway cluster again with the server's default durability (the
    tests turn fsync off), on the same port."""
    pg_ctl = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.dir / "data")]
    cluster._run(*pg_ctl, "-m", "fast", "-w", "stop")
    cluster._run(*pg_ctl, "-l", str(cluster.dir / "server.log"), "-w", "-t", "60", "-o",
                 f"-c unix_socket_directories={cluster.dir} -c listen_addresses=127.0.0.1 -p {cluster.port}",
                 "start", timeout=90)
    with cluster.admin() as db:
        settings = [db.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "synchronous_commit")]
    assert settings == ["on", "on"], settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__.split("\n")[0])
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL database for the benchmark only (emptied first); "
                        "default: a throwaway local cluster")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--appends", type=int, default=1600, help="events appended per case and repetition")
    parser.add_argument("--runs", type=int, default=20, help="whole runs per case and repetition")
    args = parser.parse_args()
    cluster = None
    pg = args.pg
    if pg is None:
        from tests.postgres import Cluster

        cluster = Cluster().start()
        pg = cluster.url(cluster.database())
        durable(cluster)
    try:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        result = bench(pg, args.reps, args.appends, args.runs)
        result |= {"date": started, "load_average_1min_at_start": round(load, 1)}
        print(json.dumps(result, indent=2))
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
