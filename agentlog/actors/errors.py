"""Why a run stopped without an outcome in its log (the log stays consistent; resume continues it)."""

from __future__ import annotations


class RunAborted(RuntimeError):
    """The run stopped in this process before its log recorded how it ended."""

    def __init__(self, run_id: str, reason: str):
        self.run_id, self.reason = run_id, reason
        super().__init__(f"run {run_id} stopped: {reason}; the log is consistent, continue with: "
                         f"agentlog resume {run_id}")


class AgentDied(RunAborted):
    """An agent actor of the run died (a ``BaseException`` in a tool or a model client)."""


class RunStopped(RunAborted):
    """The run's actors were stopped (``RunHandle.stop()``, or every actor of the process)."""


class RunHandedBack(RunAborted):
    """The run was handed back at a step boundary (its worker is shutting down): every answer
    received is in the log, its lease is released, and another worker (or resume) goes on."""

    def __init__(self, run_id: str):
        RuntimeError.__init__(self, f"run {run_id} handed back: its log is complete up to here and its "
                                    f"lease released; a worker or `agentlog resume {run_id}` goes on")
        self.run_id, self.reason = run_id, "handed back"
