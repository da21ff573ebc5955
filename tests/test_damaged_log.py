"""A damaged log, met from the command line: one line naming run and event, exit 2, other runs intact."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.damage import DAMAGES, damage_event
from tests.test_cli import TASK, agentlog

DAMAGED_SEQ = 5  # an LLMCallRequested of the writer in an offline run


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A log with two finished offline runs: (path, the run to damage, the other run)."""
    db = tmp_path_factory.mktemp("pristine") / "log.db"
    for task in (TASK, "Explain SQLite WAL mode"):
        result = agentlog("run", task, "--model", "offline", "--db", str(db), "-q")
        assert result.returncode == 0, result.stderr
    runs = json.loads(agentlog("runs", "--db", str(db), "--json").stdout)
    return db, runs[1]["run_id"], runs[0]["run_id"]


@pytest.fixture
def damaged(pristine, tmp_path):
    """A copy of the pristine log; returns (path, damaged run, other run, damage it)."""
    source, run_id, other = pristine
    db = tmp_path / "log.db"
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(db)) as dst:
        src.backup(dst)  # the write-ahead file's events too, which a file copy could miss
    return str(db), run_id, other


def run_count(db: str) -> int:
    with closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


def assert_one_line_naming(result, run_id: str, seq: int) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentlog: ") and f"run {run_id}" in lines[0] and f"event {seq}" in lines[0], lines[0]


@pytest.mark.parametrize("kind", DAMAGES)
def test_each_kind_of_damage_is_one_line(damaged, kind):
    db, run_id, other = damaged
    damage_event(db, run_id, DAMAGED_SEQ, kind)
    assert_one_line_naming(agentlog("show", run_id, "--db", db), run_id, DAMAGED_SEQ)


def test_the_other_runs_stay_readable(damaged):
    db, run_id, other = damaged
    damage_event(db, run_id, DAMAGED_SEQ, "binary")
    verified = agentlog("verify", "--all", "--db", db)
    assert_one_line_naming(verified, run_id, DAMAGED_SEQ)
    assert verified.stdout.splitlines() == [verified.stdout.strip()]  # the other run is still verified
    assert verified.stdout.startswith(f"{other}: verified (")
    shown = agentlog("show", other, "--db", db)
    assert shown.returncode == 0 and "final draft" in shown.stdout, shown.stderr
    assert agentlog("verify", other, "--db", db).returncode == 0
    assert agentlog("runs", "--db", db).stdout.count("finished") == 2  # the runs index is not events


@pytest.mark.parametrize("args", [
    ["show"], ["show", "--json"], ["replay"], ["replay", "--json"], ["verify"], ["export"],
    ["fork", "--at", str(DAMAGED_SEQ + 2)], ["rereview", "--model", "offline"],
], ids=lambda args: "-".join(a.strip("-") for a in args))
def test_every_command_reading_the_run_says_which_event_is_damaged(damaged, args):
    db, run_id, other = damaged
    damage_event(db, run_id, DAMAGED_SEQ, "truncated")
    result = agentlog(args[0], run_id, *args[1:], "--db", db)
    assert_one_line_naming(result, run_id, DAMAGED_SEQ)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert run_count(db) == 2  # no fork or re-review was started


def test_resume_of_a_damaged_unfinished_run_is_one_line(damaged):
    db, run_id, _ = damaged
    with closing(sqlite3.connect(db)) as con, con:  # as if the process had died before finishing
        con.execute("DELETE FROM events WHERE run_id = ? AND type = 'RunFinished'", (run_id,))
        con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (run_id,))
    damage_event(db, run_id, DAMAGED_SEQ, "newer-version")
    assert_one_line_naming(agentlog("resume", run_id, "--db", db), run_id, DAMAGED_SEQ)


def test_a_fork_before_the_damage_rescues_the_run(damaged):
    db, run_id, _ = damaged
    damage_event(db, run_id, DAMAGED_SEQ, "unknown-type")
    result = agentlog("fork", run_id, "--at", str(DAMAGED_SEQ - 1), "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# {TASK}")
    assert run_count(db) == 3
