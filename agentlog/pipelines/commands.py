"""What a decider asks the orchestrator to do: record an outcome, call a model, or run a tool."""

from __future__ import annotations

from typing import Any

import msgspec

from agentlog.events import Event


class Record(msgspec.Struct, frozen=True):
    """Append this event: an outcome the decider derived from the log alone."""

    event: Event


class CallModel(msgspec.Struct, frozen=True, kw_only=True):
    """Make (or, after a crash, make again) the call ``call_id``; its intent is logged first."""

    call_id: str
    agent: str
    step: str
    attempt: int
    request: dict[str, Any]
    round: int = 0


class InvokeTool(msgspec.Struct, frozen=True, kw_only=True):
    """Run tool call ``tool_call_id`` of the answer to ``call_id`` for ``agent``; logged first."""

    call_id: str
    tool_call_id: str
    name: str
    arguments: str
    agent: str


Command = Record | CallModel | InvokeTool
