"""Take the screenshots in docs/img/ (``python -m tests.web.screenshots``); needs Playwright
and /usr/bin/chromium, like the browser tests."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from agentlog.actors import agent_configs, start_run
from agentlog.store import SQLiteStore
from agentlog.web import create_app

from .builders import build_database, build_sweep_database, serving
from .conftest import CHROMIUM, CHROMIUM_ARGS

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "log.db")
        runs = build_database(db)
        with serving(create_app(db)) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            shots = {
                "viewer-runs.png": ("/", None),
                "viewer-run.png": (f"/runs/{runs.fork}", None),
                "viewer-run-timeline.png": (f"/runs/{runs.fork}", "#timeline"),
                "viewer-running.png": (f"/runs/{runs.running}", None),
                "viewer-compare.png": (f"/compare?a={runs.finished}&b={runs.fork}", None),
            }
            for name, (path, selector) in shots.items():
                page.goto(url + path)
                if selector:
                    page.locator(selector).screenshot(path=str(OUT / name))
                else:
                    page.screenshot(path=str(OUT / name), full_page=True)
                print(OUT / name, file=sys.stderr)
            sweep_db = str(Path(tmp) / "sweep.db")
            sweep_id, _ = build_sweep_database(sweep_db, harsh_label="reviewer=o4-mini")
            with serving(create_app(sweep_db)) as sweep_url:
                page.goto(f"{sweep_url}/sweeps/{sweep_id}")
                page.screenshot(path=str(OUT / "viewer-sweep.png"), full_page=True)
                print(OUT / "viewer-sweep.png", file=sys.stderr)
            browser.close()


def decision_screenshot(page, db: Path) -> None:
    """A run waiting for a person, as its page offers the three decisions (docs/human.md)."""
    with SQLiteStore(db) as store:
        run_id = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline"), max_iterations=2,
                           approval="final").wait(timeout=30).run_id
    with serving(create_app(str(db))) as url:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.goto(f"{url}/runs/{run_id}")
        page.fill("#reject-form textarea[name=note]", "Say when a checkpoint copies the WAL back.")
        page.screenshot(path=str(OUT / "viewer-decision.png"))
        print(OUT / "viewer-decision.png", file=sys.stderr)


if __name__ == "__main__":
    main()
