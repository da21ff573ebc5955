"""Resume, fork and re-review: new events appended atomically, then the actors take over.

Each starts with one atomic append. For resume it is the gate between concurrent
resumers: exactly one gets its ``RunResumed`` in after the last event, the others get a
``ConcurrencyError`` before they make any call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from agentlog.actors import Budget, RunHandle, Watcher, drive, new_run_id, validate_budget, validate_run_settings
from agentlog.actors.lease import acquire, lease_seconds as lease_ttl
from agentlog.actors.runtime import Models, register_models
from agentlog.actors.orchestrator import Observer
from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    CallRef,
    DraftReady,
    Event,
    FindingsReady,
    RunFinished,
    RunForked,
    RunQueued,
    RunResumed,
    RunStarted,
    SettingsChanged,
)
from agentlog.models import Gateway, ModelLike, model_name, named_models
from agentlog.store import ConcurrencyError, Store
from agentlog.tools import ToolRegistry


APPROVALS = ("never", "final", "each-review")


class ReplayError(ValueError):
    """A replay-family request that cannot be done as asked (a user's mistake)."""


class Overrides(msgspec.Struct, frozen=True, kw_only=True):
    models: dict[str, str] = {}
    temperatures: dict[str, float] = {}
    max_iterations: int | None = None
    threshold: int | None = None
    approval: Literal["never", "final", "each-review"] | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    sample: int | None = None

    def events(self, agents: Mapping[str, AgentConfig]) -> list[Event]:
        """The events that apply these overrides to a run whose agents are ``agents``."""
        for agent in (*self.models, *self.temperatures):
            if agent not in agents:
                raise ReplayError(f"the run has no agent {agent!r} (its agents: {', '.join(agents)})")
        for agent, t in self.temperatures.items():
            if not 0.0 <= t <= 2.0:
                raise ReplayError(f"temperature for {agent} must be between 0 and 2, not {t}")
        validate_run_settings(None, self.max_iterations, self.threshold)
        try:
            validate_budget(self.budget_usd, self.budget_tokens, self.sample)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        events: list[Event] = [
            AgentReconfigured(agent=agent, model=self.models.get(agent), temperature=self.temperatures.get(agent))
            for agent in agents
            if agent in self.models or agent in self.temperatures
        ]
        if self.approval is not None and self.approval not in APPROVALS:
            raise ReplayError(f"approval is one of {', '.join(APPROVALS)}, not {self.approval!r}")
        settings = {k: getattr(self, k) for k in ("max_iterations", "threshold", "approval", "budget_usd",
                                                  "budget_tokens", "sample") if getattr(self, k) is not None}
        if settings:
            events.append(SettingsChanged(**settings))
        return events


def _started(store: Store, run_id: str) -> RunStarted:
    first = store.events(run_id, 0, 1)
    if not first or not isinstance(first[0], RunStarted):
        raise ReplayError(f"run {run_id} has no RunStarted event")
    return first[0]


def _agents_now(events: Sequence[Event]) -> dict[str, AgentConfig]:
    from agentlog.pipelines import ContentPipeline, fold

    return fold(ContentPipeline(), events).agents


def resume(
    store: Store, run_id: str, *, overrides: Overrides = Overrides(), gateway: Gateway | None = None,
    observer: Observer | None = None, tools: ToolRegistry | None = None, lease_seconds: float | None = None,
    watcher: Watcher | None = None, models: Models = None, budget: Budget | None = None,
) -> RunHandle:
    """Continue an unfinished (or failed) run from its last event.

    A run whose agents used in-process models needs them again: pass them as ``models``
    (under the names the run recorded), or name them ``python:MODULE:FACTORY``.

    Tool results already in the run are not asked for again; ``tools`` must hold the
    callables of the tools the run offers, for calls it has not made yet.

    Raises ``ReplayError`` for a finished run, ``LeaseHeld`` while another process drives
    it (its lease is live), ``ConcurrencyError`` if a writer without a lease appended meanwhile.
    The run's lease is taken first, so of two resumers at once exactly one goes on.
    """
    ttl = lease_ttl(lease_seconds)
    if not store.read(run_id, 0, 1):
        raise ReplayError(f"run {run_id} has no events")
    if gateway is not None:
        register_models(gateway, models)
    lease = acquire(store, run_id, ttl)
    try:
        stored = store.read(run_id)
        last = stored[-1]
        if isinstance(last.event, RunFinished):
            raise ReplayError(f"run {run_id} already finished ({last.event.reason}); nothing to resume "
                              f"(fork it to continue with other settings)")
        events = [s.event for s in stored]
        new_events = [RunResumed(previous_seq=last.seq), *overrides.events(_agents_now(events))]
        store.append(run_id, new_events, last.seq, lease=lease)
    except BaseException:
        store.release_lease(lease)
        raise
    return drive(store, run_id, gateway=gateway, observer=observer, tools=tools, lease=lease, lease_seconds=ttl,
                 watcher=watcher, models=models, budget=budget)


def fork(
    store: Store, run_id: str, at_seq: int, *, overrides: Overrides = Overrides(),
    gateway: Gateway | None = None, observer: Observer | None = None, tools: ToolRegistry | None = None,
    lease_seconds: float | None = None,
    watcher: Watcher | None = None, models: Models = None, budget: Budget | None = None,
    extra_events: Sequence[Event] = (),
) -> RunHandle:
    """A new run whose first ``at_seq`` events are run ``run_id``'s, then the overrides, then live.

    ``extra_events`` (a sweep's membership) go in the same transaction as the copy.

    Tool results come from the copied events; a tool call the fork makes that an ancestor
    already made with the same arguments reuses the ancestor's result (the tool does not run).
    """
    lease_ttl(lease_seconds)
    new_id, batch = _fork_batch(store, run_id, at_seq, overrides, extra_events)
    if gateway is not None:  # a clash of model names is refused before the fork's first event is written
        register_models(gateway, models)
    store.append(new_id, batch, 0)
    return drive(store, new_id, gateway=gateway, observer=observer, tools=tools, lease_seconds=lease_seconds,
                 watcher=watcher, models=models, budget=budget)


def enqueue_fork(
    store: Store, run_id: str, at_seq: int, *, overrides: Overrides = Overrides(),
    extra_events: Sequence[Event] = (),
) -> str:
    """The fork ``fork`` would start, queued for a worker instead of driven here; its id."""
    new_id, batch = _fork_batch(store, run_id, at_seq, overrides, extra_events)
    store.append(new_id, [*batch, RunQueued()], 0)
    return new_id


def _fork_batch(
    store: Store, run_id: str, at_seq: int, overrides: Overrides, extra_events: Sequence[Event],
) -> tuple[str, list[Event]]:
    last = store.last_seq(run_id)
    if not 1 <= at_seq <= last:
        raise ReplayError(f"--at must be an event of run {run_id}: 1 to {last}, not {at_seq}")
    copied = store.events(run_id, 0, at_seq)
    batch = [*copied, RunForked(parent_run_id=run_id, parent_seq=at_seq), *overrides.events(_agents_now(copied)),
             *extra_events]
    return new_run_id(), batch


def start_rereview(
    store: Store, run_id: str, model: str | ModelLike, *, temperature: float | None = None,
    gateway: Gateway | None = None, observer: Observer | None = None, lease_seconds: float | None = None,
    models: Models = None,
) -> RunHandle | None:
    """A re-review run scoring every draft of ``run_id`` with ``model``; ``None`` if it has no drafts.

    ``model`` is a model name, or an in-process model (recorded under its name).
    """
    lease_ttl(lease_seconds)
    if not isinstance(model, str):
        models, model = {**named_models(models), model_name(model): model}, model_name(model)
    batch = _rereview_batch(store, run_id, model, temperature)
    if batch is None:
        return None
    if gateway is not None:
        register_models(gateway, models)
    new_id = new_run_id()
    store.append(new_id, batch, 0)
    return drive(store, new_id, gateway=gateway, observer=observer, lease_seconds=lease_seconds, models=models)


def enqueue_rereview(store: Store, run_id: str, model: str, *, temperature: float | None = None) -> str | None:
    """The re-review ``start_rereview`` would start, queued for a worker; its id (``None``: no drafts)."""
    batch = _rereview_batch(store, run_id, model, temperature)
    if batch is None:
        return None
    new_id = new_run_id()
    store.append(new_id, [*batch, RunQueued()], 0)
    return new_id


def _rereview_batch(store: Store, run_id: str, model: str, temperature: float | None) -> list[Event] | None:
    started = _started(store, run_id)
    stored = store.read(run_id)
    findings = next((s.event for s in stored if isinstance(s.event, FindingsReady)), None)
    drafts = [s for s in stored if isinstance(s.event, DraftReady)]
    if findings is None or not drafts:
        return None
    reviewer = _agents_now([s.event for s in stored]).get("reviewer") or AgentConfig(model=model, temperature=0.1)
    config = AgentConfig(model=model, temperature=reviewer.temperature if temperature is None else temperature,
                         system_prompt=reviewer.system_prompt, max_tokens=reviewer.max_tokens)
    return [
        RunStarted(task=started.task, pipeline="rereview", agents={"reviewer": config},
                   max_iterations=len(drafts), threshold=started.threshold, parent_run_id=run_id),
        findings,
        *(
            DraftReady(iteration=i, draft=s.event.draft, call_id=s.event.call_id,
                       source=CallRef(run_id=run_id, seq=s.seq, call_id=s.event.call_id))
            for i, s in enumerate(drafts, start=1)
        ),
    ]


__all__ = ["ConcurrencyError", "Overrides", "ReplayError", "enqueue_fork", "enqueue_rereview", "fork", "resume",
           "start_rereview"]
