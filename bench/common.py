"""Shared pieces of the benchmarks: timing, the instant model, sample events, machine facts."""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from agentlog.events import (
    AreaFacts,
    DraftReady,
    Event,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallRequested,
    Review,
    ReviewScored,
    RunFinished,
    RunStarted,
    Usage,
    request_hash,
)
from agentlog.models import Completion, Gateway

# --- timing ------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by ``fn()``, with the collector out of the way."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(reps: int, **cases: Callable[[], Any]) -> dict[str, list[float]]:
    """Run every case once per repetition, in turn, so noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    return times


# --- an instant model in-process -------------------------------------------------


_FINDINGS = Findings(
    key_areas=["core concepts", "how it works", "trade-offs"],
    facts=[AreaFacts(area=a, facts=[f"a fact about {a}.", f"another fact about {a}."])
           for a in ("core concepts", "how it works", "trade-offs")],
    misconceptions=["a common misconception."],
    sources=["https://example.org/source"],
)
_REVIEW = Review(score=6, approved=False, issues=["could be more specific."], missed_topics=["history"],
                 suggestions=["add an example."], summary="decent, not there yet.")
_DRAFT = "# Title\n\n" + "\n\n".join(f"## {a}\n\nA paragraph about {a}. " * 3 for a in _FINDINGS.key_areas) + "\n"

ANSWERS = {
    "Findings": msgspec.json.encode(_FINDINGS).decode(),
    "Review": msgspec.json.encode(_REVIEW).decode(),
    None: _DRAFT,
}


def instant_answer(request: dict[str, Any]) -> str:
    fmt = request.get("response_format")
    return ANSWERS[fmt["json_schema"]["name"] if fmt else None]


class InstantGateway(Gateway):
    """A model that answers at once with fixed, schema-valid outputs (reviews always score 6)."""

    def complete(self, request: dict[str, Any], on_failure: Any = None, **context: Any) -> Completion:
        return Completion(content=instant_answer(request), tool_calls=[], prompt_tokens=100,
                          completion_tokens=50, latency_ms=0.0, model=request["model"])


# --- sample events ---------------------------------------------------------------


def sample_run_events(task: str = "the benchmark task") -> list[Event]:
    """The 17 events of a research -> 2x(write, review) run, as the content pipeline writes them."""
    from agentlog.actors import agent_configs

    agents = agent_configs("bench-model")
    request = {"model": "bench-model", "messages": [
        {"role": "system", "content": "You are a meticulous research analyst. " * 5},
        {"role": "user", "content": f"Task: {task}\n\n" + "x" * 900}], "temperature": 0.2}
    h = request_hash(request)
    out: list[Event] = [RunStarted(task=task, pipeline="content", agents=agents, max_iterations=2, threshold=9)]

    def call(step: str, agent: str, content: str) -> None:
        out.append(LLMCallRequested(call_id=f"{step}/1", agent=agent, step=step, attempt=1, request=request,
                                    request_hash=h))
        out.append(LLMCallAnswered(call_id=f"{step}/1", agent=agent, request_hash=h, content=content,
                                   usage=Usage(100, 50, 150), latency_ms=1234.5, model="bench-model"))

    call("research", "researcher", ANSWERS["Findings"])
    out.append(FindingsReady(findings=_FINDINGS, call_id="research/1"))
    for i in (1, 2):
        call(f"write-{i}", "writer", _DRAFT)
        out.append(DraftReady(iteration=i, draft=_DRAFT, call_id=f"write-{i}/1"))
        call(f"review-{i}", "reviewer", ANSWERS["Review"])
        out.append(ReviewScored(iteration=i, review=_REVIEW, call_id=f"review-{i}/1"))
    out.append(RunFinished(reason="score_plateau", iterations=2, score=6))
    return out


# --- machine ------------------------------------------------------------------------


def append_rate(store: Any, runs: int, per_run: int, tag: str) -> float:
    """Events per second appended to ``store`` by ``runs`` threads, each its own run, one
    event per ``append`` (as an orchestrator does), cycling through a real run's events."""
    events = sample_run_events()
    barrier = threading.Barrier(runs + 1)

    def writer(n: int) -> None:
        run_id = f"{tag}-{n:04d}"
        barrier.wait()
        for seq in range(per_run):
            store.append(run_id, [events[seq % len(events)]], seq)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(runs)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return runs * per_run / (time.perf_counter() - start)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "msgspec": version("msgspec"),
        "pykka": version("pykka"),
        "openai": version("openai"),
        "os": platform.platform(),
    }


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def openai_env(base_url: str) -> Iterator[None]:
    """``OPENAI_BASE_URL`` set to ``base_url`` (and a key that is not one) while the block runs,
    as a user's environment points runs at a server; the variables as they were afterwards."""
    names = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "sk-bench-not-a-key"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
