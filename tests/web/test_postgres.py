"""The viewer over a PostgreSQL log: the same pages as over SQLite, a live page woken by
NOTIFY, and the URL's password nowhere. A real cluster (tests/postgres.py), never a mock."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import threading
import time
import urllib.request

import pytest

from agentlog.events import RunFinished
from agentlog.store import copy_log, open_store, redact
from agentlog.store.aio_postgres import AsyncPostgresStore
from agentlog.web import create_app
from tests.conftest import PYTHON, cli_env
from tests.postgres import free_port

from .builders import build_database, request, serving
from .conftest import fetch

TIMEOUT = 30
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def logs(tmp_path_factory, postgres_cluster):
    """The viewer's database of every kind of run, in SQLite and copied into PostgreSQL."""
    db = str(tmp_path_factory.mktemp("viewer-pg") / "log.db")
    runs = build_database(db)
    name = postgres_cluster.database()
    url = postgres_cluster.url(name)
    with open_store(db, create=False, read_only=True) as src, open_store(url) as dst:
        copy_log(src, dst)
    yield db, url, runs
    postgres_cluster.drop(name)


def test_every_page_over_postgres_is_the_page_over_sqlite(logs, postgres_cluster):
    db, url, runs = logs
    paths = ["/", "/?q=wal", "/?q=WAL&status=finished", "/?status=failed", f"/runs/{runs.finished[:6]}",
             f"/runs/{runs.fork}", f"/runs/{runs.rereview}", f"/runs/{runs.failed}", f"/runs/{runs.running}",
             f"/runs/{runs.xss}", f"/runs/{runs.running}/events?after=2",
             f"/compare?a={runs.finished}&b={runs.fork}", "/sweeps", "/runs/nosuchrun"]
    with serving(create_app(db, read_only=True)) as lite, serving(create_app(url, read_only=True)) as pg:
        for path in paths:
            s_status, _, s_body = fetch(lite + path)
            p_status, _, p_body = fetch(pg + path)
            assert p_status == s_status, path
            assert p_body.replace(redact(url), "LOG") == s_body.replace(db, "LOG"), path
            assert postgres_cluster.password not in p_body
    assert "***@127.0.0.1" in p_body  # the header names the log without its password


def sse(url: str, into: queue.Queue) -> None:
    """Every (event, data) of the stream at ``url``, into ``into``; ``None`` when it ends."""
    with _opener.open(url, timeout=TIMEOUT) as resp:
        name, data = "message", ""
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
            elif not line and data:
                into.put((name, data))
                name, data = "message", ""
    into.put(None)


def test_the_live_stream_says_when_events_are_appended_and_ends_with_the_run(pg_url):
    with open_store(pg_url) as store:
        store.append("1ive000000000001", build_running(), 0)
        with serving(create_app(pg_url, read_only=True)) as url:
            got: queue.Queue = queue.Queue()
            reader = threading.Thread(target=sse, args=(f"{url}/runs/1ive/stream", got), daemon=True)
            reader.start()
            assert got.get(timeout=TIMEOUT) == ("partials", "[]")
            store.append("1ive000000000001", [request("write-1/2", "writer", "write-1", "offline")], 5)
            assert got.get(timeout=TIMEOUT) == ("appended", json.dumps({"last_seq": 6}))
            store.append("1ive000000000001", [RunFinished(reason="approved", iterations=1, score=9)], 6)
            assert got.get(timeout=TIMEOUT) == ("appended", json.dumps({"last_seq": 7}))
            assert got.get(timeout=TIMEOUT)[0] == "end"
            reader.join(TIMEOUT)


def build_running() -> list:
    from agentlog.store import SQLiteStore

    from .builders import running_run

    with SQLiteStore(":memory:") as scratch:
        running_run(scratch, "x", "A run on PostgreSQL")
        return scratch.events("x")


def test_a_viewer_wait_ends_at_the_run_s_append_not_another_s(pg_url):
    async def scenario() -> tuple[float, float]:
        with open_store(pg_url) as store:
            viewer = await AsyncPostgresStore.open(pg_url)
            try:
                await viewer.wait_for_append("warm", 0.01)  # the listener connects
                start = time.monotonic()
                other = asyncio.get_running_loop().run_in_executor(
                    None, lambda: store.append("other", build_running(), 0))
                await viewer.wait_for_append("mine", 1.0)  # another run's append does not end it
                await other
                waited_other = time.monotonic() - start
                start = time.monotonic()
                mine = asyncio.get_running_loop().run_in_executor(
                    None, lambda: store.append("mine", build_running(), 0))
                await viewer.wait_for_append("mine", TIMEOUT)
                await mine
                return waited_other, time.monotonic() - start
            finally:
                await viewer.close()

    waited_other, waited_mine = asyncio.run(scenario())
    assert waited_other >= 1.0
    assert waited_mine < TIMEOUT / 2  # woken by the append's NOTIFY, not by the timeout


def test_serve_over_postgres_shows_the_url_without_its_password(pg_url, postgres_cluster):
    with open_store(pg_url) as store:
        store.append("5e7e000000000001", build_running(), 0)
    proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "serve", "--db", pg_url, "--port", str(free_port()),
                             "--read-only"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert "agentlog viewer:" in line and redact(pg_url) in line
    assert postgres_cluster.password not in line + out + err
