"""7. An in-process model costs no more than the built-in offline model.

Three ways to answer the same content-pipeline run (research -> write -> review, until
the offline reviewer approves: 7 LLM steps), all with the offline model's own answers:

- offline:   ``--model offline``, answered inline by the gateway (the reference);
- function:  the same answers from a ``FunctionModel`` (the public in-process path: a
             request object with the call's context, run inline under the default 120 s
             timeout with the watchdog holding its deadline, the answer checked);
- scripted:  a ``ScriptedModel`` whose script is that function (records every call too);
- inline:    the ``FunctionModel`` through ``Gateway(timeout=None)``: the same inline call
             with no deadline to arm.

Whole runs through ``agentlog.run``, one of each case in turn, ``--runs`` times (so load
on this shared machine hits the cases alike). Two figures per case, medians per run: the
wall time, and the CPU time of the process (all its threads: what the run costs, apart
from waiting for a core on a loaded machine); and their ratios to ``offline``. Run from
the repository root::

    python -m bench.inprocess [--runs 300]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from typing import Any

from agentlog import FunctionModel, Gateway, ModelRequest, ScriptedModel, SQLiteStore, agent_configs, run
from agentlog.models import Completion, offline

from .common import median

# How far a ratio of two cases running the same code moved between rounds of this
# benchmark (docs/benchmarks.md, 8): a ratio below it is "no more than" within noise.
NOISE = 1.03


def offline_answer(request: ModelRequest) -> Completion:
    return offline.complete({"model": request.model, "messages": request.messages, "tools": request.tools,
                             "response_format": request.response_format, **request.parameters})


def bench(runs: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    store = SQLiteStore(os.path.join(tmp, "inprocess.db"))
    function = FunctionModel(offline_answer, name="function")
    scripted = ScriptedModel(offline_answer, name="scripted")
    counter = iter(range(10**9))

    def one_run(inline: bool = False, **kwargs: Any) -> Any:
        def go() -> None:
            gateway = Gateway(timeout=None) if inline else None
            summary = run(store, f"the benchmark task {next(counter)}", gateway=gateway, **kwargs)
            assert summary.status == "finished" and summary.last_seq >= 20, summary
            if gateway is not None:
                gateway.close()

        return go

    cases = {
        "offline": one_run(agents=agent_configs("offline")),
        "function": one_run(models=function),
        "scripted": one_run(models=scripted),
        "inline": one_run(inline=True, models=function),
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(20 + runs):  # the first 20 rounds warm up: imports, worker threads, SQLite pages
        for name, go in cases.items():
            gc.collect()
            w, c = time.perf_counter(), time.process_time()
            go()
            if i >= 20:
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    store.close()
    out: dict[str, Any] = {"runs": runs}
    for label, times in (("wall", wall), ("cpu", cpu)):
        per_run = {name: median(t) * 1e3 for name, t in times.items()}
        out[f"{label}_ms_per_run"] = per_run
        out[f"{label}_ratio_to_offline"] = {name: per_run[name] / per_run["offline"] for name in cases}
    out["goal"] = ("CPU per run no more than the offline model's (<= 1.0x, within the few percent the medians "
                   "move by between rounds; inline: no timeout; the others: timeout 120 s)")
    out["met"] = {name: r <= NOISE for name, r in out["cpu_ratio_to_offline"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="runs per case")
    args = parser.parse_args()
    r = bench(args.runs)
    print(f"{r['runs']} runs per case, interleaved; medians per run\n")
    print(f"{'case':<9} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}")
    for name in r["wall_ms_per_run"]:
        wr, cr = r["wall_ratio_to_offline"].get(name, 1.0), r["cpu_ratio_to_offline"].get(name, 1.0)
        print(f"{name:<9} {r['wall_ms_per_run'][name]:8.2f} {wr:6.3f} {r['cpu_ms_per_run'][name]:8.2f} {cr:6.3f}")
    print(f"\ngoal: {r['goal']}: met by {', '.join(n for n, ok in r['met'].items() if ok) or 'none'}")

if __name__ == "__main__":
    main()
