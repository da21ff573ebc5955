"""A person in the loop: runs that wait for a decision, and the decision as an event.

Real SQLite files, the offline model (deterministic: scores 6, 7, 8, ... per iteration),
real threads for the race. The browser's side is in tests/web/test_decisions.py.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from agentlog.actors import agent_configs, start_run
from agentlog.events import ApprovalDecided, ApprovalRequested, DraftReady, LLMCallRequested, RunFinished
from agentlog.replay import NotWaiting, Overrides, ReplayError, build_view, decide_run, fork, resume, verify, waiting
from agentlog.store import SQLiteStore
from tests.conftest import PYTHON, cli_env

NOTE = "Lead with the checkpoint: say when the WAL is copied back."


def waiting_run(store: SQLiteStore, approval: str = "final", **kw) -> str:
    summary = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline"), approval=approval,
                        **kw).wait(timeout=30)
    assert summary.status == "waiting", summary
    return summary.run_id


def types(store: SQLiteStore, run_id: str) -> list[str]:
    return [s.type for s in store.read(run_id)]


def calls(store: SQLiteStore, run_id: str) -> list[LLMCallRequested]:
    return [s.event for s in store.read(run_id) if isinstance(s.event, LLMCallRequested)]


def test_final_approval_waits_with_no_process_then_approve_finishes_without_a_model_call(store):
    run_id = waiting_run(store)
    stored = store.read(run_id)
    assert stored[-1].event == ApprovalRequested(iteration=3, point="final")
    assert [r.run_id for r in store.list_runs(status="waiting")] == [run_id]
    question = waiting(run_id, stored)
    assert (question.iteration, question.point, question.score, question.seq) == (3, "final", 8, stored[-1].seq)
    before = len(calls(store, run_id))

    seq = decide_run(store, run_id, "approve", by="ada", note="ship it")
    assert store.get_run(run_id).status == "running"  # decided, not yet continued
    summary = resume(store, run_id).wait(timeout=30)
    assert summary.status == "finished"
    events = [s.event for s in store.read(run_id)]
    assert events[seq - 1] == ApprovalDecided(iteration=3, decision="approve", by="ada", note="ship it")
    assert events[-1] == RunFinished(reason="approved", iterations=3, score=8)
    assert len(calls(store, run_id)) == before
    assert verify(run_id, store.read(run_id)).ok


def test_each_review_asks_after_every_review_and_approve_ends_early(store):
    run_id = waiting_run(store, approval="each-review")
    assert store.read(run_id)[-1].event == ApprovalRequested(iteration=1, point="review")
    decide_run(store, run_id, "approve", by="ada")
    assert resume(store, run_id).wait(timeout=30).status == "finished"
    view = build_view(run_id, store.read(run_id))
    assert view.scores == [6] and view.finish_reason == "approved"
    assert [(d.iteration, d.decision, d.by) for d in view.decisions] == [(1, "approve", "ada")]


def test_reject_sends_the_note_to_the_writer_first_and_the_loop_goes_on(store):
    run_id = waiting_run(store, max_iterations=1)  # waits at draft 1: the iteration limit
    decide_run(store, run_id, "reject", by="ada", note=NOTE)
    summary = resume(store, run_id).wait(timeout=30)
    # The rejection at the limit still gets its revision; the limit ends the loop again: asked again.
    assert summary.status == "waiting"
    writer = [c for c in calls(store, run_id) if c.agent == "writer"]
    assert [c.step for c in writer] == ["write-1", "write-2"]
    prompt = writer[-1].request["messages"][-1]["content"]
    assert NOTE in prompt and prompt.index(NOTE) < prompt.index("## Review to address")
    assert NOTE not in writer[0].request["messages"][-1]["content"]
    assert store.read(run_id)[-1].event == ApprovalRequested(iteration=2, point="final")
    assert verify(run_id, store.read(run_id)).ok


def test_edit_at_the_final_point_is_the_final_draft_and_is_not_reviewed(store):
    run_id = waiting_run(store)
    decide_run(store, run_id, "edit", by="ada", draft="# Mine\n\nA person's words.")
    assert resume(store, run_id).wait(timeout=30).status == "finished"
    view = build_view(run_id, store.read(run_id))
    assert view.final_draft == "# Mine\n\nA person's words." and len(view.drafts) == 4
    assert view.scores == [6, 7, 8]  # nobody reviewed the person's version
    assert verify(run_id, store.read(run_id)).ok


def test_edit_after_a_review_is_reviewed_like_any_draft(store):
    run_id = waiting_run(store, approval="each-review")
    decide_run(store, run_id, "edit", by="ada", draft="# Mine\n\nA person's words.")
    assert resume(store, run_id).wait(timeout=30).status == "waiting"
    review = [c for c in calls(store, run_id) if c.step == "review-2"][0]
    assert "A person's words." in review.request["messages"][-1]["content"]
    drafts = [s.event for s in store.read(run_id) if isinstance(s.event, DraftReady)]
    assert drafts[-1] == DraftReady(iteration=2, draft="# Mine\n\nA person's words.", call_id="person-1")


def test_two_people_deciding_at_once_exactly_one_wins(tmp_path):
    db = tmp_path / "log.db"
    with SQLiteStore(db) as store:
        run_id = waiting_run(store)
    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[str, object] = {}

    def person(name: str, decision: str) -> None:
        with SQLiteStore(db, create=False) as own:
            barrier.wait()
            try:
                outcomes[name] = decide_run(own, run_id, decision, by=name, note="no" if decision == "reject" else "")
            except NotWaiting as exc:
                outcomes[name] = exc

    threads = [threading.Thread(target=person, args=a) for a in (("ada", "approve"), ("bob", "reject"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [n for n, o in outcomes.items() if isinstance(o, int)]
    losers = [o for o in outcomes.values() if isinstance(o, NotWaiting)]
    assert len(winners) == 1 and len(losers) == 1
    assert f"{winners[0]} already decided on draft 3" in str(losers[0])
    with SQLiteStore(db, create=False) as store:
        assert types(store, run_id).count("ApprovalDecided") == 1


def test_a_run_that_does_not_wait_refuses_a_decision(store):
    finished = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline")).wait(timeout=30)
    with pytest.raises(NotWaiting, match="not waiting for a person \\(it is finished\\)"):
        decide_run(store, finished.run_id, "approve")
    run_id = waiting_run(store)
    with pytest.raises(ReplayError, match="needs a note"):
        decide_run(store, run_id, "reject", note="  ")
    with pytest.raises(ReplayError, match="needs the draft"):
        decide_run(store, run_id, "edit", draft="")
    with pytest.raises(NotWaiting, match="changed since"):
        decide_run(store, run_id, "approve", at_seq=store.last_seq(run_id) - 1)
    assert store.get_run(run_id).status == "waiting"


def test_resume_of_a_waiting_run_does_not_ask_again_and_a_recorded_decision_is_not_asked_again(store):
    run_id = waiting_run(store)
    assert resume(store, run_id).wait(timeout=30).status == "waiting"
    assert types(store, run_id).count("ApprovalRequested") == 1
    decide_run(store, run_id, "reject", by="ada", note=NOTE)
    # As after a crash right after the decision: the next process goes on from it, asking nobody
    # about draft 3 again; the revision (draft 4) is a new question.
    assert resume(store, run_id).wait(timeout=30).status == "waiting"
    asked = [s.event.iteration for s in store.read(run_id) if isinstance(s.event, ApprovalRequested)]
    assert asked == [3, 4] and types(store, run_id).count("ApprovalDecided") == 1
    assert resume(store, run_id).wait(timeout=30).status == "waiting"
    assert types(store, run_id).count("ApprovalRequested") == 2


def test_fork_after_the_decision_copies_it_and_a_fork_before_it_asks_again(store):
    run_id = waiting_run(store)
    asked_at = store.last_seq(run_id)
    decided_at = decide_run(store, run_id, "approve", by="ada")
    resume(store, run_id).wait(timeout=30)
    after = fork(store, run_id, decided_at).wait(timeout=30)
    assert after.status == "finished" and types(store, after.run_id).count("ApprovalRequested") == 1
    before = fork(store, run_id, asked_at).wait(timeout=30)
    assert before.status == "waiting" and "ApprovalDecided" not in types(store, before.run_id)
    view = build_view(before.run_id, store.read(before.run_id))
    assert (view.status, view.waiting_for, view.waiting_point) == ("waiting", 3, "final")
    earlier = fork(store, run_id, asked_at - 1).wait(timeout=30)  # before the question: asked anew
    assert earlier.status == "waiting" and types(store, earlier.run_id)[-1] == "ApprovalRequested"
    for r in (after, before, earlier):
        assert verify(r.run_id, store.read(r.run_id)).ok


def test_a_fork_can_bring_a_person_in_or_leave_them_out(store):
    finished = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline")).wait(timeout=30)
    last_review = max(s.seq for s in store.read(finished.run_id) if s.type == "ReviewScored")
    asked = fork(store, finished.run_id, last_review, overrides=Overrides(approval="final")).wait(timeout=30)
    assert asked.status == "waiting" and verify(asked.run_id, store.read(asked.run_id)).ok
    run_id = waiting_run(store)
    left_out = fork(store, run_id, store.last_seq(run_id), overrides=Overrides(approval="never")).wait(timeout=30)
    assert left_out.status == "finished" and types(store, left_out.run_id)[-1] == "RunFinished"
    view = build_view(left_out.run_id, store.read(left_out.run_id))
    assert (view.status, view.waiting_for) == ("finished", None)
    with pytest.raises(ReplayError, match="approval is one of"):
        fork(store, run_id, 1, overrides=Overrides(approval="always"))


def test_the_index_rebuilds_waiting_from_the_events(store):
    run_id = waiting_run(store)
    store.rebuild_index()
    assert store.get_run(run_id).status == "waiting"
    assert [r.run_id for r in store.list_runs(status="waiting")] == [run_id]


def test_never_is_the_default_and_records_nothing_new(store):
    summary = start_run(store, "Explain SQLite WAL mode", agents=agent_configs("offline")).wait(timeout=30)
    assert summary.status == "finished"
    assert not {"ApprovalRequested", "ApprovalDecided"} & set(types(store, summary.run_id))
    with pytest.raises(ValueError, match="approval is"):
        start_run(store, "x", agents=agent_configs("offline"), approval="sometimes")


# --- the command line ---------------------------------------------------------------------


def agentlog(*args: str, db: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args, "--db", str(db)], capture_output=True, text=True,
                          env=cli_env(), timeout=60, input=stdin)


def test_cli_run_waits_with_exit_4_and_another_process_decides(tmp_path):
    db = tmp_path / "log.db"
    result = agentlog("run", "Explain SQLite WAL mode", "--model", "offline", "--approval", "final", "-q", db=db)
    assert result.returncode == 4, result.stderr
    assert result.stdout.startswith("# Explain SQLite WAL mode")  # the draft to decide on
    run_id = agentlog("runs", "--status", "waiting", "--json", db=db).stdout.split('"run_id": "')[1][:16]
    assert f"agentlog approve {run_id}" in result.stderr and f"agentlog reject {run_id} --note" in result.stderr
    assert agentlog("resume", run_id, "-q", db=db).returncode == 4

    missing = agentlog("reject", run_id, db=db)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "--note" in missing.stderr
    no_file = agentlog("edit", run_id, "--draft", str(tmp_path / "nope.md"), db=db)
    assert no_file.returncode == 2 and no_file.stderr.startswith("agentlog: cannot read the draft")

    edited = agentlog("edit", run_id[:8], "--draft", "-", "--by", "grace", "--note", "tightened", "-q", db=db,
                      stdin="# WAL\n\nBy a person.\n")
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout == "# WAL\n\nBy a person.\n"
    again = agentlog("approve", run_id, db=db)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "not waiting for a person (it is finished)" in again.stderr
    shown = agentlog("replay", run_id, db=db).stdout
    assert "grace decided edit" in shown and "tightened" in shown


def test_cli_decision_without_continuing_leaves_the_run_for_resume(tmp_path):
    db = tmp_path / "log.db"
    config = tmp_path / "run.toml"
    config.write_text('model = "offline"\napproval = "each-review"\n')
    assert agentlog("run", "Explain SQLite WAL mode", "--config", str(config), "-q", db=db).returncode == 4
    run_id = agentlog("runs", "--status", "waiting", "--json", db=db).stdout.split('"run_id": "')[1][:16]
    result = agentlog("reject", run_id, "--note", NOTE, "--no-continue", db=db)
    assert result.returncode == 0 and f"agentlog resume {run_id}" in result.stderr
    assert agentlog("runs", "--status", "running", "--json", db=db).stdout.count(run_id) == 1
    resumed = agentlog("resume", run_id, "-q", db=db)
    assert resumed.returncode == 4  # draft 2 was reviewed: each-review asks again
    with SQLiteStore(db, create=False) as store:
        writer = [c for c in calls(store, run_id) if c.agent == "writer"]
        assert NOTE in writer[-1].request["messages"][-1]["content"]


def test_cli_two_people_deciding_at_once_one_is_recorded_the_other_gets_exit_2(tmp_path):
    db = tmp_path / "log.db"
    with SQLiteStore(db) as store:
        run_id = waiting_run(store)
    procs = [subprocess.Popen([PYTHON, "-m", "agentlog.cli", *args, "--db", str(db), "--no-continue"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
             for args in (("approve", run_id, "--by", "ada"), ("reject", run_id, "--by", "bob", "--note", NOTE))]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=60)]]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.count("\n") == 1 and loser.startswith(f"agentlog: run {run_id} is not waiting for a person")
    with SQLiteStore(db, create=False) as store:
        assert types(store, run_id).count("ApprovalDecided") == 1
