"""Streamed answers on a terminal: the draft as it is written, a token counter for JSON answers.

Only for an interactive stderr: the CLI uses it when stderr is a TTY and ``-q`` is not given,
so logs and pipes never get the carriage returns and redraws.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from agentlog.actors import Piece

CLEAR_LINE = "\r\x1b[K"


class _Call:
    def __init__(self, piece: Piece):
        self.agent, self.structured = piece.agent, piece.structured
        self.attempt, self.pieces, self.started = piece.attempt, 0, time.monotonic()

    def rate(self) -> float:
        return self.pieces / max(time.monotonic() - self.started, 1e-3)


class LiveTerminal:
    """A watcher (``agentlog.actors.Watcher``) that draws on ``stream``; also prints progress lines
    between its redraws. Called from several agent threads at once."""

    def __init__(self, stream: TextIO, *, redraw_interval: float = 0.1):
        self.stream, self.redraw_interval = stream, redraw_interval
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._drafting: str | None = None  # the prose call whose text is being echoed
        self._status = False  # a counter line is on screen
        self._drawn_at = 0.0

    def __call__(self, piece: Piece) -> None:
        with self._lock:
            call = self._calls.get(piece.call_id)
            if call is None:
                call = self._calls[piece.call_id] = _Call(piece)
                if not piece.structured and self._drafting is None:
                    self._clear_status()
                    self._drafting = piece.call_id
                    self._write(f"{piece.agent} is writing:\n")
            if piece.attempt != call.attempt:
                call.attempt, call.pieces, call.started = piece.attempt, 0, time.monotonic()
                if self._drafting == piece.call_id:
                    self._write(f"\n[attempt {piece.attempt}: the answer starts again]\n")
            if piece.done:
                self._end(piece.call_id, call)
                return
            call.pieces = piece.pieces
            if self._drafting == piece.call_id:
                self._write(piece.text)
            elif self._drafting is None and time.monotonic() - self._drawn_at >= self.redraw_interval:
                self._draw_status()

    def line(self, text: str) -> None:
        """Print a whole line (a progress line) without breaking the live output."""
        with self._lock:
            self._clear_status()
            if self._drafting is not None:
                self._write("\n")
            self._write(text + "\n")
            if self._drafting is None and self._calls:
                self._draw_status()

    def _end(self, call_id: str, call: _Call) -> None:
        del self._calls[call_id]
        if self._drafting == call_id:
            self._drafting = None
            self._write("\n")
        else:
            self._clear_status()
            seconds = time.monotonic() - call.started
            self._write(f"  {call.agent}: {call.pieces} tokens in {seconds:.1f} s ({call.rate():.1f} tokens/s)\n")
        if self._drafting is None and self._calls:
            self._draw_status()

    def _draw_status(self) -> None:
        parts = [f"{c.agent}: {c.pieces} tokens, {c.rate():.1f} tokens/s" for c in self._calls.values()]
        self._write(CLEAR_LINE + "  " + " | ".join(parts))
        self._status, self._drawn_at = True, time.monotonic()

    def _clear_status(self) -> None:
        if self._status:
            self._write(CLEAR_LINE)
            self._status = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the run goes on without it
            pass
