"""What a completion gives back, and how a call that gave up is reported."""

from __future__ import annotations

import msgspec


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """A model's answer: its text, the tools it asks for, and what it cost.

    ``tool_calls`` are ``(id, name, arguments as JSON text)``. An in-process model may leave
    ``latency_ms`` at 0 (the gateway measures it) and ``model`` empty (the name it was
    called by is recorded).
    """

    content: str
    tool_calls: list[tuple[str, str, str]] = []
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    model: str = ""


class Delta(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of an answer as it is streamed: new ``text`` (content or tool-call arguments)
    of attempt number ``attempt``; a new attempt starts its answer again."""

    text: str
    attempt: int = 1


class AttemptFailure(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    error_kind: str
    message: str
    retryable: bool
    gave_up: bool


class CallFailed(Exception):
    """A call that will not be retried any more; its last ``AttemptFailure`` says why."""

    def __init__(self, failure: AttemptFailure):
        self.failure = failure
        super().__init__(f"{failure.error_kind}: {failure.message}")


class ModelNotConfigured(Exception):
    """The run names a model that needs an endpoint or key nobody gave."""
