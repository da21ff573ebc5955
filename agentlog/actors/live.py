"""Answers as they are streamed: shown to a watcher piece by piece, and kept beside the log
(never in it) a few times a second, for watchers in other processes such as the viewer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from agentlog.models import Delta
from agentlog.store import LogUnavailable, PartialAnswer, Store, StoreError

log = logging.getLogger(__name__)

# How often a growing answer is rewritten for other processes at most.
STORE_INTERVAL = 0.25


class Piece(msgspec.Struct, frozen=True, kw_only=True):
    """One streamed piece of a call's answer, as a watcher sees it; ``done`` when the call ends."""

    run_id: str
    call_id: str
    agent: str
    text: str
    attempt: int
    pieces: int  # pieces of this attempt so far (one token each, for most servers)
    structured: bool  # the answer is JSON (the request names a response format), not prose
    done: bool = False


Watcher = Callable[[Piece], None]


class LiveAnswer:
    """One model call's answer while it streams. Used by that call's task only (one thread)."""

    __slots__ = ("store", "run_id", "call_id", "agent", "structured", "watcher", "interval", "_clock", "attempt",
                 "parts", "started", "_stored_at", "_stored")

    def __init__(self, store: Store, run_id: str, call_id: str, agent: str, request: dict[str, Any], *,
                 watcher: Watcher | None = None, interval: float = STORE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.run_id, self.call_id, self.agent = store, run_id, call_id, agent
        self.structured = request.get("response_format") is not None
        self.watcher, self.interval, self._clock = watcher, interval, clock
        self.attempt, self.parts = 0, []
        self.started = time.time()
        # A fast answer is never written: the first write waits a whole interval from the first
        # piece. Not from the request: an answer that came late but whole (a busy process reads
        # its pieces in one go) would be written and removed at once, two statements for nothing.
        self._stored_at: float | None = None
        self._stored = False

    def delta(self, delta: Delta) -> None:
        if delta.attempt != self.attempt:  # a retry starts its answer again
            self.attempt, self.parts = delta.attempt, []
        self.parts.append(delta.text)
        self._tell(delta.text)
        now = self._clock()
        if self._stored_at is None:
            self._stored_at = now
        elif now - self._stored_at >= self.interval:
            self._stored_at = now
            self._store(lambda: self.store.put_partial(PartialAnswer(
                self.run_id, self.call_id, self.agent, self.attempt, "".join(self.parts), len(self.parts),
                self.started, time.time())))
            self._stored = True

    def end(self) -> None:
        """The call ended (answered or given up): its partial answer goes."""
        if self._stored:
            self._store(lambda: self.store.clear_partial(self.run_id, self.call_id))
        if self.attempt:
            self._tell("", done=True)

    def _tell(self, text: str, done: bool = False) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher(Piece(run_id=self.run_id, call_id=self.call_id, agent=self.agent, text=text,
                               attempt=self.attempt, pieces=len(self.parts), structured=self.structured, done=done))
        except Exception:  # a watcher's bug must not stop the call
            log.exception("watcher failed on %s", self.call_id)

    def _store(self, write: Callable[[], None]) -> None:
        try:
            write()
        except LogUnavailable:  # the database went away: the run's next append says so, in one line
            log.debug("could not store the partial answer of %s: the log is unavailable", self.call_id)
        except StoreError as exc:  # only watchers lose: the answer itself goes to the log as usual
            log.warning("could not store the partial answer of %s: %s", self.call_id, exc)
