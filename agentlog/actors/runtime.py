"""Starting and driving runs: the agents, the orchestrator, and waiting for the outcome."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pykka

from agentlog.events import AgentConfig, Event, RunQueued, RunStarted
from agentlog.models import Endpoint, Gateway, ModelLike, named_models, parse_model
from agentlog.pipelines import get_pipeline
from agentlog.store import Lease, RunSummary, Store, StoredEvent
from agentlog.tools import Tool, ToolRegistry, default_registry

from .budget import Budget, validate_budget
from .lease import HeldLease, acquire
from .lease import lease_seconds as lease_ttl
from .live import Watcher
from .messages import HandBack
from .orchestrator import Observer, Orchestrator, Outcome, opening_intents
from .sharing import AGENTS, GATEWAYS

# The counter researcher extracts and organises like the researcher: the same low temperature.
DEFAULT_TEMPERATURES = {"researcher": 0.2, "counter_researcher": 0.2, "writer": 0.6, "reviewer": 0.1}
DEFAULT_MAX_ITERATIONS = 3
DEFAULT_THRESHOLD = 8


def new_run_id() -> str:
    """16 hex digits, 64 random bits from the system (as ``uuid4`` draws its own, at a quarter of its cost)."""
    return os.urandom(8).hex()


# A small local model rambles to the end of its context; bound each answer (recorded in the run).
LOCAL_MAX_TOKENS = 600


def agent_configs(
    model: str, overrides: Mapping[str, str] | None = None, temperatures: Mapping[str, float] | None = None,
    roles: tuple[str, ...] = ("researcher", "writer", "reviewer"), max_tokens: int | None = None,
) -> dict[str, AgentConfig]:
    """Per-role configs: one default model, per-agent model and temperature overrides."""
    overrides, temperatures = overrides or {}, temperatures or {}
    configs = {}
    for role in roles:
        role_model = overrides.get(role, model)
        limit = max_tokens
        if limit is None and parse_model(role_model).provider == "local":
            limit = LOCAL_MAX_TOKENS
        configs[role] = AgentConfig(
            model=role_model,
            temperature=temperatures.get(role, DEFAULT_TEMPERATURES.get(role, 0.2)),
            max_tokens=limit,
        )
    return configs


class RunHandle:
    """A run in progress. ``wait()`` returns its index row (status ``finished``, ``failed``, or
    ``waiting`` for a person's decision), or raises what stopped it."""

    def __init__(self, store: Store, run_id: str, orchestrator: pykka.ActorRef, done: Outcome,
                 release: Callable[[], None]):
        self.store, self.run_id = store, run_id
        self._orchestrator, self._done = orchestrator, done
        self._release, self._released = release, threading.Lock()

    def wait(self, timeout: float | None = None) -> RunSummary:
        try:
            self._done.get(timeout=timeout)
        finally:
            if self._done.settled():
                self.stop(grace=5.0)
        return self.store.get_run(self.run_id)

    def ended(self) -> bool:
        """Whether the run has stopped in this process (``wait()`` then returns at once)."""
        return self._done.settled()

    def hand_back(self) -> None:
        """Ask the run to stop at its next step boundary: the answers of calls in flight are
        recorded, no new call is sent, then its lease is released. ``wait()`` then raises
        ``RunHandedBack`` (or returns, if the run ended first)."""
        try:
            self._orchestrator.tell(HandBack())
        except pykka.ActorDeadError:
            pass  # it ended meanwhile

    def stop(self, grace: float = 0.0) -> None:
        """Stop the run's orchestrator, waiting for it up to ``grace`` seconds (at least 5), and
        let go of the agents and gateway it shared with other runs.

        The log stays consistent; ``resume`` continues the run. A call the run has out ends
        on its own, and its answer is not recorded.
        """
        # The orchestrator never waits on the network: once it has stopped, the run's lease
        # is released and its future settled, so the run can be resumed at once.
        try:
            if self._orchestrator.is_alive():  # a run that ended stopped its orchestrator itself
                self._orchestrator.stop(block=True, timeout=max(grace, 5.0))
        except pykka.Timeout:
            pass
        if self._released.acquire(blocking=False):
            self._release()


Models = ModelLike | Mapping[str, ModelLike] | None


def register_models(gateway: Gateway, models: Models) -> Gateway:
    """``gateway`` answering for the in-process ``models`` too.

    Called before a run's first event is written, so a name that already stands for
    another model in ``gateway`` (``ValueError``) leaves nothing in the log.
    """
    for name, model in named_models(models).items():
        gateway.register(name, model)
    return gateway


def drive(
    store: Store, run_id: str, *, gateway: Gateway | None = None, observer: Observer | None = None,
    reuse: bool = True, tools: ToolRegistry | None = None, lease: Lease | None = None,
    lease_seconds: float | None = None, watcher: Watcher | None = None, models: Models = None,
    budget: Budget | None = None, log: Sequence[StoredEvent] | None = None,
) -> RunHandle:
    """Start the actors of an existing run; they continue from its last event.

    ``tools`` holds the callables of the tools the run offers (default: ``default_registry``);
    ``budget`` checks the run's spending limits (default: by the default price table).
    The process drives the run under its lease (``lease``, or one acquired here: raises
    ``LeaseHeld`` while another process drives it), renewed by heartbeat every third of
    ``lease_seconds`` (default: ``$AGENTLOG_LEASE_SECONDS``, else 30) and released when the run ends.
    ``watcher`` is told each piece of the answers as they are streamed.
    ``models`` are in-process models (one, under its own name, or a mapping of names to
    models), registered with the gateway.
    ``log``: the run's whole log, when the caller has just read it under ``lease`` (a worker
    reads the runs it claimed in one go): the run is then not read again. Only with ``lease``:
    a log read before the lease was taken may miss what another process appended meanwhile.
    The run's agents are the process's agent actors for ``gateway`` (``sharing.py``), shared
    with every run that uses it. Without ``gateway``, the run uses the process's gateway for
    the endpoint of ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` (a gateway of its own when given
    ``models``).
    """
    return _drive(store, run_id, None, gateway=gateway, observer=observer, reuse=reuse, tools=tools, lease=lease,
                  lease_seconds=lease_seconds, watcher=watcher, models=models, budget=budget, log=log)


def _drive(
    store: Store, run_id: str, written: Sequence[Event] | None, *, gateway: Gateway | None, observer: Observer | None,
    reuse: bool = True, tools: ToolRegistry | None, lease: Lease | None, lease_seconds: float | None,
    watcher: Watcher | None, models: Models, budget: Budget | None, log: Sequence[StoredEvent] | None = None,
) -> RunHandle:
    """``drive``; ``written``: the run's events, when the caller has just written all of them
    (a new run): the run is then not read back."""
    if log is not None and lease is None:
        raise ValueError("drive(log=...) takes the lease the log was read under (lease=...)")
    ttl = lease_ttl(lease_seconds)
    given = gateway
    if written is not None:
        first = written[:1]
    else:
        first = [s.event for s in (log[:1] if log is not None else store.read(run_id, 0, 1))]
    if not first or not isinstance(first[0], RunStarted):
        raise ValueError(f"run {run_id} has no RunStarted event")
    started = first[0]
    pipeline = get_pipeline(started.pipeline)
    held = HeldLease(store, lease or acquire(store, run_id, ttl), ttl)
    named = named_models(models)
    # A run given no gateway shares the process's one for its endpoint, and so its agents;
    # one given in-process models has its own (their names are the run's to choose).
    shared = gateway is None and not named
    if gateway is None:
        gateway = GATEWAYS.acquire(Endpoint.from_env()) if shared else Gateway()
    roles = list(started.agents or pipeline.roles)  # a run's agents are fixed by its RunStarted
    agents: dict[str, pykka.ActorRef] = {}

    def release() -> None:
        if agents:
            AGENTS.release(roles, gateway)
        if shared:
            GATEWAYS.release(gateway)
        elif given is None:
            gateway.close()

    try:
        register_models(gateway, named)
        agents.update(AGENTS.acquire(roles, gateway))
        done = Outcome()
        orchestrator = Orchestrator.start(store, run_id, pipeline, agents, done, observer=observer, reuse=reuse,
                                          tools=tools, lease=held, watcher=watcher, budget=budget, written=written,
                                          stored=log)
    except BaseException:
        held.release()
        release()
        raise
    return RunHandle(store, run_id, orchestrator, done, release)


def start_run(
    store: Store,
    task: str,
    *,
    agents: dict[str, AgentConfig] | None = None,
    models: Models = None,
    pipeline: str = "content",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    threshold: int = DEFAULT_THRESHOLD,
    gateway: Gateway | None = None,
    observer: Observer | None = None,
    run_id: str | None = None,
    research: Literal["single", "parallel"] = "single",
    tools: Mapping[str, Sequence[str | Tool]] | None = None,
    registry: ToolRegistry | None = None,
    approval: Literal["never", "final", "each-review"] = "never",
    lease_seconds: float | None = None,
    watcher: Watcher | None = None,
    budget: Budget | None = None,
    extra_events: Sequence[Event] = (),
    **options: Any,
) -> RunHandle:
    """Record a new run's ``RunStarted`` and start driving it.

    ``research="parallel"`` runs a facts and a counter-arguments researcher at once (a
    ``counter_researcher`` agent is added with the researcher's model if ``agents`` has
    none). ``approval`` says where a person decides on the draft (``final``, ``each-review``,
    or ``never``); a run that reaches such a point is left waiting. ``tools`` maps an agent to
    the tools it is offered: names in ``registry`` (default: ``default_registry``) or ``Tool``
    objects, which are added to the run's registry. ``models`` are in-process models (see
    ``drive``); given one model and no ``agents``, every agent uses it. ``options`` are further
    ``RunStarted`` fields (``budget_usd``, ``budget_tokens``, ``sample``); ``extra_events`` are
    appended with ``RunStarted``, in the same transaction.
    """
    ttl = lease_ttl(lease_seconds)
    run_id, started, registry = _new_run(task, agents, models, pipeline, max_iterations, threshold, run_id,
                                         research, tools, registry, approval, options)
    if gateway is not None:  # a clash of model names is refused before the run's first event is written
        register_models(gateway, models)
    written = [started, *extra_events]
    # The run's first events, the intents of its first calls and its lease, in one transaction.
    written += opening_intents(get_pipeline(started.pipeline), written)
    lease = acquire(store, run_id, ttl, first=written)
    try:
        # The run is new: it holds what was just written, so it is not read back.
        return _drive(store, run_id, written, gateway=gateway, observer=observer, tools=registry,
                      lease=lease, lease_seconds=ttl, watcher=watcher, models=models, budget=budget)
    except BaseException:
        with contextlib.suppress(Exception):  # what stopped the start is the error to report
            store.release_lease(lease)  # a no-op if the start gave it up already
        raise


def enqueue_run(
    store: Store,
    task: str,
    *,
    agents: dict[str, AgentConfig] | None = None,
    models: Models = None,
    pipeline: str = "content",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    threshold: int = DEFAULT_THRESHOLD,
    run_id: str | None = None,
    research: Literal["single", "parallel"] = "single",
    tools: Mapping[str, Sequence[str]] | None = None,
    registry: ToolRegistry | None = None,
    approval: Literal["never", "final", "each-review"] = "never",
    extra_events: Sequence[Event] = (),
    **options: Any,
) -> str:
    """Record a new run, as ``start_run`` would, queued for a worker (``agentlog worker``)
    instead of driven here; return its id. ``RunStarted`` and ``RunQueued`` commit together.

    The worker that claims it needs what the log names but cannot hold: the models' endpoint
    and key, and the callables of the tools it offers.
    """
    run_id, started, _registry = _new_run(task, agents, models, pipeline, max_iterations, threshold, run_id,
                                          research, tools, registry, approval, options)
    store.append(run_id, [started, *extra_events, RunQueued()], 0)
    return run_id


def _new_run(
    task: str, agents: dict[str, AgentConfig] | None, models: Models, pipeline: str, max_iterations: int,
    threshold: int, run_id: str | None, research: str, tools: Mapping[str, Sequence[str | Tool]] | None,
    registry: ToolRegistry | None, approval: str, options: Mapping[str, Any],
) -> tuple[str, RunStarted, ToolRegistry]:
    """A new run's id, its checked ``RunStarted``, and the registry of its tools."""
    if agents is None:
        named = named_models(models)
        if len(named) != 1 or isinstance(models, Mapping):
            raise ValueError("say which model each agent uses: agents=agent_configs(MODEL), or models=ONE_MODEL")
        agents = agent_configs(next(iter(named)))
    validate_run_settings(task, max_iterations, threshold)
    validate_budget(options.get("budget_usd"), options.get("budget_tokens"), options.get("sample"))
    get_pipeline(pipeline)
    if research not in ("single", "parallel"):
        raise ValueError(f"research is 'single' or 'parallel', not {research!r}")
    if approval not in ("never", "final", "each-review"):
        raise ValueError(f"approval is 'never', 'final' or 'each-review', not {approval!r}")
    agents = dict(agents)
    if research == "parallel" and "counter_researcher" not in agents and "researcher" in agents:
        base = agents["researcher"]
        agents["counter_researcher"] = AgentConfig(
            model=base.model, temperature=DEFAULT_TEMPERATURES["counter_researcher"], max_tokens=base.max_tokens)
    specs, registry = resolve_tools(tools or {}, registry, agents)
    started = RunStarted(task=task, pipeline=pipeline, agents=agents, max_iterations=max_iterations,
                         threshold=threshold, research=research, tools=specs, approval=approval,  # type: ignore[arg-type]
                         **options)
    return run_id or new_run_id(), started, registry


def resolve_tools(
    tools: Mapping[str, Sequence[str | Tool]], registry: ToolRegistry | None, agents: Mapping[str, AgentConfig],
) -> tuple[dict[str, list[Any]], ToolRegistry]:
    """The specs to record per agent, and the registry that holds every callable."""
    registry = registry if registry is not None else default_registry
    given = [t for offered in tools.values() for t in offered if isinstance(t, Tool)]
    if given:
        registry = registry.copy()
        for tool in given:
            registry.register(tool)
    specs = {}
    for agent, offered in tools.items():
        if agent not in agents:
            raise ValueError(f"tools for unknown agent {agent!r} (agents: {', '.join(agents)})")
        names = list(dict.fromkeys(t.name if isinstance(t, Tool) else t for t in offered))
        if names:
            specs[agent] = registry.specs(names)
    return specs, registry


def run(store: Store, task: str, **kwargs: Any) -> RunSummary:
    """Run a pipeline to its end and return its index row."""
    return start_run(store, task, **kwargs).wait()


def validate_run_settings(task: str | None, max_iterations: int | None, threshold: int | None) -> None:
    if task is not None and not task.strip():
        raise ValueError("the task is empty: say what the pipeline should write about")
    if max_iterations is not None and not 1 <= max_iterations <= 100:
        raise ValueError(f"max iterations must be between 1 and 100, not {max_iterations}")
    if threshold is not None and not 1 <= threshold <= 10:
        raise ValueError(f"the approval threshold is a score from 1 to 10, not {threshold}")
