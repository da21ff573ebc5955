"""Sweeps end to end: the real CLI, a real log, a real chat-completions server on 127.0.0.1
that counts requests per model."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from agentlog.actors import agent_configs, run
from agentlog.events import Review, SweepSpec, SweepVariant
from agentlog.models import Endpoint, Gateway, RetryPolicy, offline
from agentlog.replay import sweep
from agentlog.store import SQLiteStore
from tests.conftest import SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_cli import agentlog

TASKS = ("Explain SQLite WAL mode", "Explain the Raft consensus algorithm")
STRICT = "strict-model"  # a reviewer that scores every draft 3


def respond(body: dict) -> dict:
    """The offline model's answers, except that the strict model's reviews score 3, not approved."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
    if body["model"] == STRICT and schema == "Review":
        review = Review(score=3, approved=False, issues=["strict: not good enough"], missed_topics=[],
                        suggestions=[], summary="strict review")
        return {"content": msgspec.json.encode(review).decode(), "prompt_tokens": 50, "completion_tokens": 20}
    c = offline.complete(body)
    answer: dict = {"content": c.content, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
    if c.tool_calls:
        answer["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                for i, n, a in c.tool_calls]
    return answer


@pytest.fixture
def server():
    with FakeOpenAIServer(responder=respond) as s:
        yield s


@pytest.fixture
def gateway(server):
    g = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02), timeout=10.0)
    yield g
    g.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def parents(db, gateway) -> list[str]:
    with SQLiteStore(db) as store:
        return [run(store, task, agents=agent_configs("gpt-4o-mini"), gateway=gateway).run_id for task in TASKS]


@pytest.fixture
def env(server) -> dict[str, str]:
    return cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)


@pytest.fixture
def cli(server, monkeypatch, capsys):
    """The CLI's ``main`` in this process (the same code path, without a subprocess's start-up):
    returns ``(exit code, stdout, stderr)``."""
    from agentlog.cli import main

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AGENTLOG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("AGENTLOG_CONFIG", os.devnull)

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def per_model(server) -> Counter:
    return Counter(r["body"]["model"] for r in server.requests)


def event_count(db: str) -> int:
    with SQLiteStore(db, create=False) as store:
        runs = store.list_runs()
        return len(runs) + sum(r.last_seq for r in runs)


def test_a_sweep_forks_every_run_per_variant_compares_and_runs_again_for_free(db, parents, env, cli, server):
    before = per_model(server)
    assert before == {"gpt-4o-mini": 14}
    args = ("sweep", *parents, "--at", "review-1", "--model", f"reviewer=gpt-4o-mini,gpt-4o,{STRICT}",
            "--db", db, "--json")
    result = agentlog(*args, env=env)
    assert result.returncode == 0, result.stderr
    # The unchanged variant reused everything. gpt-4o reviews like the parent's reviewer, so its
    # writers got the same requests and reused their drafts: only its 3 reviews per run were made.
    # The strict reviewer's 3 asks for a new draft 2 (a new writer call), then plateaus at 3.
    made = per_model(server) - before
    assert made == {"gpt-4o": 6, STRICT: 4, "gpt-4o-mini": 2}, made
    c = json.loads(result.stdout)
    assert c["paired"].startswith("paired: every variant forked from the same 2 parent run(s) at the same "
                                  "branch point (review-1)")
    assert c["expected"] == 6 and len(c["members"]) == 6
    same, gpt4o, strict = c["variants"]
    assert [v["variant"] for v in c["variants"]] == ["reviewer=gpt-4o-mini", "reviewer=gpt-4o", f"reviewer={STRICT}"]
    assert same["calls_made"] == 0 and same["calls_reused"] == 10 and same["cost_usd"] == 0
    assert same["saved_usd"] > 0 and same["mean_delta"] == 0 and same["approval_rate"] == 1
    assert gpt4o["calls_made"] == 6 and gpt4o["cost_usd"] > 0 and gpt4o["tokens_spent"] > 0
    assert strict["mean_score"] == 3 and strict["sd_score"] == 0 and strict["mean_delta"] == -5
    assert strict["approval_rate"] == 0 and strict["mean_iterations"] == 2
    assert strict["cost_usd"] is None and strict["unpriced"] == [STRICT]  # no price: unknown, never 0
    assert {d["source"] for d in c["disagreements"]} == set(parents)
    assert all(d["scores"][f"reviewer={STRICT}"] == 3 for d in c["disagreements"])
    assert "\r" not in result.stderr  # no progress line when stderr is not a terminal

    code, out, err = cli(*args)  # the same sweep: found, nothing to run, zero calls
    assert code == 0, err
    assert per_model(server) - before == made
    assert json.loads(out)["members"] == c["members"]
    assert "6 runs (0 to run)" in err

    listed = json.loads(cli("sweep", "list", "--db", db, "--json")[1])
    assert len(listed) == 1 and listed[0]["sweep_id"] == c["sweep_id"]
    assert (listed[0]["members"], listed[0]["expected"], listed[0]["finished"]) == (6, 6, 6)
    code, shown, _ = cli("sweep", "show", c["sweep_id"][:6], "--db", db)
    assert code == 0
    assert "note: paired: every variant forked from the same 2 parent run(s)" in shown
    assert "where variants disagree: 2 of 2 run(s)" in shown
    csv_lines = cli("sweep", "show", c["sweep_id"], "--db", db, "--csv")[1].splitlines()
    assert csv_lines[0].startswith("sweep_id,variant,runs,finished,failed,mean_score") and len(csv_lines) == 4
    code, verified, _ = cli("verify", "--all", "--db", db)
    assert code == 0 and verified.count("verified") == 8


