"""What a person sees in a real browser: headless Chromium driven by Playwright."""

from __future__ import annotations

from agentlog.events import DraftReady, ReviewScored, RunFinished
from agentlog.store import SQLiteStore
from agentlog.web import create_app

from .builders import FORK_LINE, XSS_DRAFT, answer, review, running_run, serving


def visible_run_ids(page) -> list[str]:
    return page.locator("table.runs tbody tr.run").evaluate_all("rows => rows.map(r => r.dataset.runId)")


def test_runs_page_rows_and_filters(viewer, page):
    r = viewer.runs
    page.goto(viewer.url + "/")
    assert len(visible_run_ids(page)) == 6
    assert page.locator(f'tr[data-run-id="{r.fork}"] td').nth(9).inner_text() == f"event {r.fork_seq}"
    page.select_option("select[name=status]", "failed")
    page.click("button[type=submit]")
    page.wait_for_url("**/?status=failed**")
    assert visible_run_ids(page) == [r.failed]
    assert "rate_limit" not in page.content()  # the runs page shows rows, not events
    page.fill("input[name=q]", "WAL")
    page.select_option("select[name=status]", "")
    page.click("button[type=submit]")
    page.wait_for_url("**q=WAL**")
    assert set(visible_run_ids(page)) == {r.finished, r.fork, r.rereview}
    page.click(f'tr[data-run-id="{r.fork}"] a.run-link')
    page.wait_for_url(f"**/runs/{r.fork}")
    assert page.locator("h1").inner_text() == f"Run {r.fork}"
    assert page.console_errors == []


def test_run_page_chart_diff_and_timeline(viewer, page):
    r = viewer.runs
    page.goto(f"{viewer.url}/runs/{r.finished}")
    points = page.locator("#scores svg.chart circle.point")
    assert points.count() == 3
    assert [points.nth(i).get_attribute("data-score") for i in range(3)] == ["6", "7", "8"]
    ys = [float(points.nth(i).get_attribute("cy")) for i in range(3)]
    assert ys[0] > ys[1] > ys[2]  # a rising score is drawn rising
    assert page.locator("#scores svg.chart").bounding_box()["height"] > 100
    assert page.locator("#timeline tbody tr").count() == 23
    assert page.locator("#drafts article.draft").count() == 3
    assert page.locator("#reviews article.review.approved").count() == 1
    assert "issue 1: the draft could be more specific." in page.locator("#reviews").inner_text()

    page.goto(f"{viewer.url}/runs/{r.fork}")
    added = page.locator("#draft-2 pre.diff span.add")
    assert FORK_LINE in added.all_inner_texts()[-1]
    assert added.first.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
    reused = page.locator('#timeline tr[data-type="LLMCallAnswered"] .badge.reused')
    assert reused.count() == 1
    assert page.locator("#timeline tr.event.copied").count() == r.fork_seq
    assert f"forked at event {r.fork_seq}" in page.locator("#lineage").inner_text()
    page.click("#lineage a:text('compare with parent')")
    page.wait_for_url("**/compare?**")
    assert page.locator("#config tr.differs").count() == 3
    assert page.locator("#scores svg circle.point").count() == 5
    assert FORK_LINE in page.locator("#final-drafts pre.diff span.add").all_inner_texts()[-1]
    assert page.console_errors == []


def test_injected_script_in_a_draft_does_not_run(viewer, page):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{viewer.url}/runs/{viewer.runs.xss}")
    page.wait_for_load_state("load")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#drafts img, #reviews img, #findings b, #findings i").count() == 0
    assert page.locator("#draft-1 pre.draft").inner_text() == XSS_DRAFT
    assert '<img src=x onerror="window.__pwned=\'review\'">' in page.locator("#reviews").inner_text()
    assert page.locator("p.task").inner_text().startswith('<script>window.__pwned = "task"</script>')
    assert dialogs == []
    assert page.console_errors == []


def test_live_run_shows_new_events_without_reload(tmp_path, page):
    db = str(tmp_path / "live.db")
    with SQLiteStore(db) as store:
        live = running_run(store, "11fe000000000001", "Write about event sourcing")
    with serving(create_app(db)) as url:
        page.goto(f"{url}/runs/{live}")
        watch_live_run(page, db, live)


def watch_live_run(page, db: str, live: str) -> None:
    assert page.locator("#timeline tbody tr").count() == 5
    assert page.locator("#livenote").is_visible()
    page.evaluate("window.__sameDocument = true")
    draft = "# Event sourcing\n\nA live draft, appended while the page is open."
    with SQLiteStore(db, create=False) as store:
        store.append(live, [answer("write-1/1", "writer", "offline", draft, tokens=1234),
                           DraftReady(iteration=1, draft=draft, call_id="write-1/1")], 5)
    page.wait_for_selector('#timeline tr[data-seq="7"][data-type="DraftReady"]')
    assert page.locator('#timeline tr[data-seq="6"] .badge.live').count() == 1
    assert "A live draft, appended while the page is open." in page.locator("#drafts").inner_text()
    assert page.locator("#summary .item-tokens dd").inner_text() == "1,534"

    with SQLiteStore(db, create=False) as store:
        store.append(live, [ReviewScored(iteration=1, review=review(9, True, 1), call_id="review-1/1"),
                           RunFinished(reason="approved", iterations=1, score=9)], 7)
    page.wait_for_selector("#summary .badge.finished")
    page.wait_for_selector('#timeline tr[data-seq="9"][data-type="RunFinished"]')
    assert page.locator("#scores svg circle.point").count() == 1
    assert "live updates stopped" in page.locator("#livenote").inner_text()
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.locator("#timeline tbody tr").count() == 9
    assert page.console_errors == []
