"""What the runs of a process share: an agent actor per role and gateway, and the default
gateway per endpoint. Each is counted by the runs that hold it and ends with the last of them."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pykka

from agentlog.models import Endpoint, Gateway

from .agent import AgentActor


class SharedAgents:
    """Agent actors by ``(role, gateway)``: runs that share a gateway share its agents."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], list] = {}  # key -> [ref, gateway, runs holding it]

    def acquire(self, roles: Iterable[str], gateway: Gateway) -> dict[str, pykka.ActorRef]:
        refs = {}
        with self._lock:
            for role in roles:
                entry = self._held.setdefault((role, id(gateway)), [None, gateway, 0])
                if entry[0] is None or not entry[0].is_alive():
                    entry[0] = AgentActor.start(role, gateway)
                entry[2] += 1
                refs[role] = entry[0]
        return refs

    def release(self, roles: Iterable[str], gateway: Gateway) -> None:
        """One run fewer holds these agents; those no run holds any more are stopped."""
        ending = []
        with self._lock:
            for role in roles:
                entry = self._held.get((role, id(gateway)))
                if entry is None:
                    continue
                entry[2] -= 1
                if entry[2] <= 0:
                    del self._held[(role, id(gateway))]
                    ending.append(entry[0])
        for ref in ending:
            # Quick: an agent's turns only hand calls on; a call still out ends on its own.
            try:
                ref.stop(block=True, timeout=5.0)
            except pykka.Timeout:
                pass  # its turn is held up; it stops when the turn ends

    def count(self) -> int:
        """Agent actors alive now."""
        with self._lock:
            return len(self._held)


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