def test_bad_sweep_input_is_one_line_exit_2_and_writes_nothing(tmp_path, db, parents, env, cli, server):
    bad_variants = tmp_path / "variants.toml"
    bad_variants.write_text('[variants.strict]\nmodel = "gpt-4o"\n')  # `models = {reviewer = ...}` was meant
    before, requests = event_count(db), server.count()
    cases = [
        ("sweep", *parents, "--at", "review-1", "--model", "editor=gpt-4o"),  # unknown variant key
        ("sweep", "--search", "no such task", "--at", "review-1", "--model", "reviewer=gpt-4o"),  # empty
        ("sweep", *parents, "--at", "review-9", "--model", "reviewer=gpt-4o"),  # no run has the point
        ("sweep", *parents, "--at", "review-1"),  # no variants
        ("sweep", *parents, "--at", "review-1", "--model", "reviewer=gpt-4o", "--budget-usd", "0"),
        ("sweep", *parents, "--model", "reviewer=gpt-4o"),  # no branch point
        ("sweep", "show", "ffffff"),
        ("sweep", *parents, "--at", "review-1", "--variants", str(bad_variants)),  # unknown key in the file
    ]
    result = agentlog(*cases[0], "--db", db, env=env)  # one as a real subprocess, the rest in-process
    assert result.returncode == 2 and result.stderr == "agentlog: unknown variant key 'editor' (agents: " \
        "researcher, counter_researcher, writer, reviewer)\n"
    for args in cases[1:]:
        code, _, err = cli(*args, "--db", db)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("agentlog: "), err
    assert event_count(db) == before and server.count() == requests


def test_a_run_without_the_branch_point_is_reported_and_the_others_go_on(db, gateway, cli, server):
    with SQLiteStore(db) as store:
        # Approved at the first review (threshold 6): it has no write-2 step.
        short = run(store, TASKS[0], agents=agent_configs("gpt-4o-mini"), gateway=gateway, threshold=6).run_id
        long = run(store, TASKS[1], agents=agent_configs("gpt-4o-mini"), gateway=gateway).run_id
    code, out, err = cli("sweep", short, long, "--at", "write-2", "--model", "writer=gpt-4o", "--db", db)
    assert code == 0, err
    assert f"agentlog: run {short} has no step write-2 (its steps: research, write-1, review-1); skipped" in err
    assert "2 run(s) branched at write-2 x 1 variant(s) x 1 sample(s) = 2 runs (1 recorded)" in out
    assert per_model(server)["gpt-4o"] == 2  # write-2 and write-3 of the long run


def test_samples_are_distinct_calls_and_each_is_reused_on_a_rerun(db, parents, cli, server):
    before = server.count()
    args = ("sweep", parents[0], "--at", "review-1", "--model", "reviewer=gpt-4o-mini", "--samples", "3",
            "--db", db, "--json", "-q")
    code, out, err = cli(*args)
    assert code == 0, err
    # Sample 1 is the parent's own requests (all reused); samples 2 and 3 are 5 new calls each.
    assert server.count() - before == 10
    members = json.loads(out)["members"]
    assert sorted((m["sample"], m["calls_made"]) for m in members) == [(1, 0), (2, 5), (3, 5)]
    assert cli(*args)[0] == 0 and server.count() - before == 10


def test_a_sweep_budget_stops_its_runs_and_a_higher_one_continues_them(db, parents, cli, server):
    before = server.count()
    args = ("sweep", *parents, "--at", "review-1", "--model", "reviewer=gpt-4o", "--concurrency", "1",
            "--db", db, "--json")
    code, out, _ = cli(*args, "--budget-tokens", "1")
    assert code == 1
    assert server.count() - before == 1  # the first call crossed the budget; nothing after it was sent
    with SQLiteStore(db, create=False) as store:
        reached = [msgspec.to_builtins(s.event) for r in store.list_runs() for s in store.read(r.run_id)
                   if s.type == "BudgetReached"]
    assert len(reached) == 2 and {r["scope"] for r in reached} == {"sweep"}
    assert all(m["status"] == "failed" for m in json.loads(out)["members"])

    code, _, err = cli(*args, "--budget-tokens", "100000")
    assert code == 0, err
    assert server.count() - before == 6  # 3 reviews per run, none sent twice
    sent = [json.dumps(r["body"], sort_keys=True) for r in server.requests[before:]]
    assert len(set(sent)) == len(sent)


