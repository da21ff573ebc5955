"""The replay family: replay (view), resume, fork, re-review, verify."""

from .continuation import Overrides, ReplayError, fork, resume, start_rereview
from .verify import Divergence, VerifyResult, verify
from .view import RunView, ToolView, build_view

__all__ = [
    "Divergence", "Overrides", "ReplayError", "RunView", "ToolView", "VerifyResult", "build_view", "fork", "resume",
    "start_rereview", "verify",
]
