"""Pipelines as pure deciders: ``evolve(state, event) -> state`` and ``decide(state) -> commands``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from agentlog.events import Event

from .commands import CallModel, Command, InvokeTool, Record
from .content import MAX_ATTEMPTS, MAX_TOOL_ROUNDS, ContentPipeline, ContentState, merge_findings


class Pipeline(Protocol):
    name: str
    roles: tuple[str, ...]

    def initial_state(self) -> Any: ...
    def evolve(self, state: Any, event: Event) -> Any: ...
    def decide(self, state: Any) -> list[Command]: ...


class UnknownPipeline(ValueError):
    pass


_PIPELINES: dict[str, Pipeline] = {"content": ContentPipeline(), "rereview": ContentPipeline()}


def get_pipeline(name: str) -> Pipeline:
    try:
        return _PIPELINES[name]
    except KeyError:
        raise UnknownPipeline(f"unknown pipeline {name!r} (known: {', '.join(sorted(_PIPELINES))})") from None


def register_pipeline(name: str, pipeline: Pipeline) -> None:
    _PIPELINES[name] = pipeline


def fold(pipeline: Pipeline, events: Iterable[Event], state: Any = None) -> Any:
    state = pipeline.initial_state() if state is None else state
    for event in events:
        state = pipeline.evolve(state, event)
    return state


__all__ = [
    "MAX_ATTEMPTS", "MAX_TOOL_ROUNDS", "CallModel", "Command", "ContentPipeline", "ContentState", "InvokeTool",
    "Pipeline", "Record", "UnknownPipeline", "fold", "get_pipeline", "merge_findings", "register_pipeline",
]
