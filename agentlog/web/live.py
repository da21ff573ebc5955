"""A live run page's server-sent events: answers still being streamed, and word of new events.

The running process keeps its streaming answers in the ``partial_answers`` table beside the
log; this reads the table and the run's new events, sends the run's list whenever it
changes (leaving out calls the log already shows as ended: a row a killed process left
behind), and ``appended`` with the last seq when events were appended, so the page fetches
them at once instead of at its next poll. Between reads it waits on the store: a timer on
SQLite, NOTIFY on PostgreSQL (which ends the wait at an append; the timer still bounds it).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from agentlog.events import LLMCallAnswered, LLMCallFailed
from agentlog.store.aio import AsyncReads

INTERVAL = 0.25
# An event stream ends after this long and the browser reconnects: no response lives forever.
LIFETIME = 15.0


async def partial_answer_events(store: AsyncReads, run_id: str, *, interval: float = INTERVAL,
                                lifetime: float = LIFETIME) -> AsyncIterator[str]:
    """``partials`` events (a JSON list of the run's streaming answers) and ``appended`` (the
    run's last seq, when it grew), then ``end`` once the run is not running any more."""
    yield "retry: 1000\n\n"
    ended: set[str] = set()
    seq, sent, first = 0, None, True
    deadline = time.monotonic() + lifetime
    while True:
        summary = await store.get_run(run_id)
        before = seq
        for stored in await store.read(run_id, seq):
            seq, event = stored.seq, stored.event
            if isinstance(event, LLMCallAnswered) or (isinstance(event, LLMCallFailed) and event.gave_up):
                ended.add(event.call_id)
        if seq > before and not first:
            yield f"event: appended\ndata: {json.dumps({'last_seq': seq})}\n\n"
        first = False
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
        await store.wait_for_append(run_id, interval)
