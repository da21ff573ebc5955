"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print a table, save results."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import append, concurrency, lean, pipeline, replay, resume
from .common import machine

BENCHES = {
    "pipeline": pipeline.bench,
    "append": append.bench,
    "replay": replay.bench,
    "concurrency": concurrency.bench,
    "resume": resume.bench,
    "lean": lean.bench,
}

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, goal, met) rows: the lines docs/benchmarks.md quotes."""
    rows = []
    if "pipeline" in results:
        r = results["pipeline"]
        rows.append(("1 pipeline step", f"agentlog {_fmt(r['agentlog_us_per_step'])} us/step "
                     f"({_fmt(r['agentlog_runs_per_s'])} runs/s); baseline {_fmt(r['baseline_us_per_step'])} "
                     f"us/step ({_fmt(r['baseline_runs_per_s'])} runs/s); ratio {r['ratio']:.2f}x",
                     r["goal"], "yes" if r["met"] else "no"))
    if "append" in results:
        r = results["append"]
        rows.append(("2 append", f"store 1/8/64 runs: {_fmt(r['store_1_runs_events_per_s'])} / "
                     f"{_fmt(r['store_8_runs_events_per_s'])} / {_fmt(r['store_64_runs_events_per_s'])} ev/s; "
                     f"raw 1/commit {_fmt(r['raw_1_per_commit_events_per_s'])}, 100/commit "
                     f"{_fmt(r['raw_100_per_commit_events_per_s'])} ev/s; 64 runs = "
                     f"{r['ratio_64_runs_to_raw_batched']:.2f}x raw batched", r["goal"], "yes" if r["met"] else "no"))
    if "replay" in results:
        r = results["replay"]
        rows.append(("3 replay+fold", f"{_fmt(r['replay_events_per_s'])} ev/s (1,000 runs in "
                     f"{r['replay_seconds_for_1000_runs'] * 1e3:.0f} ms); decode-only "
                     f"{_fmt(r['decode_only_events_per_s'])} ev/s; SQL rows only {_fmt(r['sql_rows_per_s'])}/s; "
                     f"ratio {r['ratio_to_decode_only']:.2f}x", r["goal"], "yes" if r["met"] else "no"))
    if "concurrency" in results:
        for r in results["concurrency"]:
            p, s = r["per_run_gateway"], r["shared_gateway"]
            rows.append((f"4 concurrency ({r['server_delay_s'] * 1e3:.0f} ms)",
                         f"{r['runs']} runs: ideal {r['ideal_s']:.2f} s; per-run gateway {p['wall_s']:.2f} s "
                         f"({p['efficiency']:.0%}); shared gateway {s['wall_s']:.2f} s ({s['efficiency']:.0%}); "
                         f"{p['threads_per_run']:.1f} threads, {p['rss_mb_per_run']:.1f} MB per run",
                         r["goal"], "yes" if r["met"] else "no"))
    if "resume" in results:
        r = results["resume"]
        points = ", ".join(f"{x['events']:,}: {x['resume_ms']:.1f} ms ({x['us_per_event']:.1f} us/ev, "
                           f"read {x['read_share']:.0%})" for x in r["rows"])
        rows.append(("5 resume", f"{points}; growth exponent {r['growth_exponent']:.2f} "
                     f"(top decade {r['growth_exponent_top_decade']:.2f})", r["goal"], "yes" if r["met"] else "no"))
    if "lean" in results:
        r = results["lean"]
        rows.append(("7 lean log", f"log {r['bytes_ratio']:.2f}x the output per run; a fork adds "
                     f"{r['fork_added_bytes']:,.0f} bytes beyond its own events; 100 forks "
                     f"{r['forks_ratio']:.2f}x (run + own events); replay 1,000 runs "
                     f"{r['replay_s']['after']:.3f} s; resume 100,000 events {r['resume_s']['after']:.2f} s",
                     r["goal"], "yes" if r["met"] else "no"))
    return rows


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| benchmark | figures (medians) | goal | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: about a minute")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--out", type=Path, help="where to write the JSON results (default bench/results/)")
    args = parser.parse_args(argv)
    facts = machine()
    print(" ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
    results: dict[str, Any] = {}
    for name in args.only or BENCHES:
        start = time.perf_counter()
        print(f"running {name} ...", end=" ", flush=True)
        if name == "concurrency":
            delays = (0.05,) if args.quick else (0.05, 0.5)
            results[name] = [concurrency.bench(args.quick, delay=d) for d in delays]
        else:
            results[name] = BENCHES[name](args.quick)
        print(f"{time.perf_counter() - start:.0f} s", flush=True)
    rows = table(results)
    text = markdown(rows)
    print(text)
    out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": facts, "quick": args.quick, "results": results, "table": text},
                              indent=2))
    out.with_suffix(".md").write_text(text + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
