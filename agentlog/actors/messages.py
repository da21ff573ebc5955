"""Messages between the orchestrator and its agents (in memory only; the log holds events)."""

from __future__ import annotations

from typing import Any

import msgspec
import pykka

from agentlog.models import AttemptFailure, CallContext, Completion
from agentlog.tools import Tool


class CallRequest(msgspec.Struct, frozen=True):
    call_id: str
    request: dict[str, Any]
    reply_to: pykka.ActorRef
    live: Any = None  # a LiveAnswer: the call is streamed to it
    context: CallContext = CallContext()  # who asks; beside the request, not in its hash


class AttemptFailed(msgspec.Struct, frozen=True):
    call_id: str
    agent: str
    failure: AttemptFailure


class CallCompleted(msgspec.Struct, frozen=True):
    call_id: str
    agent: str
    completion: Completion


class ToolRequest(msgspec.Struct, frozen=True):
    call_id: str
    tool_call_id: str
    tool: Tool
    arguments: str
    reply_to: pykka.ActorRef


class ToolCompleted(msgspec.Struct, frozen=True):
    call_id: str
    tool_call_id: str
    name: str
    result: str
    is_error: bool


class AgentCrashed(msgspec.Struct, frozen=True):
    """The agent died handling ``call_id``: its run cannot go on in this process."""

    call_id: str
    agent: str
    reason: str


class HandBack(msgspec.Struct, frozen=True):
    """Stop at the next step boundary: record the answers of calls in flight, send nothing
    more, then release the run's lease (a worker shutting down)."""
