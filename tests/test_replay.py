"""The replay family: no LLM call that the log already answered is ever made again."""

from __future__ import annotations

import json
import subprocess

import pytest

from agentlog.actors import agent_configs, run
from agentlog.events import (
    AgentReconfigured,
    DraftReady,
    LLMCallAnswered,
    LLMCallRequested,
    RunForked,
    RunResumed,
    SettingsChanged,
)
from agentlog.pipelines import ContentPipeline
from agentlog.replay import Overrides, ReplayError, build_view, fork, resume, start_rereview, verify
from tests.conftest import PYTHON, SECRET, cli_env

TASK = "Explain how Kubernetes horizontal pod autoscaling works"
RESEARCHER, WRITER, REVIEWER = "research analyst", "technical writer", "demanding editor"


def recorded_run(store, gateway, **kw):
    return run(store, kw.pop("task", TASK), agents=agent_configs("gpt-4o"), gateway=gateway, **kw)


def seq_of(store, run_id, cls, nth=1):
    found = [s.seq for s in store.read(run_id) if isinstance(s.event, cls)]
    return found[nth - 1]


def copy_prefix(store, run_id, upto):
    """A run that stopped after event ``upto``: what a crash leaves in the log."""
    new_id = f"{run_id}-crashed-at-{upto}"
    store.append(new_id, store.events(run_id, 0, upto), 0)
    return new_id


def test_fork_at_a_draft_with_the_reviewer_swapped_makes_only_reviewer_calls(store, gateway, server):
    parent = recorded_run(store, gateway)
    assert server.count() == 7
    at = seq_of(store, parent.run_id, DraftReady, 3)
    before = server.count(RESEARCHER), server.count(WRITER), server.count(REVIEWER)
    child = fork(store, parent.run_id, at, overrides=Overrides(models={"reviewer": "gpt-4o-judge"}),
                 gateway=gateway).wait()
    after = server.count(RESEARCHER), server.count(WRITER), server.count(REVIEWER)
    assert (after[0] - before[0], after[1] - before[1]) == (0, 0)  # researcher and writer: zero calls
    assert after[2] - before[2] == 1  # the one review of draft 3 by the new model
    assert server.requests[-1]["body"]["model"] == "gpt-4o-judge"
    events = store.read(child.run_id)
    assert [s.event for s in events[:at]] == store.events(parent.run_id, 0, at)  # the copied prefix
    assert events[at].event == RunForked(parent_run_id=parent.run_id, parent_seq=at)
    assert events[at + 1].event == AgentReconfigured(agent="reviewer", model="gpt-4o-judge")
    assert child.parent_run_id == parent.run_id and child.fork_seq == at and child.status == "finished"


def test_fork_reuses_answers_recorded_after_the_fork_point(store, gateway, server):
    parent = recorded_run(store, gateway)
    at = seq_of(store, parent.run_id, LLMCallRequested, 2)  # right after the writer's intent: in flight
    calls_before = server.count()
    child = fork(store, parent.run_id, at, gateway=gateway).wait()
    assert server.count() == calls_before  # same settings: everything after the fork point is reused
    reused = [e for e in store.events(child.run_id)[at:] if isinstance(e, LLMCallAnswered)]
    assert reused and all(e.reused_from is not None and e.reused_from.run_id == parent.run_id for e in reused)
    assert child.tokens == 0 and build_view(child.run_id, store.read(child.run_id)).reused_tokens > 0
    first = reused[0]
    origin = store.read(parent.run_id, first.reused_from.seq - 1, first.reused_from.seq)[0].event
    assert isinstance(origin, LLMCallAnswered) and origin.content == first.content


def test_fork_overrides_settings_and_decides_again(store, gateway, server):
    parent = recorded_run(store, gateway)  # approved at 8 on the third review
    last = store.last_seq(parent.run_id)
    child = fork(store, parent.run_id, last, overrides=Overrides(threshold=9, max_iterations=4),
                 gateway=gateway).wait()
    events = store.events(child.run_id)
    assert SettingsChanged(max_iterations=4, threshold=9) in events
    view = build_view(child.run_id, store.read(child.run_id))  # the view applies the settings it shows
    assert (view.max_iterations, view.threshold) == (4, 9)
    assert any(row.description == "max_iterations=4, threshold=9" for row in view.timeline)
    assert child.iterations == 4 and child.status == "finished"
    assert server.count(WRITER) == 4 and server.count(RESEARCHER) == 1  # one new draft, one new review


