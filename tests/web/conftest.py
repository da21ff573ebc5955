"""Fixtures for the viewer: a database with every kind of run, the app served on 127.0.0.1,
and headless Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass

import pytest

from agentlog.web import create_app

from .builders import Runs, build_database, serving

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]
# CI sets this so that a missing browser fails the build instead of skipping its tests.
REQUIRE_BROWSER = os.environ.get("AGENTLOG_REQUIRE_BROWSER") == "1"


@dataclass(frozen=True)
class Viewer:
    url: str
    db: str
    runs: Runs


@pytest.fixture(scope="session")
def viewer(tmp_path_factory: pytest.TempPathFactory):
    db = str(tmp_path_factory.mktemp("viewer") / "log.db")
    runs = build_database(db)
    with serving(create_app(db)) as url:
        yield Viewer(url, db, runs)


# No proxy, ever: the tests talk to 127.0.0.1 only.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """(status, headers, body) of a request, errors included."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read().decode()


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


# Module scope: Playwright's sync API keeps an event loop running in this thread while it
# is started, which would break any later test that calls asyncio.run().
@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors (a CSP violation shows up there)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    tab.console_errors = []
    tab.on("console", lambda msg: tab.console_errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: tab.console_errors.append(str(exc)))
    yield tab
    context.close()
