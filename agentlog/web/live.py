"""Answers still being streamed, as server-sent events for a live run page.

The running process keeps them in the ``partial_answers`` table beside the log; this reads
the table a few times a second and sends the run's list whenever it changes, leaving out
calls the log already shows as ended (a row a killed process left behind).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from agentlog.events import LLMCallAnswered, LLMCallFailed
from agentlog.store import AsyncSQLiteStore

INTERVAL = 0.25
# An event stream ends after this long and the browser reconnects: no response lives forever.
LIFETIME = 15.0


async def partial_answer_events(store: AsyncSQLiteStore, run_id: str, *, interval: float = INTERVAL,
                                lifetime: float = LIFETIME) -> AsyncIterator[str]:
    """``partials`` events (a JSON list of the run's streaming answers), then ``end`` once the
    run is not running any more."""
    yield "retry: 1000\n\n"
    ended: set[str] = set()
    seq, sent = 0, None
    deadline = time.monotonic() + lifetime
    while True:
        summary = await store.get_run(run_id)
        for stored in await store.read(run_id, seq):
            seq, event = stored.seq, stored.event
            if isinstance(event, LLMCallAnswered) or (isinstance(event, LLMCallFailed) and event.gave_up):
                ended.add(event.call_id)
        partials = [{"call_id": p.call_id, "agent": p.agent, "attempt": p.attempt, "pieces": p.pieces,
                     "text": p.text} for p in await store.partials(run_id) if p.call_id not in ended]
        data = json.dumps(partials)
        if data != sent:
            yield f"event: partials\ndata: {data}\n\n"
            sent = data
        if summary.status != "running":
            yield "event: end\ndata: {}\n\n"
            return
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(interval)