def test_fork_of_a_fork_reuses_from_the_nearest_ancestor_first(store, gateway, server):
    root = recorded_run(store, gateway)
    at = seq_of(store, root.run_id, DraftReady, 1)
    first = fork(store, root.run_id, at, overrides=Overrides(temperatures={"reviewer": 0.5}), gateway=gateway).wait()
    calls = server.count()
    second = fork(store, first.run_id, at + 2, overrides=Overrides(temperatures={"reviewer": 0.5}),
                  gateway=gateway).wait()
    assert server.count() == calls
    reused = [e for e in store.events(second.run_id)[at + 2:] if isinstance(e, LLMCallAnswered)]
    origins = {(e.agent, e.reused_from.run_id) for e in reused}
    # The reviews at temperature 0.5 were first made live in `first`; the drafts in `root`
    # (`first` reused them, and a reference names where an answer was made live).
    assert origins == {("reviewer", first.run_id), ("writer", root.run_id)}
    assert store.lineage(second.run_id) == [second.run_id, first.run_id, root.run_id]


def test_bad_fork_requests_are_refused(store, gateway):
    parent = recorded_run(store, gateway)
    with pytest.raises(ReplayError, match="1 to 23"):
        fork(store, parent.run_id, 99, gateway=gateway)
    with pytest.raises(ReplayError, match="no agent 'editor'"):
        fork(store, parent.run_id, 3, overrides=Overrides(models={"editor": "x"}), gateway=gateway)
    assert len(store.list_runs()) == 1  # nothing was written


@pytest.mark.parametrize("crash_after", [2, 3, 4, 5, 9, 13, 21, 22])
def test_resume_after_a_crash_repeats_only_the_call_in_flight(store, gateway, server, crash_after):
    original = recorded_run(store, gateway)
    crashed = copy_prefix(store, original.run_id, crash_after)
    prefix = store.events(crashed)
    answered = {e.request_hash for e in prefix if isinstance(e, LLMCallAnswered)}
    in_flight = {e.request_hash for e in prefix if isinstance(e, LLMCallRequested)} - answered
    server.requests.clear()
    resumed = resume(store, crashed, gateway=gateway).wait()
    assert resumed.status == "finished"
    events = store.events(crashed)
    assert isinstance(events[crash_after], RunResumed)
    sent = [r["body"] for r in server.requests]
    hashes = {e.request_hash: e.request for e in events if isinstance(e, LLMCallRequested)}
    sent_hashes = [h for h, req in hashes.items() for body in sent if body["messages"] == req["messages"]]
    assert not set(sent_hashes) & answered  # nothing the log answered was asked again
    assert len(sent) == 7 - len(answered)  # only the in-flight call and the calls after it
    assert len(set(sent_hashes) & in_flight) == len(in_flight) <= 1
    # The outcome is the same as the run that never crashed.
    view, reference = build_view(crashed, store.read(crashed)), build_view(original.run_id, store.read(original.run_id))
    assert [d.draft for d in view.drafts] == [d.draft for d in reference.drafts] and view.scores == reference.scores


def test_resume_can_swap_a_model_first(store, gateway, server):
    original = recorded_run(store, gateway)
    crashed = copy_prefix(store, original.run_id, seq_of(store, original.run_id, DraftReady, 1))
    resume(store, crashed, overrides=Overrides(models={"reviewer": "gpt-4o-judge"}), gateway=gateway).wait()
    events = store.events(crashed)
    assert AgentReconfigured(agent="reviewer", model="gpt-4o-judge") in events
    reviews = [e for e in events if isinstance(e, LLMCallRequested) and e.agent == "reviewer"]
    assert {r.request["model"] for r in reviews} == {"gpt-4o-judge"}


def test_resume_of_a_finished_run_is_refused_and_writes_nothing(store, gateway):
    done = recorded_run(store, gateway)
    with pytest.raises(ReplayError, match="already finished"):
        resume(store, done.run_id, gateway=gateway)
    assert store.last_seq(done.run_id) == done.last_seq


