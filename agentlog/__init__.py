"""agentlog: multi-agent LLM pipelines as actors whose every step is an event in a durable log.

The names here are the public API; the modules behind them are private to the package.
"""

from .actors import RunHandle, agent_configs, run, start_run
from .events import AgentConfig, Event, Findings, Review
from .models import Endpoint, Gateway, RetryPolicy
from .replay import Overrides, RunView, VerifyResult, build_view, fork, resume, start_rereview, verify
from .runconfig import RunConfig, load_run_config
from .store import AsyncSQLiteStore, ConcurrencyError, RunNotFound, RunSummary, SQLiteStore, StoredEvent
from .tools import Tool, ToolRegistry

__version__ = "0.1.0"

__all__ = [
    "AgentConfig", "AsyncSQLiteStore", "ConcurrencyError", "Endpoint", "Event", "Findings", "Gateway",
    "Overrides", "RetryPolicy", "Review", "RunConfig", "RunHandle", "RunNotFound", "RunSummary", "RunView",
    "SQLiteStore", "StoredEvent", "Tool", "ToolRegistry", "VerifyResult", "agent_configs", "build_view",
    "fork", "load_run_config", "resume", "run", "start_rereview", "start_run", "verify",
]
