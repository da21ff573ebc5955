"""Tools agents may call: a name, a description, JSON-schema parameters, and a callable.

The log refers to a tool by name only (``ToolSpec`` in ``RunStarted``, ``ToolInvoked``,
``ToolReturned``); the callable lives in a ``ToolRegistry`` of the process that drives
the run and is never serialised. A process that resumes a run must register the same
tools again (for the built-in documents search: pass the same ``--docs DIR``).

Plug-in point: any callable becomes a tool, e.g. a web search the user wires to the
search API of their choice::

    from agentlog.tools import Tool, default_registry

    def web_search(query: str, limit: int = 5) -> str:
        ...  # call your search API; return text or JSON-ready data

    default_registry.register(Tool(
        name="web_search", description="Search the web; returns titles, URLs and snippets.",
        parameters={"type": "object", "properties": {"query": {"type": "string"},
                    "limit": {"type": "integer"}}, "required": ["query"]},
        fn=web_search,
    ))
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from agentlog.events import ToolSpec

MAX_RESULT_CHARS = 20_000  # a tool's result goes into the next request: bound the context it adds


class ToolError(ValueError):
    """A tool that cannot be defined or found as asked (a user's mistake)."""


class ToolNotRegistered(ToolError):
    """A run offers a tool that this process has not registered; register it and resume."""


class Tool:
    """A callable the model may call. ``fn`` takes the model's arguments as keywords and
    returns a string, or JSON-ready data that is encoded as the result."""

    __slots__ = ("name", "description", "parameters", "fn")

    def __init__(self, name: str, description: str, parameters: dict[str, Any], fn: Callable[..., Any]):
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ToolError(f"a tool name is letters, digits, '_' and '-', not {name!r}")
        if parameters.get("type") != "object":
            raise ToolError(f"tool {name}: parameters must be a JSON schema of type 'object'")
        self.name, self.description, self.parameters, self.fn = name, description, parameters, fn

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def run(self, arguments: str) -> tuple[str, bool]:
        """``(result, is_error)``: the callable's result, or the error the model is told about."""
        try:
            args = json.loads(arguments or "{}")
        except ValueError as exc:
            return f"error: the arguments are not valid JSON: {exc}", True
        if not isinstance(args, dict):
            return "error: the arguments must be a JSON object", True
        try:
            value = self.fn(**args)
        except Exception as exc:  # noqa: BLE001 - the model is told, the run goes on
            return f"error: {self.name} raised {type(exc).__name__}: {exc}", True
        try:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as exc:  # e.g. non-string keys, a circular reference
            return f"error: {self.name} returned a {type(value).__name__} that is not JSON ({exc})", True
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + f"\n[truncated: {len(text) - MAX_RESULT_CHARS} more characters]"
        return text, False


class ToolRegistry:
    """The tools a process can run, by name. Thread-safe."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._lock = threading.Lock()
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        """Add ``tool``, replacing one of the same name."""
        with self._lock:
            self._tools[tool.name] = tool
        return tool

    def function(self, name: str | None = None, *, description: str = "",
                 parameters: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a function as a tool (its docstring is the default description)."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(Tool(
                name=name or fn.__name__, description=description or (fn.__doc__ or "").strip(),
                parameters=parameters or {"type": "object", "properties": {}}, fn=fn,
            ))
            return fn

        return wrap

    def copy(self) -> "ToolRegistry":
        with self._lock:
            return ToolRegistry(self._tools.values())

    def get(self, name: str) -> Tool | None:
        with self._lock:
            return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._tools

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._tools)

    def specs(self, names: Iterable[str]) -> list[ToolSpec]:
        """The specs of ``names``, in that order; ``ToolNotRegistered`` for a missing one."""
        out = []
        for name in names:
            tool = self.get(name)
            if tool is None:
                known = ", ".join(self.names()) or "none"
                raise ToolNotRegistered(f"no tool named {name!r} is registered (registered: {known})")
            out.append(tool.spec)
        return out


default_registry = ToolRegistry()
"""The process-wide registry used when a run is given none."""

__all__ = ["MAX_RESULT_CHARS", "Tool", "ToolError", "ToolNotRegistered", "ToolRegistry", "default_registry"]