def test_rereview_scores_every_draft_with_only_reviewer_calls(store, gateway, server):
    runs = [recorded_run(store, gateway, task=f"{TASK} ({n})") for n in range(2)]
    before = server.count(RESEARCHER), server.count(WRITER), server.count(REVIEWER)
    reviews = [start_rereview(store, r.run_id, "gpt-4o-judge", gateway=gateway).wait() for r in runs]
    assert (server.count(RESEARCHER), server.count(WRITER)) == before[:2]
    assert server.count(REVIEWER) - before[2] == 6  # 3 drafts per run
    for source, rr in zip(runs, reviews):
        view = build_view(rr.run_id, store.read(rr.run_id))
        assert rr.pipeline == "rereview" and rr.parent_run_id == source.run_id
        assert view.finish_reason == "reviewed" and len(view.reviews) == 3
        assert [d.source.run_id for d in view.drafts] == [source.run_id] * 3
        assert {r.model for r in view.reviews} == {"gpt-4o-judge"}
        assert verify(rr.run_id, store.read(rr.run_id)).ok
    # A re-review of a re-review works too.
    again = start_rereview(store, reviews[0].run_id, "gpt-4o-other", gateway=gateway).wait()
    assert again.status == "finished" and again.parent_run_id == reviews[0].run_id


def test_verify_passes_today_and_names_the_first_divergence_when_the_decider_changes(store, gateway, monkeypatch):
    recorded = recorded_run(store, gateway)
    assert verify(recorded.run_id, store.read(recorded.run_id)).ok
    # Tomorrow's code approves only above the threshold.
    original = ContentPipeline._finish_reason

    def stricter(self, state):
        reason = original(self, state)
        if reason == "approved" and state.reviews[-1].score == state.threshold:
            return "max_iterations" if len(state.reviews) >= state.max_iterations else None
        return reason

    monkeypatch.setattr(ContentPipeline, "_finish_reason", stricter)
    result = verify(recorded.run_id, store.read(recorded.run_id))
    assert not result.ok
    assert result.divergence.seq == recorded.last_seq  # the RunFinished event
    assert "approved" in result.divergence.recorded and "max_iterations" in result.divergence.expected[0]


def agentlog(*args, env):
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_replay_works_with_the_server_stopped_and_no_key(tmp_path, server):
    db = str(tmp_path / "log.db")
    live = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    assert agentlog("run", TASK, "--model", "gpt-4o", "--db", db, "-q", env=live).returncode == 0
    server.stop()
    offline = cli_env()  # no key, no base URL, and the server is gone
    run_id = json.loads(agentlog("runs", "--db", db, "--json", env=offline).stdout)[0]["run_id"]
    text = agentlog("replay", run_id, "--db", db, env=offline)
    assert text.returncode == 0, text.stderr
    for needle in ("timeline", "PHASE", "research", "review-3", "gpt-4o", "findings", "draft 1", "draft 3",
                   "review 2: score 7/10", "ended     approved"):
        assert needle in text.stdout, needle
    data = json.loads(agentlog("replay", run_id, "--db", db, "--json", env=offline).stdout)
    assert data["scores"] == [6, 7, 8] and data["finish_reason"] == "approved" and len(data["drafts"]) == 3
    assert all(c["status"] == "answered" and c["latency_ms"] > 0 for c in data["calls"])
    assert data["findings"]["key_areas"]


def test_cli_fork_rereview_verify_and_resume(tmp_path, server):
    db = str(tmp_path / "log.db")
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    for n in range(2):
        assert agentlog("run", f"{TASK} {n}", "--model", "gpt-4o", "--db", db, "-q", env=env).returncode == 0
    ids = [r["run_id"] for r in json.loads(agentlog("runs", "--db", db, "--json", env=env).stdout)]

    resumed = agentlog("resume", ids[0], "--db", db, env=env)
    assert resumed.returncode == 0 and "already finished" in resumed.stderr

    writer_calls = server.count(WRITER)
    forked = agentlog("fork", ids[0], "--at", "19", "--model", "reviewer=gpt-4o-judge", "--db", db, env=env)
    assert forked.returncode == 0, forked.stderr
    assert server.count(WRITER) == writer_calls and f"forking run {ids[0]} at event 19" in forked.stderr

    rr = agentlog("rereview", *ids, "--model", "gpt-4o-judge", "--db", db, env=env)
    assert rr.returncode == 0, rr.stderr
    assert "OLD" in rr.stdout and "NEW" in rr.stdout and "mean difference" in rr.stdout
    assert rr.stdout.count("\n" + ids[0]) == 3 and rr.stdout.count("\n" + ids[1]) == 3

    ok = agentlog("verify", "--all", "--db", db, env=env)
    assert ok.returncode == 0 and ok.stdout.count("verified") == 5
