"""A person's decision from the browser: the viewer's one write path, end to end.

A real run against the fake chat-completions server waits for a person; headless Chromium
sends it back with a note (the writer's next request carries it, as the server saw it) and
then approves it (the run finishes). Around that: the token, Origin and read-only guards.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse

import pytest

from agentlog.actors import agent_configs, start_run
from agentlog.models import Endpoint, Gateway, RetryPolicy
from agentlog.replay.approval import default_decider
from agentlog.store import SQLiteStore
from agentlog.web import create_app
from tests.conftest import SECRET
from tests.fake_openai import FakeOpenAIServer

from .builders import serving
from .conftest import fetch

MODEL = "fake-model"
NOTE = "Explain what a checkpoint does, with one concrete example."
WRITER = "clear technical writer"


@pytest.fixture
def fake():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def gateway(fake):
    g = Gateway(Endpoint(base_url=fake.base_url, api_key=SECRET),
                retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.05), timeout=5.0)
    yield g
    g.close()


def waiting_run(db: str, gateway: Gateway, **kw) -> str:
    """A run that went as far as it can without a person: one draft, reviewed, waiting."""
    with SQLiteStore(db) as store:
        summary = start_run(store, "Explain SQLite WAL mode", agents=agent_configs(MODEL), gateway=gateway,
                            max_iterations=1, approval="final", **kw).wait(timeout=30)
    assert summary.status == "waiting"
    return summary.run_id


def writer_requests(fake: FakeOpenAIServer) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in fake.requests
            if WRITER in r["body"]["messages"][0]["content"]]


def form_fields(html: str, form_id: str) -> dict[str, str]:
    form = re.search(rf'<form id="{form_id}"(.*?)</form>', html, re.S)
    assert form, f"no {form_id} on the page"
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))


def post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None):
    import urllib.request

    from .conftest import _opener

    req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    try:
        with _opener.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_browser_rejects_with_a_note_then_approves_and_the_run_finishes(tmp_path, fake, gateway, page):
    db = str(tmp_path / "log.db")
    run_id = waiting_run(db, gateway)
    app = create_app(db, gateway=gateway)
    with serving(app) as url:
        page.goto(url + "/?status=waiting")
        assert page.locator("table.runs tbody tr.run").evaluate_all("rows => rows.map(r => r.dataset.runId)") \
            == [run_id]
        page.click(f'tr[data-run-id="{run_id}"] a.run-link')
        page.wait_for_url(f"**/runs/{run_id}")
        assert "draft 1" in page.locator("#decision h2").inner_text()
        draft_1 = page.locator("#draft-1 pre.draft").inner_text()
        assert page.locator("#edit-form textarea[name=draft]").input_value() == draft_1  # prefilled

        asked = len(writer_requests(fake))
        page.fill("#reject-form textarea[name=note]", NOTE)
        page.fill("#reject-form input[name=by]", "Ada")
        page.click("#reject-form button[type=submit]")
        # The run goes on in the server: a revision and its review, then it waits again (the
        # live page reloads to show the form for draft 2).
        page.wait_for_selector('#decision[data-iteration="2"]', timeout=20_000)
        sent = writer_requests(fake)
        assert len(sent) == asked + 1 and NOTE in sent[-1]
        assert sent[-1].index(NOTE) < sent[-1].index("## Review to address")  # the note comes first
        assert "Ada" in page.locator("#timeline").inner_text()

        page.click("#approve-form button[type=submit]")
        page.wait_for_selector("#summary .badge.finished", timeout=20_000)
        assert page.locator("#decision").count() == 0
        assert page.console_errors == []
        assert app.state.decisions.wait_all(10)
    with SQLiteStore(db, create=False) as store:
        summary = store.get_run(run_id)
        decided = [s.event for s in store.read(run_id) if s.type == "ApprovalDecided"]
    assert summary.status == "finished" and summary.iterations == 2
    # The approve form's name field was left as prefilled: the server's operating-system user.
    assert [(d.decision, d.by, d.note) for d in decided] == [("reject", "Ada", NOTE),
                                                              ("approve", default_decider(), "")]


def test_an_edit_posted_with_the_pages_token_becomes_the_final_draft(tmp_path, gateway):
    db = str(tmp_path / "log.db")
    run_id = waiting_run(db, gateway)
    app = create_app(db, gateway=gateway)
    with serving(app) as url:
        status, _, html = fetch(f"{url}/runs/{run_id}")
        fields = form_fields(html, "edit-form")
        mine = "# WAL, by a person\r\n\r\nMy own words."
        status, body = post(f"{url}/runs/{run_id}/decision", fields | {"draft": mine, "by": "Grace"})
        assert status == 200 and f"Run {run_id}" in body  # followed the redirect to the run page
        assert app.state.decisions.wait_all(10)
        # The same page's token again: the run moved on, so the decision is refused.
        status, body = post(f"{url}/runs/{run_id}/decision", fields | {"decision": "approve"})
        assert status == 409 and "not waiting for a person" in body
    with SQLiteStore(db, create=False) as store:
        summary = store.get_run(run_id)
        drafts = [s.event for s in store.read(run_id) if s.type == "DraftReady"]
    assert summary.status == "finished"
    assert drafts[-1].draft == "# WAL, by a person\n\nMy own words."


def test_decisions_need_the_pages_token_and_this_origin(tmp_path, gateway):
    db = str(tmp_path / "log.db")
    run_id = waiting_run(db, gateway)
    other = waiting_run(db, gateway)
    with serving(create_app(db, gateway=gateway)) as url:
        _, _, html = fetch(f"{url}/runs/{run_id}")
        fields = form_fields(html, "approve-form")
        target = f"{url}/runs/{run_id}/decision"
        assert post(target, {k: v for k, v in fields.items() if k != "token"})[0] == 403
        assert post(target, fields | {"token": "0" * 64})[0] == 403
        assert post(target, fields | {"seq": str(int(fields["seq"]) - 1)})[0] == 403
        assert post(f"{url}/runs/{other}/decision", fields)[0] == 403  # a token is good for its run only
        assert post(target, fields, {"Origin": "http://evil.example"})[0] == 403
        assert post(target, fields, {"Origin": "null"})[0] == 403
        assert post(target, fields | {"decision": "reject", "note": "  "})[0] == 400
        assert fetch(target)[0] == 405  # GET never decides
        with SQLiteStore(db, create=False) as store:
            assert store.get_run(run_id).status == "waiting"
        status, body = post(target, fields, {"Origin": url})
        assert status == 200
    with SQLiteStore(db, create=False) as store:
        assert store.get_run(run_id).status == "finished" and store.get_run(other).status == "waiting"


def test_read_only_viewer_offers_no_forms_and_no_post_route(tmp_path, gateway):
    db = str(tmp_path / "log.db")
    run_id = waiting_run(db, gateway)
    with serving(create_app(db, read_only=True)) as url:
        status, _, html = fetch(f"{url}/runs/{run_id}")
        assert status == 200 and "Waiting for a person" in html
        assert "<form" not in html.split('id="decision"')[1].split("</section>")[0]
        assert f"agentlog approve {run_id}" in html
        assert post(f"{url}/runs/{run_id}/decision", {"decision": "approve"})[0] in (404, 405)
    with SQLiteStore(db, create=False) as store:
        assert store.get_run(run_id).status == "waiting"


def test_without_a_gateway_the_decision_is_recorded_and_resume_continues(tmp_path, gateway):
    db = str(tmp_path / "log.db")
    run_id = waiting_run(db, gateway)
    with serving(create_app(db)) as url:
        _, _, html = fetch(f"{url}/runs/{run_id}")
        status, body = post(f"{url}/runs/{run_id}/decision", form_fields(html, "approve-form"))
        assert status == 200 and "Decision recorded" in body and f"agentlog resume {run_id}" in body
    with SQLiteStore(db, create=False) as store:
        assert store.get_run(run_id).status == "running"
        assert [s.type for s in store.read(run_id)][-1] == "ApprovalDecided"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(db: str, *flags: str):
    """``agentlog serve`` in a subprocess; returns it and its URL once it printed that it listens."""
    import queue
    import subprocess
    import threading

    from tests.conftest import PYTHON, cli_env

    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "serve", "--db", db, "--port", str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    proc.reader = reader  # joined by stop(), before the pipe is closed
    first = lines.get(timeout=20)
    assert first.startswith("agentlog viewer: http://127.0.0.1:"), first + proc.stderr.read()
    url = f"http://127.0.0.1:{port}"
    # The banner comes just before uvicorn binds: poll the port, boundedly.
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
    return proc, url, first


def stop(proc) -> None:
    proc.terminate()
    proc.wait(10)
    proc.reader.join(10)
    proc.stdout.close()
    proc.stderr.close()


def test_agentlog_serve_continues_a_decided_run_and_read_only_does_not_offer_decisions(tmp_path):
    db = str(tmp_path / "log.db")
    with SQLiteStore(db) as store:
        run_id = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline"), max_iterations=1,
                           approval="final").wait(timeout=30).run_id
    proc, url, banner = serve_process(db, "--read-only")
    try:
        assert "reading" in banner and "decisions" not in banner
        _, _, html = fetch(f"{url}/runs/{run_id}")
        assert "Waiting for a person" in html and "<form id=" not in html
        assert post(f"{url}/runs/{run_id}/decision", {"decision": "approve"})[0] in (404, 405)
    finally:
        stop(proc)
    proc, url, banner = serve_process(db)
    try:
        assert "recording decisions" in banner
        _, _, html = fetch(f"{url}/runs/{run_id}")
        status, _ = post(f"{url}/runs/{run_id}/decision", form_fields(html, "approve-form"))
        assert status == 200
        with SQLiteStore(db, create=False) as store:
            # The run goes on in the server's thread: wait for its end, boundedly, through the log.
            deadline = time.monotonic() + 20
            while store.get_run(run_id).status != "finished":
                assert time.monotonic() < deadline, store.get_run(run_id)
                time.sleep(0.05)
    finally:
        stop(proc)


def test_a_decision_on_a_run_of_an_unknown_pipeline_is_refused_in_one_line(tmp_path):
    from agentlog.events import ApprovalRequested, RunStarted

    db = str(tmp_path / "log.db")
    with SQLiteStore(db) as store:
        store.append("0dd0000000000001", [
            RunStarted(task="t", pipeline="someone-elses", agents={}, max_iterations=1, threshold=8),
            ApprovalRequested(iteration=1, point="final"),
        ], 0)
    with serving(create_app(db)) as url:
        status, _, html = fetch(f"{url}/runs/0dd0000000000001")
        assert status == 200
        status, body = post(f"{url}/runs/0dd0000000000001/decision", form_fields(html, "approve-form"))
        assert status == 400 and "unknown pipeline &#x27;someone-elses&#x27;" in body
