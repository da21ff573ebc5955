"""Answers as they stream, on the live run page: the SSE endpoint and what a browser shows."""

from __future__ import annotations

import json
import time
import urllib.request

from agentlog.events import DraftReady, RunFinished
from agentlog.store import PartialAnswer, SQLiteStore
from agentlog.web import create_app

from .builders import XSS_DRAFT, answer, running_run, serving
from .conftest import fetch

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def partial(run_id: str, call_id: str, text: str, agent: str = "writer", attempt: int = 1) -> PartialAnswer:
    now = time.time()
    return PartialAnswer(run_id, call_id, agent, attempt, text, len(text.split()), now, now)


def sse_events(url: str, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
    """The first ``count`` (event, data) pairs of the event stream at ``url``."""
    found: list[tuple[str, str]] = []
    with _opener.open(url, timeout=timeout) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        name, data = "message", ""
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
            elif not line and data:
                found.append((name, data))
                if len(found) == count:
                    return found
                name, data = "message", ""
    return found


def test_the_stream_sends_the_runs_partial_answers_and_leaves_out_ended_calls(tmp_path):
    db = str(tmp_path / "live.db")
    with SQLiteStore(db) as store:
        run_id = running_run(store, "5e5e000000000001", "Streams")
        store.put_partial(partial(run_id, "write-1/1", XSS_DRAFT))
        store.put_partial(partial(run_id, "research/1", "{stale", agent="researcher"))  # answered in the log
        store.put_partial(partial("another0run00000", "write-1/1", "not this run's"))
    with serving(create_app(db)) as url:
        [(name, data)] = sse_events(f"{url}/runs/{run_id[:8]}/stream", 1)
        with SQLiteStore(db, create=False) as store:
            store.append(run_id, [RunFinished(reason="approved", iterations=1, score=9)], 5)
        ended = sse_events(f"{url}/runs/{run_id}/stream", 2)
        status, _, body = fetch(f"{url}/runs/nosuchrun/stream")
    assert name == "partials"
    [shown] = json.loads(data)
    assert shown == {"call_id": "write-1/1", "agent": "writer", "attempt": 1, "pieces": len(XSS_DRAFT.split()),
                     "text": XSS_DRAFT}
    assert [n for n, _ in ended] == ["partials", "end"]
    assert status == 404 and "nosuchrun" in body


def test_a_browser_shows_an_answer_as_it_streams_as_text_and_drops_it_when_it_lands(tmp_path, page):
    db = str(tmp_path / "live.db")
    with SQLiteStore(db) as store:
        run_id = running_run(store, "5e5e000000000002", "Streams in a browser")
        store.put_partial(partial(run_id, "write-1/1", "# Event sourcing\n\n<script>window.__pwned = 1</script>"))
    with serving(create_app(db)) as url:
        page.goto(f"{url}/runs/{run_id}")
        shown = page.locator('#streaming .partial[data-call="write-1/1"]')
        shown.wait_for()
        assert "writer is answering" in shown.locator("h3").inner_text()
        assert "<script>window.__pwned = 1</script>" in shown.locator("pre").inner_text()
        with SQLiteStore(db, create=False) as store:
            store.put_partial(partial(run_id, "write-1/1", "# Event sourcing\n\nMore text, streamed later."))
        page.locator("#streaming pre", has_text="streamed later").wait_for()
        draft = "# Event sourcing\n\nMore text, streamed later. The end."
        with SQLiteStore(db, create=False) as store:
            store.append(run_id, [answer("write-1/1", "writer", "offline", draft),
                                  DraftReady(iteration=1, draft=draft, call_id="write-1/1")], 5)
            store.clear_partial(run_id, "write-1/1")
        page.locator("#streaming .partial").first.wait_for(state="detached")
        page.wait_for_selector('#timeline tr[data-seq="7"][data-type="DraftReady"]')
        with SQLiteStore(db, create=False) as store:
            store.append(run_id, [RunFinished(reason="approved", iterations=1, score=9)], 7)
        page.wait_for_selector("#summary .badge.finished")
    assert page.evaluate("window.__pwned") is None
    assert page.console_errors == []
