"""agentlog's benchmark suite: the runtime's own cost, as ratios to plain baselines.

Run ``python -m bench`` (about 5 minutes) or ``python -m bench --quick`` (about a
minute) from the repository root; see docs/benchmarks.md for what each one measures.
"""
