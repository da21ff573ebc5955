"""Export and import from the command line: versions that match the data, all runs or none."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from agentlog.store import SQLiteStore
from tests.test_cli import agentlog

GOLDEN = Path(__file__).parent / "golden"


def golden_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def write_as_the_v1_release_did(db: Path) -> str:
    """A log holding the v1 golden run's rows as stored by the release that wrote them (RunStarted v1)."""
    SQLiteStore(db).close()
    rows = golden_rows("v1-runstarted")
    with closing(sqlite3.connect(db)) as con, con:
        con.executemany("INSERT INTO events (run_id, seq, type, version, recorded_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                        [(r["run_id"], r["seq"], r["type"], r["version"], 1.7e9 + r["seq"], json.dumps(r["data"]))
                         for r in rows])
    with SQLiteStore(db, create=False) as store:
        store.rebuild_index()
    return rows[0]["run_id"]


def run_ids(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as con:
        return [r for (r,) in con.execute("SELECT run_id FROM runs ORDER BY run_id")]


def test_a_log_written_by_the_v1_release_exports_and_reimports(tmp_path):
    old = tmp_path / "old.db"
    run_id = write_as_the_v1_release_did(old)
    exported = agentlog("export", run_id, "--db", str(old))
    assert exported.returncode == 0, exported.stderr
    first = json.loads(exported.stdout.splitlines()[0])
    # The data is written as today's RunStarted, so it says so: version 2, agents instead of model.
    assert (first["type"], first["version"]) == ("RunStarted", 2) and "agents" in first["data"]
    assert "model" not in first["data"]
    dump = tmp_path / "run.jsonl"
    dump.write_text(exported.stdout)

    new = tmp_path / "new.db"
    imported = agentlog("import", str(dump), "--db", str(new))
    assert imported.returncode == 0, imported.stderr
    assert agentlog("verify", run_id, "--db", str(new)).returncode == 0
    again = agentlog("export", run_id, "--db", str(new))
    assert again.stdout == exported.stdout  # a round trip changes nothing


def test_show_json_also_writes_the_version_of_the_data(tmp_path):
    db = tmp_path / "old.db"
    run_id = write_as_the_v1_release_did(db)
    first = json.loads(agentlog("show", run_id, "--json", "--db", str(db)).stdout.splitlines()[0])
    assert first["version"] == 2 and "agents" in first["data"]


def test_import_of_several_runs_is_all_or_none(tmp_path):
    db = tmp_path / "log.db"
    assert agentlog("import", str(GOLDEN / "content-offline.jsonl"), "--db", str(db)).returncode == 0
    before = run_ids(db)
    # fork-offline holds a new fork and, first, its parent: the run already imported.
    result = agentlog("import", str(GOLDEN / "fork-offline.jsonl"), "--db", str(db))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"agentlog: run 74a8cb64571b4c75 already exists in {db}; nothing was imported"]
    assert run_ids(db) == before  # the fork, which is new, was not imported either


def test_import_refuses_a_run_that_does_not_start_with_run_started(tmp_path):
    rows = golden_rows("content-offline")[1:]  # the RunStarted line lost
    for seq, row in enumerate(rows, start=1):
        row["seq"] = seq
    dump = tmp_path / "headless.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = tmp_path / "log.db"
    result = agentlog("import", str(dump), "--db", str(db))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not start with RunStarted" in lines[0] and "74a8cb64571b4c75" in lines[0]
    assert not db.exists()
