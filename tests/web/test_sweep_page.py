"""The viewer's sweep pages: plain HTTP for content and escaping, Chromium for what a person sees."""

from __future__ import annotations

import re
from html import escape

import pytest

from agentlog.web import create_app

from .builders import SWEEP_XSS_LABEL, build_sweep_database, serving
from .conftest import fetch


@pytest.fixture(scope="module")
def sweep_viewer(tmp_path_factory: pytest.TempPathFactory):
    db = str(tmp_path_factory.mktemp("sweep-viewer") / "log.db")
    sweep_id, parents = build_sweep_database(db)
    with serving(create_app(db)) as url:
        yield url, sweep_id, parents


def test_sweeps_page_lists_the_sweep(sweep_viewer):
    url, sweep_id, _ = sweep_viewer
    status, _, body = fetch(f"{url}/sweeps")
    assert status == 200
    assert re.findall(r'<tr class="sweep" data-sweep-id="([^"]+)"', body) == [sweep_id]
    assert "<td class=\"num\">12/12</td>" in body and 'href="/sweeps"' in body


def test_sweep_page_shows_the_comparison_charts_and_runs(sweep_viewer):
    url, sweep_id, parents = sweep_viewer
    status, headers, body = fetch(f"{url}/sweeps/{sweep_id[:5]}")  # a prefix is enough
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    assert "paired: every variant forked from the same 4 parent run(s) at the same branch point (review-1)" in body
    variants = re.findall(r'<tr class="variant" data-variant="([^"]+)"', body)
    assert variants == ["reviewer=gpt-4o-mini", "reviewer=gpt-4o", escape(SWEEP_XSS_LABEL)]
    assert SWEEP_XSS_LABEL not in body  # a variant's name is the user's text: escaped everywhere
    same = body.split('data-variant="reviewer=gpt-4o-mini"')[1].split("</tr>")[0]
    assert "+0.00" in same and "$0.0000" in same  # the unchanged reviewer reused everything: free
    # One dot per run in the distribution, one per scored run against cost, one fork dot per member.
    assert body.count('<circle class="dot"') == 12
    assert body.count('<circle class="run"') == 12
    assert body.count('<circle class="fork"') == 12 and body.count('<circle class="parent"') == 4
    assert body.count('<tr class="member"') == 12
    for parent in parents:
        assert f'href="/runs/{parent}"' in body
    assert "cost spent (USD)" in body  # every model has a default price


def test_an_unknown_sweep_is_404(sweep_viewer):
    url, _, _ = sweep_viewer
    status, _, body = fetch(f"{url}/sweeps/ffffffff")
    assert status == 404 and "no sweep" in body


def test_sweep_page_in_chromium(sweep_viewer, browser):
    url, sweep_id, _ = sweep_viewer
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{url}/sweeps")
    page.click(f'tr.sweep[data-sweep-id="{sweep_id}"] a')
    page.wait_for_selector("#comparison table.comparison", timeout=10_000)
    assert page.locator("tr.variant").count() == 3
    for chart in ("svg.distribution", "svg.cost-score", "svg.score-change"):
        box = page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100, chart
    assert page.locator("svg.distribution circle.dot").count() == 12
    page.locator("tr.member a.run-link").first.click()
    page.wait_for_selector(".run-page", timeout=10_000)
    assert "member of sweep" in page.content()
    assert page.evaluate("window.__pwned") is None
    assert errors == []
    page.close()
