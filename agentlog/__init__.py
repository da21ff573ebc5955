"""agentlog: multi-agent LLM pipelines as actors whose every step is an event in a durable log.

The names here are the public API; the modules behind them are private to the package.
They are imported on first use, so ``import agentlog.store`` does not pull in the model
client and the actors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "agentlog.actors": ("AgentDied", "Budget", "Piece", "RunAborted", "RunHandedBack", "RunHandle", "RunStopped",
                        "SharedBudget", "agent_configs", "enqueue_run", "run", "start_run"),
    "agentlog.events": ("AgentConfig", "Event", "Findings", "Review", "SweepSpec", "SweepVariant"),
    "agentlog.models": ("CallContext", "Completion", "Endpoint", "FunctionModel", "Gateway", "Model", "ModelRequest",
                        "ModelUnavailable", "Price", "PriceTable", "RetryPolicy", "ScriptedModel", "UnscriptedCall"),
    "agentlog.replay": ("NotWaiting", "Overrides", "RunCost", "RunView", "VerifyResult", "build_view", "decide_run",
                        "enqueue_fork", "enqueue_rereview", "fork", "resume", "run_cost", "start_rereview", "verify"),
    "agentlog.replay.sweep": ("list_sweeps", "load_comparison", "plan_sweep", "run_sweep"),
    "agentlog.runconfig": ("RunConfig", "load_run_config"),
    "agentlog.store": ("AsyncSQLiteStore", "ConcurrencyError", "DamagedEvent", "LeaseHeld", "LeaseLost",
                       "PostgresStore", "RunNotFound", "RunSummary", "SQLiteStore", "Store", "StoredEvent",
                       "copy_log", "follow", "open_store"),
    "agentlog.tools": ("Tool", "ToolRegistry"),
    "agentlog.worker": ("Worker", "WorkerStats"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and editors
    from .actors import (AgentDied, Budget, Piece, RunAborted, RunHandedBack, RunHandle, RunStopped, SharedBudget,
                         agent_configs, enqueue_run, run, start_run)
    from .events import AgentConfig, Event, Findings, Review, SweepSpec, SweepVariant
    from .models import (
        CallContext,
        Completion,
        Endpoint,
        FunctionModel,
        Gateway,
        Model,
        ModelRequest,
        ModelUnavailable,
        Price,
        PriceTable,
        RetryPolicy,
        ScriptedModel,
        UnscriptedCall,
    )
    from .replay import (NotWaiting, Overrides, RunCost, RunView, VerifyResult, build_view, decide_run,
                         enqueue_fork, enqueue_rereview, fork, resume, run_cost, start_rereview, verify)
    from .replay.sweep import list_sweeps, load_comparison, plan_sweep, run_sweep
    from .runconfig import RunConfig, load_run_config
    from .store import (
        AsyncSQLiteStore,
        ConcurrencyError,
        DamagedEvent,
        LeaseHeld,
        LeaseLost,
        PostgresStore,
        RunNotFound,
        RunSummary,
        SQLiteStore,
        Store,
        StoredEvent,
        copy_log,
        follow,
        open_store,
    )
    from .tools import Tool, ToolRegistry
    from .worker import Worker, WorkerStats
