"""An agent: one pykka actor per role, with its own mailbox, that runs model calls and tools."""

from __future__ import annotations

import logging
from typing import Any

import pykka

from agentlog.models import AttemptFailure, CallFailed, Gateway

from .messages import AttemptFailed, CallCompleted, CallRequest, ToolCompleted, ToolRequest

log = logging.getLogger(__name__)


class AgentActor(pykka.ThreadingActor):
    """Runs each requested call through the gateway and reports every attempt to ``reply_to``;
    runs each requested tool and reports its result (a tool that raises reports the error)."""

    def __init__(self, name: str, gateway: Gateway):
        super().__init__()
        self.name, self.gateway = name, gateway

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ToolRequest):
            result, is_error = message.tool.run(message.arguments)
            message.reply_to.tell(ToolCompleted(message.call_id, message.tool_call_id, message.tool.name,
                                                result, is_error))
            return None
        if not isinstance(message, CallRequest):
            log.warning("agent %s ignored unexpected message %r", self.name, message)
            return None
        reply_to = message.reply_to

        def report(failure: AttemptFailure) -> None:
            reply_to.tell(AttemptFailed(message.call_id, self.name, failure))

        try:
            completion = self.gateway.complete(message.request, report)
        except CallFailed:
            return None  # its last attempt was reported with gave_up=True
        except Exception as exc:  # a bug or a local-model start-up failure: still an event
            report(AttemptFailure(attempt=1, error_kind="internal", message=f"{type(exc).__name__}: {exc}",
                                  retryable=False, gave_up=True))
            return None
        reply_to.tell(CallCompleted(message.call_id, self.name, completion))
        return None
