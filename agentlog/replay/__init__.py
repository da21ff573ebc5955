"""The replay family: replay (view), resume, fork, re-review, verify."""

from .approval import NotWaiting, Waiting, decide_run, waiting
from .continuation import APPROVALS, Overrides, ReplayError, fork, resume, start_rereview
from .verify import Divergence, VerifyResult, verify
from .view import RunView, ToolView, build_view

__all__ = [
    "APPROVALS", "NotWaiting", "Waiting", "decide_run", "waiting", "Divergence", "Overrides", "ReplayError", "RunView", "ToolView", "VerifyResult", "build_view", "fork", "resume",
    "start_rereview", "verify",
]
