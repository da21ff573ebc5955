"""The scripted test double: answers by agent and step, or by a function, and records every call.

The way to unit-test a pipeline, its prompts and its failure handling without a network::

    model = ScriptedModel({
        "researcher": Findings(...),                      # every call of the researcher
        "writer": ["# Draft 1\n...", "# Draft 2\n..."],   # one answer per call, in order
        "reviewer": {"review-1": Review(score=6, ...), "review-2": Review(score=9, ...)},  # by step
    })
    summary = agentlog.run(store, "task", models=model)
    assert model.call_count == 5 and model.calls_for("writer")[1].step == "write-2"
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from .inprocess import ModelRequest
from .types import Completion


class UnscriptedCall(Exception):
    """The script has no answer for this call (it fails the call, and so the run, as an event)."""


class ScriptedModel:
    """A model that answers from a script and records each ``ModelRequest`` it is given.

    ``script`` maps an agent to its answer for every call, to a list of answers (one per
    call, in order), or to a mapping of steps (``research``, ``write-2``, ``review-1``; ``*``
    for any other step) to an answer or a list. Or ``script`` is a function of the request.
    An answer is a ``str`` (the content), a ``Completion``, a msgspec struct such as
    ``Findings`` or ``Review`` (sent as its JSON), an exception instance (raised: use
    ``ModelUnavailable`` for a transient failure that is retried), or a function of the
    request returning one of those. ``default`` answers calls the script does not cover;
    without it such a call raises ``UnscriptedCall``.
    """

    def __init__(self, script: Mapping[str, Any] | Callable[[ModelRequest], Any] | None = None, *,
                 name: str = "scripted", default: Any = None):
        if script is not None and not callable(script) and not isinstance(script, Mapping):
            raise TypeError(f"a script is a mapping of agents to answers or a function, not {type(script).__name__}")
        self.name = name
        self.script = script if script is not None else {}
        self.default = default
        self.calls: list[ModelRequest] = []
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str | None], list[Any]] = {}

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def calls_for(self, agent: str | None = None, step: str | None = None) -> list[ModelRequest]:
        """The recorded requests of ``agent`` (and ``step``), in the order they came."""
        with self._lock:
            return [c for c in self.calls
                    if (agent is None or c.agent == agent) and (step is None or c.step == step)]

    def complete(self, request: ModelRequest) -> Completion:
        with self._lock:
            self.calls.append(request)
            answer = self._pick(request)
        if callable(answer) and not isinstance(answer, (msgspec.Struct, BaseException, type)):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Completion):
            return answer
        if isinstance(answer, msgspec.Struct):
            return Completion(content=msgspec.json.encode(answer).decode())
        if isinstance(answer, str):
            return Completion(content=answer)
        return answer  # the gateway says what is wrong with it

    def _pick(self, request: ModelRequest) -> Any:
        script = self.script
        if callable(script) and not isinstance(script, Mapping):
            return script
        entry = script.get(request.agent, _MISSING)
        key: tuple[str, str | None] = (request.agent, None)
        if isinstance(entry, Mapping):
            key = (request.agent, request.step)
            entry = entry.get(request.step, entry.get("*", _MISSING))
        if isinstance(entry, Sequence) and not isinstance(entry, str):
            queue = self._queues.setdefault(key, list(entry))
            if queue:
                return queue.pop(0)
            entry = _MISSING
        if entry is not _MISSING:
            return entry
        if self.default is not None:
            return self.default
        where = f"{request.agent or 'an unnamed agent'} at step {request.step or '?'} (call {request.call_id or '?'})"
        raise UnscriptedCall(f"the script of model {self.name!r} has no answer left for {where}")

    def __repr__(self) -> str:
        return f"ScriptedModel({self.name!r}, calls={self.call_count})"


_MISSING: Any = object()
