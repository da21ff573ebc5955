"""The viewer over plain HTTP (real uvicorn on 127.0.0.1, urllib): pages, headers, escaping,
read-only access, and speed over a log of 10,000 runs."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import json
import re
import time
from pathlib import Path

import pytest

from agentlog.store import SchemaError, SQLiteStore
from agentlog.web import create_app

from tests.damage import DAMAGES, damage_event

from .builders import FORK_LINE, build_many, serving
from .conftest import fetch


def run_ids(body: str) -> list[str]:
    return re.findall(r'<tr class="run" data-run-id="([^"]+)"', body)


def test_runs_page_lists_every_run_newest_first(viewer):
    status, headers, body = fetch(viewer.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    r = viewer.runs
    ids = run_ids(body)
    assert set(ids) == {r.finished, r.fork, r.rereview, r.failed, r.running, r.xss}
    assert ids[0] == r.xss  # built last
    assert "6 runs" in body


@pytest.mark.parametrize("query, expected", [
    ("status=failed", {"failed"}),
    ("status=running", {"running"}),
    ("q=raft", {"failed"}),
    ("q=WAL&status=finished", {"finished", "fork", "rereview"}),
    ("status=nonsense", {"finished", "fork", "rereview", "failed", "running", "xss"}),
])
def test_runs_page_filters(viewer, query, expected):
    _, _, body = fetch(f"{viewer.url}/?{query}")
    assert set(run_ids(body)) == {getattr(viewer.runs, name) for name in expected}


def test_security_headers_on_every_response(viewer):
    for path in ("/", f"/runs/{viewer.runs.finished}", "/nowhere", "/static/viewer.js"):
        _, headers, _ = fetch(viewer.url + path)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_no_inline_script_or_style_in_pages(viewer):
    for path in ("/", f"/runs/{viewer.runs.fork}", f"/compare?a={viewer.runs.finished}&b={viewer.runs.fork}"):
        _, _, body = fetch(viewer.url + path)
        assert re.findall(r"<script[^>]*>", body) == ['<script src="/static/viewer.js" defer>']
        assert " style=" not in body and "<style" not in body


def test_model_and_user_text_is_escaped(viewer):
    _, _, body = fetch(f"{viewer.url}/runs/{viewer.runs.xss}")
    assert "window.__pwned" in body  # shown ...
    assert "<script>window" not in body and "<img src" not in body and "<b>bold" not in body  # ... as text
    assert "&lt;script&gt;window.__pwned = &quot;script&quot;&lt;/script&gt;" in body
    assert 'href="javascript:' not in body


def test_run_page_shows_timeline_drafts_reviews_chart_and_lineage(viewer):
    r = viewer.runs
    _, _, body = fetch(f"{viewer.url}/runs/{r.fork}")
    assert body.count('<tr class="event') == r.fork_seq + 10
    assert body.count('<tr class="event copied"') == r.fork_seq
    assert 'data-type="RunForked"' in body and "offline-creative" in body
    assert '<span class="badge reused">reused</span>' in body and '<span class="badge live">live</span>' in body
    assert f'<span class="add">+{FORK_LINE}</span>' in body
    assert body.count('<circle class="point"') == 2
    assert f"forked at event {r.fork_seq}" in body and f'href="/runs/{r.finished}"' in body
    assert "data-live-url" not in body  # finished: no polling


def test_run_page_shows_cost_spent_and_saved_and_unknown_prices(viewer, tmp_path):
    r = viewer.runs
    _, _, body = fetch(f"{viewer.url}/runs/{r.finished}")
    assert '<dt>cost</dt><dd>$0.0000</dd>' in body  # the offline model costs nothing
    # The fork's writer ran on a model with no price: unknown, never $0.
    _, _, body = fetch(f"{viewer.url}/runs/{r.fork}")
    assert '<dt>cost</dt><dd>unknown (no price for offline-creative)</dd>' in body
    # With a price for it (as the config file's [prices] table gives `agentlog serve`): $ per token.
    from agentlog.models.prices import Price, PriceTable

    with serving(create_app(viewer.db, prices=PriceTable({"offline-creative": Price(1e6, 1e6)}))) as url:
        _, _, body = fetch(f"{url}/runs/{r.fork}")
    assert '<dt>cost</dt><dd>$900.0000</dd>' in body  # the one live call: 900 tokens at $1 each


def test_run_page_lists_forks_and_rereviews_of_a_run(viewer):
    r = viewer.runs
    _, _, body = fetch(f"{viewer.url}/runs/{r.finished}")
    children = body.split('<ul class="children">')[1].split("</ul>")[0]
    assert r.fork in children and r.rereview in children and "re-review" in children


def test_run_prefix_resolves_and_unknown_run_is_404(viewer):
    status, _, body = fetch(f"{viewer.url}/runs/{viewer.runs.failed[:6]}")
    assert status == 200 and "rate limited after 2 attempts" in body
    status, _, body = fetch(f"{viewer.url}/runs/nosuchrun")
    assert status == 404 and "no run" in body


def test_events_endpoint_returns_only_newer_events(viewer):
    r = viewer.runs
    status, _, body = fetch(f"{viewer.url}/runs/{r.running}/events?after=3")
    data = json.loads(body)
    assert status == 200 and data["status"] == "running" and data["last_seq"] == 5
    assert re.findall(r'data-seq="(\d+)"', data["rows"]) == ["4", "5"]
    data = json.loads(fetch(f"{viewer.url}/runs/{r.running}/events?after=5")[2])
    assert data["rows"] == "" and data["sections"] == {}
    assert fetch(f"{viewer.url}/runs/{r.running}/events?after=x")[0] == 400


def test_compare_page_shows_config_scores_and_final_drafts(viewer):
    r = viewer.runs
    _, _, body = fetch(f"{viewer.url}/compare?a={r.finished}&b={r.fork}")
    assert f"was forked from {r.finished} at event {r.fork_seq}" in body
    differs = re.findall(r'<tr class="differs"><td><code>([^<]+)</code>', body)
    assert differs == ["writer.model", "writer.temperature", "threshold"]
    assert "event " in body and "writer: model=offline-creative, temperature=0.9" in body
    assert body.count('<circle class="point"') == 3 + 2
    assert f'<span class="add">+{FORK_LINE}</span>' in body
    _, _, body = fetch(f"{viewer.url}/compare?a={r.finished}&b={r.rereview}")
    assert "re-reviews the drafts of" in body
    assert re.findall(r'<tr class="differs"><td><code>([^<]+)</code>', body)[:2] == [
        "researcher.model", "researcher.temperature"]


def test_compare_with_unknown_run_says_so(viewer):
    status, _, body = fetch(f"{viewer.url}/compare?a={viewer.runs.finished}&b=zzz")
    assert status == 404 and "no run &#x27;zzz&#x27;" in body


def test_viewer_is_read_only(viewer):
    status, _, _ = fetch(viewer.url + "/", method="POST")
    assert status == 405
    with SQLiteStore(viewer.db, create=False) as store:
        assert store.count_runs() == 6


def test_other_host_names_are_refused(viewer):
    status, _, _ = fetch(viewer.url + "/", headers={"Host": "evil.example:80"})
    assert status == 400


def test_missing_empty_or_foreign_database_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.db"
    with pytest.raises(SchemaError, match="no agentlog database at"):
        create_app(str(missing))
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(SchemaError, match="is empty"):
        create_app(str(empty))
    assert empty.stat().st_size == 0
    # serve() opens the file before uvicorn starts, so a foreign file is one SchemaError.
    text = tmp_path / "notes.txt"
    text.write_text("not a database, but long enough to have a header " * 10)
    code = ("from agentlog.store import SchemaError\nfrom agentlog.web import serve\n"
            f"try:\n    serve({str(text)!r})\nexcept SchemaError as exc:\n    print('refused:', exc)")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.startswith("refused:") and "not an agentlog database" in done.stdout, done.stderr


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory):
    db = str(tmp_path_factory.mktemp("big") / "big.db")
    build_many(db, 10_000)
    digest = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    with serving(create_app(db)) as url:
        yield url
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == digest, "the viewer changed the database"


def test_runs_page_is_paginated_and_fast_over_10000_runs(big_log):
    for query, first, total in [("", "bulk000000009999", "10,000 runs"), ("page=200", "bulk000000000049", ""),
                                ("q=number+12", "bulk000000001299", "111 runs")]:
        start = time.perf_counter()
        status, _, body = fetch(f"{big_log}/?{query}")
        elapsed = time.perf_counter() - start
        assert status == 200 and elapsed < 1.0, f"{query!r} took {elapsed:.2f}s"
        ids = run_ids(body)
        assert ids[0] == first and len(ids) <= 50
        assert total in body
    _, _, body = fetch(f"{big_log}/?page=2")
    assert run_ids(body)[0] == "bulk000000009949" and "page 2 of 200" in body
    assert 'rel="prev"' in body and 'rel="next"' in body


def test_serve_prints_its_url_and_serves_on_loopback(viewer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from agentlog.web import serve; serve({viewer.db!r}, port={port})"
    proc = subprocess.Popen([sys.executable, "-W", "error", "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"agentlog viewer: http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 10
        while True:  # the URL is printed just before uvicorn binds
            try:
                status, _, body = fetch(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert time.monotonic() < deadline, "serve() did not start listening"
                time.sleep(0.05)
        assert status == 200 and viewer.runs.finished in body
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_event_is_marked_and_the_readable_part_shown(tmp_path: Path, kind: str):
    from agentlog.actors.runtime import agent_configs, run

    db = str(tmp_path / "log.db")
    with SQLiteStore(db) as store:
        damaged = run(store, "Explain SQLite WAL mode", agents=agent_configs("offline")).run_id
        other = run(store, "Compare B-trees and LSM trees", agents=agent_configs("offline")).run_id
        last = store.last_seq(damaged)
    damage_event(db, damaged, 7, kind)
    with serving(create_app(db)) as url:
        status, _, body = fetch(f"{url}/runs/{damaged}")
        assert status == 200
        assert re.findall(r'<tr class="event[^"]*" data-seq="(\d+)"', body) == [str(n) for n in range(1, 8)]
        assert '<tr class="event damaged" data-seq="7"' in body and "Event 7 cannot be read" in body
        assert "data-live-url" not in body  # nothing after the damage can be shown, so no polling for it
        status, _, text = fetch(f"{url}/runs/{damaged}/events?after=5")
        answer = json.loads(text)
        assert status == 200 and answer["last_seq"] == 7
        assert re.findall(r'data-seq="(\d+)"', answer["rows"]) == ["6", "7"]
        status, _, body = fetch(f"{url}/compare?a={damaged}&b={other}")
        assert status == 200
        status, _, body = fetch(f"{url}/runs/{other}")
        assert status == 200 and 'class="event damaged"' not in body and f'data-seq="{last}"' in body
        status, _, body = fetch(f"{url}/")
        assert status == 200 and damaged in body and other in body


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.2", "::1", "localhost"])
def test_bound_to_any_loopback_address_a_foreign_host_is_refused(viewer, host):
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = "127.0.0.1" if host == "localhost" else host
    with socket.socket(family) as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    shown = f"[{address}]" if ":" in address else address
    proc = subprocess.Popen([sys.executable, "-W", "error", "-m", "agentlog.cli", "serve", "--db", viewer.db,
                             "--host", host, "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().startswith("agentlog viewer: http://")
        url = f"http://{shown}:{port}/"
        deadline = time.monotonic() + 10
        while True:  # the socket listens before the URL is printed; uvicorn serves it soon after
            try:
                status, _, body = fetch(url)
                break
            except OSError:
                assert time.monotonic() < deadline, "the viewer did not answer"
                time.sleep(0.05)
        assert status == 200 and viewer.runs.finished in body
        for foreign in ("evil.example", f"evil.example:{port}", "attacker.test.", "127.0.0.1.evil.example"):
            assert fetch(url, headers={"Host": foreign})[0] == 400, foreign
        assert fetch(url, headers={"Host": f"localhost:{port}"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_bound_to_another_interface_every_host_name_is_answered():
    from agentlog.web import allowed_hosts_for

    assert allowed_hosts_for("0.0.0.0") == ("*",)
    assert "*" not in allowed_hosts_for("127.0.0.2") and "127.0.0.2" in allowed_hosts_for("127.0.0.2")
    assert "[::1]" in allowed_hosts_for("::1") and "*" not in allowed_hosts_for("[::1]")
