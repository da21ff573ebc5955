"""Workers: processes that take queued runs from the log and drive them (``agentlog worker``).

A worker claims a run (the oldest queued run nobody drives: never claimed, released, or
its lease expired) together with its lease, in one transaction of the store; records
``RunClaimed``; and drives it with the same actors as ``agentlog run``, up to
``concurrency`` runs at once, its leases renewed by the process's heartbeat. A worker
that dies leaves its leases to expire; other workers then take its runs over and
continue them from their logs, repeating at most the calls that were in flight.

``stop()`` (SIGTERM) claims nothing more and hands back what it holds at the next step
boundary: the answers of calls in flight are recorded, nothing more is sent, the leases
are released. ``stop(at_once=True)`` (a second signal) stops the runs where they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .actors import Budget, RunHandedBack, RunHandle, RunStopped, drive
from .actors.lease import lease_seconds as lease_ttl
from .actors.lease import acquire, owner_name
from .actors.runtime import Models
from .events import TERMINAL_TYPES, RunClaimed, RunFailed
from .models import Gateway, PriceTable
from .models.gateway import load_client
from .store import ConcurrencyError, LeaseHeld, LeaseLost, RunSummary, Store, StoredEvent, StoreError
from .tools import ToolRegistry

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 1.0
_REAP_SECONDS = 0.02  # how often the runs in hand are checked for an end (no I/O)


class WorkerStats(msgspec.Struct):
    """What a worker did: runs claimed, and how each claimed run left its hands."""

    claimed: int = 0
    finished: int = 0
    failed: int = 0
    waiting: int = 0  # stopped at a person's decision
    handed_back: int = 0  # at a step boundary, on stop()
    stopped: int = 0  # where they were, on stop(at_once=True), or when the store failed
    lost: int = 0  # taken over by another worker (this one's lease had expired)


class Worker:
    """Claims queued runs from ``store`` and drives up to ``concurrency`` of them at once.

    ``gateway`` reaches the models the runs name (one gateway for all of them); ``tools``
    holds the callables of the tools they offer; ``prices`` prices their budgets;
    ``models`` are in-process models, by the names runs recorded. ``say`` is told one line
    per run claimed and per run that leaves the worker's hands.
    """

    def __init__(
        self, store: Store, *, concurrency: int = 1, gateway: Gateway | None = None,
        tools: ToolRegistry | None = None, prices: PriceTable | None = None, models: Models = None,
        lease_seconds: float | None = None, poll: float = DEFAULT_POLL_SECONDS,
        say: Callable[[str], None] | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"a worker drives at least one run at a time, not {concurrency}")
        if not poll > 0:
            raise ValueError(f"the poll interval is a positive number of seconds, not {poll}")
        self.store, self.concurrency, self.poll = store, concurrency, poll
        self.gateway = gateway
        self.tools, self.prices, self.models = tools, prices, models
        self.ttl = lease_ttl(lease_seconds)
        self.owner = owner_name()
        self.say = say or (lambda line: None)
        self.stats = WorkerStats()
        self._active: dict[str, RunHandle] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._at_once = False
        self._unreachable = False  # the last claim failed: said once, until one succeeds
        load_client()  # once per process: ~0.5 s of CPU the first runs claimed would wait for

    def stop(self, *, at_once: bool = False) -> None:
        """Claim nothing more; hand back the runs in hand at their next step boundary, or with
        ``at_once`` stop them where they are. Safe from a signal handler or another thread."""
        self._stopping = True
        self._at_once = self._at_once or at_once
        self._wake.set()

    def run(self, *, idle_exit: float | None = None, max_runs: int | None = None) -> WorkerStats:
        """Claim and drive runs until ``stop()``; or, with ``idle_exit``, until nothing was
        claimable and nothing was in hand for that many seconds; or once ``max_runs`` runs
        were claimed and have left its hands."""
        idle_since = time.monotonic()
        next_claim = 0.0
        handing_back = stopping_now = False
        while True:
            if self._reap():
                next_claim = 0.0  # a slot came free: look for work at once
            if self._stopping:
                if self._at_once and not stopping_now:
                    stopping_now = True
                    for handle in list(self._active.values()):
                        handle.stop()
                elif not handing_back:
                    handing_back = True
                    for handle in list(self._active.values()):
                        handle.hand_back()
                if not self._active:
                    break
            else:
                now = time.monotonic()
                room = max_runs is None or self.stats.claimed < max_runs
                if room and len(self._active) < self.concurrency and now >= next_claim:
                    if not self._claim_some(max_runs):
                        next_claim = now + self.poll
                if self._active:
                    idle_since = time.monotonic()
                elif not room or (idle_exit is not None and time.monotonic() - idle_since >= idle_exit):
                    break
            self._wake.wait(_REAP_SECONDS if self._active else max(0.0, min(self.poll, next_claim - time.monotonic())))
            self._wake.clear()
        return self.stats

    # --- claiming ----------------------------------------------------------------

    def _claim_some(self, max_runs: int | None) -> bool:
        """Claim runs while there is room, as many at once as there is room for; whether any
        was claimable."""
        found = False
        while not self._stopping:
            room = self.concurrency - len(self._active)
            if max_runs is not None:
                room = min(room, max_runs - self.stats.claimed)
            if room < 1:
                return found
            try:
                claims = self.store.claim_runs(self.owner, self.ttl, room)
            except StoreError as exc:  # busy, or gone for a while: the next poll tries again
                if not self._unreachable:  # one line an outage, not one a poll
                    self.say(f"could not claim a run: {exc}; trying again every {self.poll:g} s")
                self._unreachable = True
                return found
            if self._unreachable:
                self._unreachable = False
                self.say("the log answers again: claiming runs")
            if not claims:
                return found
            found = True
            self.stats.claimed += len(claims)
            self._start(claims)
        return found

    def _start(self, claims: list[tuple[Any, RunSummary]]) -> None:
        """Record ``RunClaimed`` in each claimed run (all in one transaction) and drive it.

        Claiming and starting a run is the worker's own thread's work, while the runs it
        already drives take turns with it at the interpreter: a round trip or two for a batch
        of claims, not several per run, lets a worker reach its concurrency in a fraction of
        the time (docs/benchmarks.md, benchmark 10)."""
        try:
            written = self.store.append_each([
                (lease.run_id, [RunClaimed(worker=self.owner, previous_seq=run.last_seq)], run.last_seq, lease)
                for lease, run in claims])
        except StoreError as exc:
            written = [exc] * len(claims)
        # Their logs, read in one go (RunClaimed included): each run then starts from its own
        # rather than reading it back, queued behind the appends of the runs already going.
        logs = self._read([lease.run_id for (lease, _), result in zip(claims, written)
                           if not isinstance(result, BaseException)])
        for (lease, run), result in zip(claims, written):
            run_id = lease.run_id
            if self._stopping and not isinstance(result, BaseException):  # stopped meanwhile: not started
                self._release(lease)
                self.stats.handed_back += 1
                self.say(f"run {run_id} handed back unstarted: its lease is released, another worker goes on")
                continue
            try:
                if isinstance(result, BaseException):
                    raise result
                handle = drive(self.store, run_id, gateway=self.gateway, tools=self.tools, lease=lease,
                               lease_seconds=self.ttl, models=self.models, budget=Budget(self.prices),
                               observer=self._observe, log=logs.get(run_id))
            except (LeaseLost, ConcurrencyError):  # another worker, or a resumer, got in first
                self._release(lease)
                self.stats.lost += 1
                self.say(f"run {run_id}: another process drives it; left to it")
                continue
            except StoreError as exc:
                self._release(lease)
                self.stats.stopped += 1
                self.say(f"run {run_id}: not started ({exc}); it stays queued")
                continue
            except Exception as exc:  # noqa: BLE001 - this run cannot start here (its pipeline, its models)
                self._release(lease)
                self._record_failure(run_id, exc)
                continue
            self._active[run_id] = handle
            self.say(f"run {run_id} claimed (after event {run.last_seq}): {run.task}")

    def _read(self, run_ids: list[str]) -> dict[str, list[StoredEvent]]:
        """The logs of runs just claimed; none if the store fails (each run then reads its own,
        and says what stopped it)."""
        if self._stopping or not run_ids:
            return {}
        try:
            return self.store.read_runs(run_ids)
        except StoreError:
            log.info("could not read the runs just claimed; each reads its own", exc_info=True)
            return {}

    def _observe(self, stored: StoredEvent) -> None:
        if isinstance(stored.event, TERMINAL_TYPES):
            self._wake.set()  # reap it now rather than at the next check

    # --- runs leaving the worker's hands ------------------------------------------------

    def _reap(self) -> bool:
        """Collect the runs that ended; whether any did."""
        ended = [run_id for run_id, handle in self._active.items() if handle.ended()]
        for run_id in ended:
            self._outcome(run_id, self._active.pop(run_id))
        return bool(ended)

    def _outcome(self, run_id: str, handle: RunHandle) -> None:
        try:
            summary = handle.wait(timeout=5.0)
        except RunHandedBack:
            self.stats.handed_back += 1
            self.say(f"run {run_id} handed back: its lease is released, another worker goes on")
            return
        except RunStopped:
            self.stats.stopped += 1
            self.say(f"run {run_id} stopped where it was; another worker goes on")
            return
        except LeaseLost:
            self.stats.lost += 1
            self.say(f"run {run_id} was taken over by another worker (this worker's lease had expired)")
            return
        except StoreError as exc:
            self.stats.stopped += 1
            self.say(f"run {run_id} stopped: {exc}; it stays queued")
            return
        except Exception as exc:  # noqa: BLE001 - the run cannot go on here: say so in its log
            self._record_failure(run_id, exc)
            return
        if summary.status == "finished":
            self.stats.finished += 1
            score = f", score {summary.score}" if summary.score is not None else ""
            self.say(f"run {run_id} finished ({summary.iterations} iteration(s){score})")
        elif summary.status == "waiting":
            self.stats.waiting += 1
            self.say(f"run {run_id} waits for a person: agentlog approve|edit|reject {run_id}")
        else:
            self.stats.failed += 1
            self.say(f"run {run_id} {summary.status}")

    def _record_failure(self, run_id: str, exc: BaseException) -> None:
        """Fail a run that stopped with an error no worker would get past (a run that
        stays queued would be claimed and fail again, forever). ``agentlog resume`` continues it."""
        self.stats.failed += 1
        reason = str(exc) or type(exc).__name__
        self.say(f"run {run_id} failed: {reason}")
        try:
            lease = acquire(self.store, run_id, self.ttl)
        except (LeaseHeld, StoreError):
            return  # another process drives it now
        try:
            last = self.store.last_seq(run_id)
            if last and not isinstance(self.store.events(run_id, last - 1, last)[0], TERMINAL_TYPES):
                self.store.append(run_id, [RunFailed(reason=f"worker {self.owner}: {reason}")], last, lease=lease)
        except (StoreError, LeaseLost, ConcurrencyError):
            log.warning("run %s: could not record its failure", run_id, exc_info=True)
        finally:
            self._release(lease)

    def _release(self, lease: Any) -> None:
        try:
            self.store.release_lease(lease)
        except StoreError:
            log.info("could not release the lease on run %s", lease.run_id, exc_info=True)


__all__ = ["DEFAULT_POLL_SECONDS", "Worker", "WorkerStats"]
