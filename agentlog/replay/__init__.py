"""The replay family: replay (view), resume, fork, re-review, verify, and a person's decisions."""

from .approval import NotWaiting, Waiting, decide_run, waiting
from .continuation import APPROVALS, Overrides, ReplayError, fork, resume, start_rereview
from .verify import Divergence, VerifyResult, verify
from .view import RunView, ToolView, build_view

__all__ = [
    "APPROVALS", "Divergence", "NotWaiting", "Overrides", "ReplayError", "RunView", "ToolView", "VerifyResult",
    "Waiting", "build_view", "decide_run", "fork", "resume", "start_rereview", "verify", "waiting",
]
