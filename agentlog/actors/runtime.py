"""Starting and driving runs: the agents, the orchestrator, and waiting for the outcome."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pykka

from agentlog.events import AgentConfig, RunStarted
from agentlog.models import Gateway
from agentlog.pipelines import get_pipeline
from agentlog.store import RunSummary, SQLiteStore

from .agent import AgentActor
from .orchestrator import Observer, Orchestrator

DEFAULT_TEMPERATURES = {"researcher": 0.2, "writer": 0.6, "reviewer": 0.1}
DEFAULT_MAX_ITERATIONS = 3
DEFAULT_THRESHOLD = 8


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def agent_configs(
    model: str, overrides: Mapping[str, str] | None = None, temperatures: Mapping[str, float] | None = None,
    roles: tuple[str, ...] = ("researcher", "writer", "reviewer"),
) -> dict[str, AgentConfig]:
    """Per-role configs: one default model, per-agent model and temperature overrides."""
    overrides, temperatures = overrides or {}, temperatures or {}
    return {
        role: AgentConfig(
            model=overrides.get(role, model),
            temperature=temperatures.get(role, DEFAULT_TEMPERATURES.get(role, 0.2)),
        )
        for role in roles
    }


class RunHandle:
    """A run in progress. ``wait()`` returns its index row, or raises what stopped it."""

    def __init__(self, store: SQLiteStore, run_id: str, orchestrator: pykka.ActorRef,
                 agents: dict[str, pykka.ActorRef], done: pykka.Future, gateway: Gateway, owns_gateway: bool):
        self.store, self.run_id = store, run_id
        self._orchestrator, self._agents, self._done = orchestrator, agents, done
        self._gateway, self._owns_gateway = gateway, owns_gateway

    def wait(self, timeout: float | None = None) -> RunSummary:
        try:
            self._done.get(timeout=timeout)
        finally:
            if self._done_or_failed():
                self.stop()
        return self.store.get_run(self.run_id)

    def _done_or_failed(self) -> bool:
        try:
            self._done.get(timeout=0)
        except pykka.Timeout:
            return False
        except Exception:
            return True
        return True

    def stop(self) -> None:
        """Stop the run's actors. The log stays consistent; ``resume`` continues the run."""
        self._orchestrator.stop(block=False)
        for ref in self._agents.values():
            ref.stop(block=False)
        # Agents may be inside an HTTP call; they stop after it, discarding the answer.
        if self._owns_gateway:
            self._gateway.close()


def drive(
    store: SQLiteStore, run_id: str, *, gateway: Gateway | None = None, observer: Observer | None = None,
    reuse: bool = True,
) -> RunHandle:
    """Start the actors of an existing run; they continue from its last event."""
    first = store.read(run_id, 0, 1)
    if not first or not isinstance(first[0].event, RunStarted):
        raise ValueError(f"run {run_id} has no RunStarted event")
    started = first[0].event
    pipeline = get_pipeline(started.pipeline)
    owns_gateway = gateway is None
    gateway = gateway or Gateway()
    agents = {name: AgentActor.start(name, gateway) for name in pipeline.roles}
    done: pykka.Future = pykka.ThreadingFuture()
    orchestrator = Orchestrator.start(store, run_id, pipeline, agents, done, observer=observer, reuse=reuse)
    return RunHandle(store, run_id, orchestrator, agents, done, gateway, owns_gateway)


def start_run(
    store: SQLiteStore,
    task: str,
    *,
    agents: dict[str, AgentConfig],
    pipeline: str = "content",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    threshold: int = DEFAULT_THRESHOLD,
    gateway: Gateway | None = None,
    observer: Observer | None = None,
    run_id: str | None = None,
    **options: Any,
) -> RunHandle:
    """Record a new run's ``RunStarted`` and start driving it."""
    validate_run_settings(task, max_iterations, threshold)
    get_pipeline(pipeline)
    run_id = run_id or new_run_id()
    store.append(run_id, [RunStarted(task=task, pipeline=pipeline, agents=agents,
                                     max_iterations=max_iterations, threshold=threshold, **options)], 0)
    return drive(store, run_id, gateway=gateway, observer=observer)


def run(store: SQLiteStore, task: str, **kwargs: Any) -> RunSummary:
    """Run a pipeline to its end and return its index row."""
    return start_run(store, task, **kwargs).wait()


def validate_run_settings(task: str | None, max_iterations: int | None, threshold: int | None) -> None:
    if task is not None and not task.strip():
        raise ValueError("the task is empty: say what the pipeline should write about")
    if max_iterations is not None and not 1 <= max_iterations <= 100:
        raise ValueError(f"max iterations must be between 1 and 100, not {max_iterations}")
    if threshold is not None and not 1 <= threshold <= 10:
        raise ValueError(f"the approval threshold is a score from 1 to 10, not {threshold}")