def test_fresh_tasks_sweep(tmp_path, db, cli, server):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("# one task per line\n" + "\n".join(TASKS) + "\n")
    args = ("sweep", "--tasks", str(tasks), "--base-model", "gpt-4o-mini", "--model",
            f"reviewer=gpt-4o-mini,{STRICT}", "--db", db, "--json", "-q")
    code, out, err = cli(*args)
    assert code == 0, err
    c = json.loads(out)
    assert c["paired"] == "paired: every variant ran the same 2 task(s) from the start"
    assert [v["runs"] for v in c["variants"]] == [2, 2]
    assert [v["mean_score"] for v in c["variants"]] == [8, 3]
    made = server.count()
    assert made == 2 * 7 + 2 * 5  # fresh runs share no lineage: every call is made
    assert cli(*args)[0] == 0 and server.count() == made


def test_an_interrupted_sweep_resumes_where_it_stopped(db, parents, gateway, server):
    server.delay = 0.05
    spec = SweepSpec(runs=sorted(parents), at="review-1", variants=[
        SweepVariant(label="reviewer=gpt-4o", models={"reviewer": "gpt-4o"}),
        SweepVariant(label="writer=gpt-4o", models={"writer": "gpt-4o"})])
    stop = threading.Event()
    progress = sweep.Progress(total=4)
    progress.on_change = lambda p: stop.set() if p.tally.calls_made >= 3 else None
    with SQLiteStore(db) as store:
        with pytest.raises(sweep.SweepInterrupted):
            sweep.run_sweep(store, sweep.plan_sweep(store, spec), gateway=gateway, concurrency=2, stop=stop,
                            progress=progress)
        interrupted = server.count()
        again = sweep.plan_sweep(store, spec)
        assert any(p.status != "finished" for p in again.members)
        comparison = sweep.run_sweep(store, again, gateway=gateway, concurrency=2)
        assert all(m.status == "finished" for m in comparison.members) and len(comparison.members) == 4
    bodies = Counter(json.dumps(r["body"], sort_keys=True) for r in server.requests)
    repeated = sum(n - 1 for n in bodies.values())
    assert server.count() > interrupted and repeated <= 2  # at most the calls in flight were made again


def test_named_variants_from_a_file(tmp_path, db, parents, cli, server):
    variants = tmp_path / "variants.toml"
    variants.write_text('[variants.strict]\nmodels = { reviewer = "strict-model" }\nthreshold = 9\n\n'
                        '[variants.same]\nmodels = { reviewer = "gpt-4o-mini" }\n')
    code, out, err = cli("sweep", parents[0], "--at", "review-1", "--variants", str(variants), "--db", db, "--json")
    assert code == 0, err
    c = json.loads(out)
    assert [v["variant"] for v in c["variants"]] == ["strict", "same"]
    assert [v["mean_score"] for v in c["variants"]] == [3, 8]


def test_the_progress_line_says_done_calls_reused_and_spend():
    progress = sweep.Progress(total=6)
    progress.tally.add(120, 0.0012, "gpt-4o")
    progress.tally.reused()
    progress.finished(True)
    progress.finished(False)
    assert progress.line() == "sweep: 2/6 runs done, 1 failed, 1 calls made, 1 reused, $0.0012 spent"
    progress.tally.add(50, None, "llama3.1")
    assert progress.line().endswith("2 calls made, 1 reused, unknown spent")


def test_ctrl_c_stops_a_sweep_and_the_same_command_resumes_it(db, parents, env, server):
    import signal
    import subprocess
    import time

    from tests.conftest import PYTHON

    server.delay = 0.2
    before = server.count()
    args = [PYTHON, "-m", "agentlog.cli", "sweep", *parents, "--at", "review-1", "--model", "reviewer=gpt-4o",
            "--concurrency", "2", "--db", db, "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 60
    while server.count() < before + 2:  # both members are into their calls
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the log is consistent. Run the same sweep command again to resume" in err
    assert server.count() - before < 6

    server.delay = 0.0
    again = subprocess.run(args + ["--json"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert all(m["status"] == "finished" for m in json.loads(again.stdout)["members"])
    bodies = Counter(json.dumps(r["body"], sort_keys=True) for r in server.requests[before:])
    assert sum(bodies.values()) - len(bodies) <= 2  # only the calls in flight at Ctrl-C were made again


def test_a_fork_of_a_sweeps_run_is_not_a_member(db, parents, gateway, cli, server):
    from agentlog.replay import fork

    code, out, _ = cli("sweep", parents[0], "--at", "review-1", "--threshold", "6,7", "--db", db, "--json")
    assert code == 0
    c = json.loads(out)
    with SQLiteStore(db) as store:
        member = c["members"][0]["run_id"]
        child = fork(store, member, store.last_seq(member), gateway=gateway).wait(timeout=30).run_id
        assert child not in {m.run_id for m in sweep.member_events(store, c["sweep_id"])}
        assert [(i.members, i.expected) for i in sweep.list_sweeps(store)] == [(2, 2)]
    code, shown, _ = cli("show", child, "--db", db)
    assert code == 0 and "sweep     " not in shown
