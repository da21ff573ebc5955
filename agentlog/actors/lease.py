"""Holding a run's lease while this process drives it: who we are, when a holder counts as
gone, and the heartbeat that keeps our leases live.

The store keeps the lease (``acquire_lease``/``renew_lease``/``release_lease``, and the
fencing check in every append made under it); this module is the policy around it. The
owner is ``host:pid``. A lease whose holder runs on this host under a pid that no longer
runs (a SIGKILLed process) is taken over at once; any other holder keeps the run until its
lease expires, ``AGENTLOG_LEASE_SECONDS`` (default 30) after its last heartbeat.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from agentlog.events import Event
from agentlog.store import Lease, LeaseHeld, LeaseLost, Store

log = logging.getLogger(__name__)

LEASE_ENV = "AGENTLOG_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 30.0


def lease_seconds(value: float | None = None) -> float:
    """How long a lease lasts without a heartbeat: ``value``, else ``$AGENTLOG_LEASE_SECONDS``, else 30."""
    source = "the lease time"
    if value is None:
        text = os.environ.get(LEASE_ENV)
        if text is None:
            return DEFAULT_LEASE_SECONDS
        source = LEASE_ENV
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{LEASE_ENV} must be a number of seconds, not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{source} must be a positive number of seconds, not {value!r}")
    return float(value)


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_gone(owner: str) -> bool:
    """Whether ``owner`` (``host:pid``) is a process of this host that no longer runs."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's process: only its lease's expiry tells
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: it drives the run through another handle
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    try:  # a killed child its parent has not reaped yet still has a pid
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _live_holder(store: Store, run_id: str) -> Lease | None:
    current = store.lease(run_id)
    if current is not None and current.live(time.time()):
        return current
    return None


def acquire(store: Store, run_id: str, ttl: float, *, first: Sequence[Event] = ()) -> Lease:
    """This process's lease on ``run_id``; ``LeaseHeld`` while a live holder drives it.

    ``first``: a new run's first events, appended with the lease in one transaction (a new
    run has no holder to look up). Should a lease on the id be held already, the events are
    appended alone, and the lease is then asked for as for any run."""
    if first:
        try:
            return store.acquire_lease(run_id, owner_name(), ttl, first=first)
        except LeaseHeld:
            store.append(run_id, first, 0)
    current = _live_holder(store, run_id)
    take_over = current.token if current is not None and holder_is_gone(current.owner) else None
    return store.acquire_lease(run_id, owner_name(), ttl, take_over=take_over)


def check_free(store: Store, run_id: str) -> None:
    """Raise ``LeaseHeld`` now if ``acquire`` would (an early check; ``acquire`` decides)."""
    current = _live_holder(store, run_id)
    if current is not None and not holder_is_gone(current.owner):
        raise LeaseHeld(run_id, current.owner, current.expires_at)


class HeldLease:
    """A lease this process holds, renewed by the process's heartbeat until released."""

    def __init__(self, store: Store, lease: Lease, ttl: float):
        self.store, self.lease, self.ttl = store, lease, ttl
        self.on_lost: Callable[[LeaseLost], None] | None = None
        self.due = time.monotonic() + ttl / 3
        self._released = False
        _heartbeat.add(self)

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    def release(self) -> None:
        """Stop renewing and give the run up; safe to call more than once."""
        if self._released:
            return
        self._released = True
        _heartbeat.remove(self)
        try:
            self.store.release_lease(self.lease)
        except Exception:  # noqa: BLE001 - an unreleased lease expires on its own
            log.info("could not release the lease on run %s", self.run_id, exc_info=True)

    def given_up(self) -> None:
        """The store released the lease (with the run's last append): stop renewing it."""
        if not self._released:
            self._released = True
            _heartbeat.remove(self)

    def _renew(self) -> None:
        if self._released:
            return
        try:
            self.lease = self.store.renew_lease(self.lease, self.ttl)
        except LeaseLost as exc:
            _heartbeat.remove(self)
            if self.on_lost is not None:
                self.on_lost(exc)
            return
        except Exception:  # noqa: BLE001 - a busy or closed store: try again at the next beat
            log.info("could not renew the lease on run %s", self.run_id, exc_info=True)
        self.due = time.monotonic() + self.ttl / 3


class _Heartbeat:
    """One thread per process renews every held lease a third of its time before it expires."""

    def __init__(self) -> None:
        self._held: list[HeldLease] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0  # when the thread next looks (monotonic)

    def add(self, held: HeldLease) -> None:
        with self._changed:
            self._held.append(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="agentlog-lease-heartbeat", daemon=True)
                self._thread.start()
            # Woken only when this lease is due before the thread's next look: a run that
            # starts and ends between two beats costs the thread nothing.
            if held.due < self._wakes_at:
                self._changed.notify()

    def remove(self, held: HeldLease) -> None:
        with self._changed:
            if held in self._held:
                self._held.remove(held)

    def _beat(self) -> None:
        while True:
            with self._changed:
                while True:
                    now = time.monotonic()
                    due = [h for h in self._held if h.due <= now]
                    if due:
                        break
                    self._wakes_at = min((h.due for h in self._held), default=now + 3600)
                    self._changed.wait(self._wakes_at - now)
            for held in due:
                try:
                    held._renew()
                except Exception:  # noqa: BLE001 - the heartbeat outlives any one run's trouble
                    log.exception("lease heartbeat failed for run %s", held.run_id)


_heartbeat = _Heartbeat()
