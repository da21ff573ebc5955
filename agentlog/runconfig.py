"""User-defined agents for a run: a TOML file (``agentlog run TASK --config FILE``) or Python.

A run config maps named agents onto the roles of a pipeline (for ``content``:
researcher, counter_researcher, writer, reviewer) with their own system prompt, model,
temperature and tools, and says how to run the pipeline::

    research = "parallel"          # or "single"
    approval = "final"             # where a person decides: "final", "each-review" or "never"
    model = "offline"              # for agents that name none
    docs = "docs"                  # a folder (relative to this file) for search_documents
    tool_modules = ["my_tools"]    # modules that register tools in agentlog.tools.default_registry

    [agents.fact_finder]
    role = "researcher"            # default: the table's name
    system_prompt = "You research ..."
    temperature = 0.2
    tools = ["search_documents"]   # default: search_documents for research roles when docs is set

The log records roles, not the names given here: ``RunStarted.agents`` is keyed by role.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from .actors import DEFAULT_MAX_ITERATIONS, DEFAULT_THRESHOLD, RunHandle, agent_configs, start_run
from .config import ConfigError
from .events import AgentConfig
from .models import Gateway, named_models
from .pipelines import get_pipeline
from .store import Store
from .tools import ToolRegistry, default_registry
from .tools.docsearch import TOOL_NAME as DOCS_TOOL
from .tools.docsearch import search_tool

RESEARCH_ROLES = ("researcher", "counter_researcher")


class AgentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str | None = None
    model: str | None = None
    temperature: float | None = None
    system_prompt: str | None = None
    max_tokens: int | None = None
    tools: list[str] | None = None


class RunConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a run config file says. Relative paths are relative to ``base_dir``."""

    pipeline: str = "content"
    research: Literal["single", "parallel"] = "single"
    model: str | None = None
    max_iterations: int | None = None
    threshold: int | None = None
    approval: Literal["never", "final", "each-review"] | None = None
    docs: str | None = None
    tool_modules: list[str] = []
    agents: dict[str, AgentSpec] = {}
    base_dir: str = "."

    def roles(self) -> dict[str, str]:
        """Role -> the agent name that fills it."""
        known = get_pipeline(self.pipeline).roles
        out: dict[str, str] = {}
        for name, spec in self.agents.items():
            role = spec.role or name
            if role not in known:
                raise ConfigError(f"agent {name!r}: unknown role {role!r} (roles of the {self.pipeline} "
                                  f"pipeline: {', '.join(known)})")
            if role in out:
                raise ConfigError(f"agents {out[role]!r} and {name!r} both fill the role {role!r}")
            out[role] = name
        return out

    def registry(self, docs: str | os.PathLike[str] | None = None, base: ToolRegistry | None = None) -> ToolRegistry:
        """The tools this config needs: its tool modules (imported), and the documents search."""
        if self.tool_modules:
            sys.path.insert(0, str(Path(self.base_dir).resolve()))
            try:
                for module in self.tool_modules:
                    try:
                        importlib.import_module(module)
                    except ImportError as exc:
                        raise ConfigError(f"tool module {module!r}: {exc}") from None
                    except Exception as exc:  # noqa: BLE001 - the module's own code failed: one line, not a traceback
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        raise ConfigError(f"tool module {module!r} failed to import: {type(exc).__name__}"
                                          + (f": {first}" if first else "")) from None
            finally:
                sys.path.pop(0)
        registry = (base if base is not None else default_registry).copy()
        folder = docs if docs is not None else (Path(self.base_dir) / self.docs if self.docs else None)
        if folder is not None:
            registry.register(search_tool(folder))
        return registry

    def run_roles(self) -> tuple[str, ...]:
        """The roles a run of this config has (the counter researcher only in parallel research)."""
        return tuple(r for r in get_pipeline(self.pipeline).roles
                     if r != "counter_researcher" or self.research == "parallel")

    def by_role(self) -> dict[str, AgentSpec]:
        return {role: self.agents[name] for role, name in self.roles().items()}

    def agent_configs(self, default_model: str | None = None, models: Mapping[str, str] | None = None,
                      temperatures: Mapping[str, float] | None = None,
                      max_tokens: int | None = None) -> dict[str, AgentConfig]:
        """An ``AgentConfig`` per role of the run: the file's settings, with ``models`` and
        ``temperatures`` (by role) and ``default_model`` (else the file's ``model``) winning."""
        roles, specs = self.run_roles(), self.by_role()
        per_model = {r: s.model for r, s in specs.items() if s.model} | dict(models or {})
        default = default_model or self.model
        if default is None and any(r not in per_model for r in roles):
            raise ConfigError("no model for every agent: set model = ... in the run config or pass --model")
        temps = {r: s.temperature for r, s in specs.items() if s.temperature is not None} | dict(temperatures or {})
        configs = agent_configs(default or "", per_model, temps, roles, max_tokens=max_tokens)
        for role, spec in specs.items():
            if role in configs and (spec.system_prompt is not None or spec.max_tokens is not None):
                configs[role] = msgspec.structs.replace(
                    configs[role],
                    system_prompt=spec.system_prompt if spec.system_prompt is not None else configs[role].system_prompt,
                    max_tokens=spec.max_tokens if spec.max_tokens is not None else configs[role].max_tokens,
                )
        return configs

    def tools(self, registry: ToolRegistry, roles: list[str]) -> dict[str, list[str]]:
        """Role -> the tool names it is offered."""
        names = self.roles()
        out: dict[str, list[str]] = {}
        for role in roles:
            spec = self.agents.get(names.get(role, ""), AgentSpec())
            if spec.tools is not None:
                offered = spec.tools
            else:
                offered = [DOCS_TOOL] if role in RESEARCH_ROLES and DOCS_TOOL in registry else []
            if offered:
                out[role] = list(offered)
        return out

    def start(self, store: Store, task: str, *, model: str | None = None, gateway: Gateway | None = None,
              registry: ToolRegistry | None = None, **kwargs: Any) -> RunHandle:
        """Start a run of this config (the Python face of ``agentlog run TASK --config FILE``).

        ``models=`` (in-process models, see ``start_run``) may also be given; one model
        given without ``model`` is the default for agents the file names no model for.
        """
        registry = registry if registry is not None else self.registry()
        named = named_models(kwargs.get("models"))
        if model is None and self.model is None and len(named) == 1 and not isinstance(kwargs["models"], Mapping):
            model = next(iter(named))
        agents = self.agent_configs(model)
        kwargs.setdefault("approval", self.approval or "never")
        return start_run(
            store, task, agents=agents, pipeline=self.pipeline, research=self.research,
            max_iterations=self.max_iterations or DEFAULT_MAX_ITERATIONS,
            threshold=self.threshold or DEFAULT_THRESHOLD, gateway=gateway,
            tools=self.tools(registry, list(agents)), registry=registry, **kwargs,
        )


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and check a run config file; raises ``ConfigError`` with a one-line reason."""
    path = Path(path).expanduser()
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"run config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"run config {path}: {exc}") from None
    raw.setdefault("base_dir", str(path.resolve().parent))
    try:
        config = msgspec.convert(raw, RunConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"run config {path}: {exc}") from None
    try:
        config.roles()
    except ValueError as exc:  # an unknown pipeline
        raise ConfigError(f"run config {path}: {exc}") from None
    return config


__all__ = ["AgentSpec", "RunConfig", "load_run_config"]
