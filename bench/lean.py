"""7. The lean log: bytes per run against the output it holds, forks that share, and
replay/resume beside an older release.

Each measurement runs in a child process (``bench/lean_worker.py``) against this
checkout, and, with ``--before DIR`` (a checkout of an older release, e.g. made with
``git worktree add DIR <commit>``), against that one too, interleaved, so the two
figures come from the same minutes of the same machine::

    python -m bench.lean [--quick] [--before DIR] [--cpu]
    python -m bench --only lean          # this checkout only

- size: standard runs (5 calls, 17 events) through ``agentlog.actors.run`` against an
  instant model whose answers differ from run to run (text from a 3,000-word vocabulary,
  seeded by the prompt); log bytes (pages after a WAL checkpoint, less the empty log's)
  per run against the model output bytes per run.
- fork: a 23-event run (3 iterations) forked at event 10, 100 times, as ``fork`` appends
  it (the copied prefix, then ``RunForked``); the same 100 ``RunForked`` events alone in
  another log give "their own events".
- replay: 1,000 stored standard runs (each its own text) read and folded from a freshly
  opened store; resume: a 100,000-event run read, folded and decided.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "lean_worker.py"


def measure(checkout: Path, *args: object) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, str(WORKER), *map(str, args)], env=env, cwd=checkout,
                         capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(out.stdout)


def compare(before: Path | None, reps: int, *args: object) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
    for _ in range(reps):
        if before is not None:
            results["before"].append(measure(before, *args))
        results["after"].append(measure(ROOT, *args))
    return results


def bench(quick: bool, before: Path | None = None) -> dict[str, Any]:
    runs, replay_runs, length, reps = (30, 300, 20_000, 1) if quick else (100, 1000, 100_000, 3)
    size = compare(before, 1, "size", runs)
    fork = compare(before, 1, "fork", 100)
    replay = compare(before, reps, "replay", replay_runs, 3)
    resume = compare(before, reps, "resume", length, 3)
    codec = measure(ROOT, "codec", 20 if quick else 50)

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        return statistics.median(r[key] for r in rows) if rows else None

    after_size, after_fork = size["after"][0], fork["after"][0]
    result = {
        "size": size, "fork": fork, "replay": replay, "resume": resume, "codec": codec,
        "bytes_ratio": after_size["ratio"],
        "fork_added_bytes": after_fork["added_per_fork"],
        "forks_ratio": after_fork["ratio_to_run_plus_own"],
        "replay_s": {"after": med(replay["after"], "seconds"), "before": med(replay["before"], "seconds")},
        "resume_s": {"after": med(resume["after"], "seconds"), "before": med(resume["before"], "seconds")},
        "goal": "log <= 1.3x output; fork adds <= 2 KB; 100 forks <= 1.3x (run + own events); "
                "replay and resume no slower than before",
    }
    result["met"] = (result["bytes_ratio"] <= 1.3 and result["fork_added_bytes"] <= 2048
                     and result["forks_ratio"] <= 1.3)
    return result


def table(r: dict[str, Any]) -> str:
    s, f = r["size"], r["fork"]
    lines = ["| | before | after |", "|---|---|---|"]

    def cell(rows: list[dict[str, Any]], fmt) -> str:
        return fmt(rows[0]) if rows else "-"

    lines.append("| log bytes per standard run | " + cell(s["before"], lambda x: f"{x['log_bytes_per_run']:,.0f}")
                 + " | " + cell(s["after"], lambda x: f"{x['log_bytes_per_run']:,.0f}") + " |")
    lines.append("| model output per run | " + cell(s["before"], lambda x: f"{x['output_bytes_per_run']:,.0f}")
                 + " | " + cell(s["after"], lambda x: f"{x['output_bytes_per_run']:,.0f}") + " |")
    lines.append("| ratio (goal <= 1.3) | " + cell(s["before"], lambda x: f"{x['ratio']:.2f}x")
                 + " | " + cell(s["after"], lambda x: f"{x['ratio']:.2f}x") + " |")
    lines.append("| fork at event 10: bytes beyond its own events (goal <= 2,048) | "
                 + cell(f["before"], lambda x: f"{x['added_per_fork']:,.0f}")
                 + " | " + cell(f["after"], lambda x: f"{x['added_per_fork']:,.0f}") + " |")
    lines.append("| 100 forks / (one run + their own events) (goal <= 1.3) | "
                 + cell(f["before"], lambda x: f"{x['ratio_to_run_plus_own']:.2f}x")
                 + " | " + cell(f["after"], lambda x: f"{x['ratio_to_run_plus_own']:.2f}x") + " |")
    for name, key in (("replay", "replay_s"), ("resume", "resume_s")):
        b, a = r[key]["before"], r[key]["after"]
        runs = r[name]["after"][0].get("runs") or r[name]["after"][0].get("events")
        lines.append(f"| {name} ({runs:,} {'runs' if name == 'replay' else 'events'}), median s | "
                     + (f"{b:.3f}" if b is not None else "-") + f" | {a:.3f}"
                     + (f" ({a / b:.2f}x)" if b else "") + " |")
    c = r["codec"]
    lines += ["", f"Codec, over the stored text of {c['runs']} runs ({c['raw_bytes_per_run']:,.0f} bytes per run in "
              f"{c['chunks_per_run']:.1f} chunks, {c['packs_per_run']:.1f} packs):", "",
              "| codec | per chunk: stored/raw | decompress us/run | per pack: stored/raw | decompress us/run |",
              "|---|---|---|---|---|"]
    for name in ("zlib-1", "zlib-6", "zlib-9", "bz2-9", "lzma", "libdeflate-6", "libdeflate-10", "libdeflate-12"):
        if f"chunk/{name}" not in c:
            continue
        a, b = c[f"chunk/{name}"], c[f"pack/{name}"]
        lines.append(f"| {name} | {a['ratio']:.2f} | {a['decompress_us_per_run']:,.0f} | {b['ratio']:.2f} | "
                     f"{b['decompress_us_per_run']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lean", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", type=Path, help="a checkout of an older release to measure beside this one")
    parser.add_argument("--cpu", action="store_true",
                        help="time replay and resume by CPU time (less of the shared machine's noise), not wall time")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["AGENTLOG_BENCH_CLOCK"] = "cpu"  # read by every child (bench/lean_worker.py)
    result = bench(args.quick, args.before)
    print(table(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("size", "fork", "replay", "resume", "codec")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
