"""What the viewer shows of a run: its summary row and the run folded by ``agentlog.replay``,
plus the little the pages derive from them (pure: no I/O, no HTML)."""

from __future__ import annotations

from dataclasses import dataclass

from agentlog.events import AgentConfig, RunFailed, RunFinished
from agentlog.replay import RunCost, RunView
from agentlog.store import DamagedEvent, RunSummary

CONFIG_EVENTS = ("AgentReconfigured", "SettingsChanged")


@dataclass(frozen=True)
class RunPage:
    summary: RunSummary
    view: RunView
    damage: DamagedEvent | None = None  # the first event that cannot be read; the view stops before it
    cost: RunCost | None = None

    @property
    def last_seq(self) -> int:
        """The last event the page accounts for, the damaged one included."""
        return self.damage.seq if self.damage else self.view.last_seq

    @property
    def scores(self) -> dict[int, int]:
        """The score of each iteration; a later review of the same iteration wins."""
        return {r.iteration: r.review.score for r in self.view.reviews}

    @property
    def settings(self) -> dict[str, int]:
        return {"max_iterations": self.view.max_iterations, "threshold": self.view.threshold}

    @property
    def changes(self) -> list[tuple[int, str]]:
        """(event number, what changed) for every reconfiguration recorded in the run."""
        return [(r.seq, f"{r.agent}: {r.description}" if r.agent else r.description)
                for r in self.view.timeline if r.type in CONFIG_EVENTS]

    @property
    def outcome(self) -> str:
        match self.view.ended:
            case RunFinished() as e:
                return f"finished: {e.reason.replace('_', ' ')} after {e.iterations} iteration(s)"
            case RunFailed() as e:
                return f"failed: {e.reason}" + (f" (at {e.step})" if e.step else "")
        return ""


def config_table(a: RunPage, b: RunPage) -> list[tuple[str, str, str]]:
    """(setting, value in a, value in b) for every agent parameter and run setting of either run."""
    va, vb = a.view, b.view
    rows = []
    for name in sorted(set(va.agents) | set(vb.agents)):
        for f in AgentConfig.__struct_fields__:
            rows.append((f"{name}.{f}", _value(va.agents.get(name), f), _value(vb.agents.get(name), f)))
    for key in ("max_iterations", "threshold"):
        rows.append((key, str(a.settings[key]), str(b.settings[key])))
    rows.append(("pipeline", va.pipeline, vb.pipeline))
    rows.append(("research", va.research, vb.research))
    return rows


def _value(config: AgentConfig | None, name: str) -> str:
    if config is None:
        return "-"
    value = getattr(config, name)
    return "default" if value is None else str(value)
