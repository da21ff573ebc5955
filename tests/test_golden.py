"""Golden logs, recorded with the offline model and checked in: today's code must replay them.

``diverges-threshold`` was recorded by a decider that approved only above the threshold;
verification must name its first diverging event. ``v1-runstarted`` starts with a
version-1 event that is upcast on read. ``approval-offline`` waited for a person twice: a
rejection with a note, then an edit that became the final draft.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentlog.replay import build_view, verify
from agentlog.store import SQLiteStore
from tests.conftest import PYTHON, cli_env

GOLDEN = Path(__file__).parent / "golden"
PASSING = ["content-offline", "fork-offline", "rereview-offline", "v1-runstarted", "approval-offline"]


def agentlog(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=60)


def imported(tmp_path: Path, name: str) -> str:
    db = str(tmp_path / f"{name}.db")
    result = agentlog("import", str(GOLDEN / f"{name}.jsonl"), "--db", db)
    assert result.returncode == 0, result.stderr
    return db


@pytest.mark.parametrize("name", PASSING)
def test_golden_logs_verify(tmp_path, name):
    db = imported(tmp_path, name)
    result = agentlog("verify", "--all", "--db", db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout and "DIVERGES" not in result.stdout


def test_a_golden_log_recorded_by_other_code_fails_verification_at_its_first_divergence(tmp_path):
    db = imported(tmp_path, "diverges-threshold")
    result = agentlog("verify", "golden-diverges-threshold", "--db", db)
    assert result.returncode == 1
    assert "DIVERGES at event 17" in result.stdout
    assert "recorded: LLMCallRequested write-3/1" in result.stdout
    assert "RunFinished(reason='approved', iterations=2, score=7)" in result.stdout


def test_the_v1_golden_log_replays_as_the_current_version(tmp_path):
    db = imported(tmp_path, "v1-runstarted")
    with SQLiteStore(db, create=False) as store:
        stored = store.read("golden-v1-runstarted")
        # `import` decodes each line (upcasting v1) and appends today's version of the event.
        assert stored[0].version == 2
        view = build_view("golden-v1-runstarted", stored)
        assert {name: a.model for name, a in view.agents.items()} == {
            "researcher": "offline", "writer": "offline", "reviewer": "offline"}
        assert view.scores == [6, 7, 8] and verify("golden-v1-runstarted", stored).ok


def test_golden_logs_replay_without_network_or_key(tmp_path):
    db = imported(tmp_path, "fork-offline")
    with SQLiteStore(db, create=False) as store:
        fork = next(r for r in store.list_runs() if r.parent_run_id)
        view = build_view(fork.run_id, store.read(fork.run_id))
    assert view.fork_seq == 13 and view.scores == [6, 7, 8, 9] and view.finish_reason == "approved"
    assert any(c.status == "reused" for c in view.calls)
    text = agentlog("replay", fork.run_id, "--db", db)
    assert text.returncode == 0 and "reused" in text.stdout


def test_the_golden_log_with_a_persons_decisions_replays_them_as_inputs(tmp_path):
    db = imported(tmp_path, "approval-offline")
    with SQLiteStore(db, create=False) as store:
        stored = store.read("golden-approval-offline")
        view = build_view("golden-approval-offline", stored)
        assert store.get_run("golden-approval-offline").status == "finished"
    assert [(d.iteration, d.decision, d.by) for d in view.decisions] == [
        (3, "reject", "reviewer-ada"), (4, "edit", "editor-grace")]
    assert view.final_draft == "# SQLite WAL mode\n\nA person rewrote this final draft.\n"
    write_4 = next(s.event for s in stored if s.type == "LLMCallRequested" and s.event.step == "write-4")
    assert "Say when a checkpoint copies the WAL back." in write_4.request["messages"][-1]["content"]
    # The decisions are folded as recorded, never expected of the decider.
    assert verify("golden-approval-offline", stored).ok
    text = agentlog("replay", "golden-approval-offline", "--db", db)
    assert "reviewer-ada decided reject" in text.stdout and "editor-grace decided edit" in text.stdout
