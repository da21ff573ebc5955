"""What the runs of a process share: an agent actor per role and gateway, and the default
gateway per endpoint.

An agent is held by the runs that use it. One that no run holds stays a while, so that the
runs a process makes one after another share their agents too (starting and stopping three
actors per run was a fifth of the runtime's own cost, docs/benchmarks.md 11); it ends when its
gateway closes, when the dispatcher's threads have all ended (``IDLE_SECONDS`` without any
work in the process), when a run starts or ends ``IDLE_SECONDS`` after it went idle, or at
exit. The default gateway per endpoint is closed with the last run holding it.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Iterable

import pykka

from agentlog.models import Endpoint, Gateway

from .agent import AgentActor
from .dispatch import DISPATCHER, IDLE_SECONDS


class SharedAgents:
    """Agent actors by ``(role, gateway)``: runs that share a gateway share its agents."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], list] = {}  # key -> [ref, gateway, runs holding it]
        # Agents no run holds, oldest first: key -> when the last run let go of it (monotonic).
        self._idle: dict[tuple[str, int], float] = {}

    def acquire(self, roles: Iterable[str], gateway: Gateway) -> dict[str, pykka.ActorRef]:
        refs = {}
        with self._lock:
            ending = self._expired(time.monotonic())
            for role in roles:
                key = (role, id(gateway))
                entry = self._held.get(key)
                if entry is None:
                    # The entry holds the gateway: its id names no other gateway while the entry lives.
                    entry = self._held[key] = [None, gateway, 0]
                    gateway.on_close(self.close_idle)
                if entry[0] is None or not entry[0].is_alive():
                    entry[0] = AgentActor.start(role, gateway)
                entry[2] += 1
                self._idle.pop(key, None)
                refs[role] = entry[0]
        _stop(ending)
        return refs

    def release(self, roles: Iterable[str], gateway: Gateway) -> None:
        """One run fewer holds these agents; those no run holds now stay idle a while (see the module)."""
        now = time.monotonic()
        with self._lock:
            for role in roles:
                key = (role, id(gateway))
                entry = self._held.get(key)
                if entry is None:
                    continue
                entry[2] -= 1
                if entry[2] <= 0:
                    self._idle[key] = now
            ending = self._expired(now)
        _stop(ending)

    def close_idle(self, gateway: Gateway | None = None) -> None:
        """End the agents no run holds (of ``gateway`` only, if given): ended when it closes."""
        with self._lock:
            keys = [k for k in self._idle if gateway is None or self._held[k][1] is gateway]
            ending = [self._forget(k) for k in keys]
        _stop(ending)

    def count(self) -> int:
        """Agent actors alive now, idle or not."""
        with self._lock:
            return len(self._held)

    def _expired(self, now: float) -> list[pykka.ActorRef]:
        """Forget the agents idle for ``idle_seconds`` or more (the lock held); theirs to stop."""
        ending = []
        for key, since in self._idle.items():
            if now - since < self.idle_seconds:
                break
            ending.append(key)
        return [self._forget(k) for k in ending]

    def _forget(self, key: tuple[str, int]) -> pykka.ActorRef:
        del self._idle[key]
        return self._held.pop(key)[0]


def _stop(refs: list[pykka.ActorRef]) -> None:
    for ref in refs:
        # Quick: an idle agent's last turn runs here, and a call of an ended run still out ends on its own.
        try:
            ref.stop(block=True, timeout=5.0)
        except pykka.Timeout:
            pass  # its turn is held up; it stops when the turn ends


class SharedGateways:
    """The gateway of runs given none, one per endpoint, closed when its last run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Endpoint, list] = {}  # endpoint -> [gateway, runs holding it]

    def acquire(self, endpoint: Endpoint) -> Gateway:
        with self._lock:
            entry = self._held.get(endpoint)
            if entry is None:
                entry = self._held[endpoint] = [Gateway(endpoint), 0]
            entry[1] += 1
            return entry[0]

    def release(self, gateway: Gateway) -> None:
        with self._lock:
            entry = self._held.get(gateway.endpoint)
            if entry is None or entry[0] is not gateway:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._held[gateway.endpoint]
        gateway.close()


AGENTS = SharedAgents()
GATEWAYS = SharedGateways()
DISPATCHER.when_idle.append(AGENTS.close_idle)  # the process has had no work for IDLE_SECONDS
atexit.register(AGENTS.close_idle)
