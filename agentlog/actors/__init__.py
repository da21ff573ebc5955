"""Actors: an agent per role with its own mailbox, and one orchestrator per run."""

from .agent import AgentActor
from .errors import AgentDied, RunAborted, RunHandedBack, RunStopped
from .live import LiveAnswer, Piece, Watcher
from .budget import Budget, SharedBudget, Spending, validate_budget
from .orchestrator import Orchestrator
from .runtime import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_TEMPERATURES,
    DEFAULT_THRESHOLD,
    RunHandle,
    agent_configs,
    drive,
    enqueue_run,
    new_run_id,
    resolve_tools,
    run,
    start_run,
    validate_run_settings,
)

__all__ = [
    "DEFAULT_MAX_ITERATIONS", "DEFAULT_TEMPERATURES", "DEFAULT_THRESHOLD", "AgentActor", "AgentDied", "Budget",
    "LiveAnswer", "Orchestrator", "Piece", "RunAborted", "RunHandedBack", "RunHandle", "RunStopped", "SharedBudget",
    "Spending", "Watcher", "agent_configs", "drive", "enqueue_run", "new_run_id", "resolve_tools", "run", "start_run",
    "validate_budget", "validate_run_settings",
]
