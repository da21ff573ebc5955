"""The replay family: replay (view), resume, fork, re-review, verify, and a person's decisions."""

from .approval import NotWaiting, Waiting, decide_run, waiting
from .continuation import (
    APPROVALS,
    Overrides,
    ReplayError,
    enqueue_fork,
    enqueue_rereview,
    fork,
    resume,
    start_rereview,
)
from .cost import RunCost, run_cost
from .verify import Divergence, VerifyResult, verify
from .view import RunView, ToolView, build_view

__all__ = [
    "APPROVALS", "Divergence", "NotWaiting", "Overrides", "ReplayError", "RunCost", "RunView", "ToolView",
    "VerifyResult", "Waiting", "build_view", "decide_run", "enqueue_fork", "enqueue_rereview", "fork", "resume", "run_cost", "start_rereview", "verify",
    "waiting",
]
