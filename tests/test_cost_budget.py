"""Cost, budgets and fresh samples, through the real CLI against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from agentlog.models.prices import DEFAULT_PRICES, FREE, Price, PriceTable, format_usd
from agentlog.replay import run_cost
from agentlog.store import SQLiteStore
from tests.conftest import SECRET, cli_env
from tests.test_cli import TASK, agentlog

# A price that makes the arithmetic visible: $1 per prompt token, $2 per completion token.
PRICES_TOML = '[prices."priced-model"]\ninput = 1000000\noutput = 2000000\n'


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def env(tmp_path: Path, server) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(PRICES_TOML)
    return cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url, AGENTLOG_CONFIG=str(config))


def by_model(server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in server.requests:
        counts[r["body"]["model"]] = counts.get(r["body"]["model"], 0) + 1
    return counts


def events(db: str, run_id: str | None = None) -> list[tuple[str, str, dict]]:
    """(run, type, fields) of every event, read through the store (rows are not plain JSON)."""
    with SQLiteStore(db, create=False) as store:
        runs = sorted(r.run_id for r in store.list_runs()) if run_id is None else [run_id]
        return [(s.run_id, s.type, msgspec.to_builtins(s.event)) for r in runs for s in store.read(r)]


def only_run(db: str) -> str:
    runs = json.loads(agentlog("runs", "--db", db, "--json").stdout)
    assert len(runs) == 1
    return runs[0]["run_id"]


# --- the price table -------------------------------------------------------------------


def test_prices_default_user_dated_free_and_unknown():
    table = PriceTable({"gpt-4o": Price(1.0, 2.0), "my-vllm-model": Price(0.0, 0.0)})
    assert table.price("gpt-4o") == Price(1.0, 2.0)  # a user entry wins over the default
    assert table.price("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.price("openai:gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.price("offline") == table.price("local") == table.price("local:/models/x.gguf") == FREE
    assert table.price("my-vllm-model") == FREE
    assert table.price("llama3.1") is None and table.cost("llama3.1", 10, 10) is None
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert format_usd(None, {"llama3.1"}) == "unknown (no price for llama3.1)"
    assert format_usd(0.0) == "$0.0000"
    with pytest.raises(ValueError):
        Price(-1.0, 0.0)


@pytest.mark.parametrize("entry", ['input = -1\noutput = 1', 'input = "cheap"', 'input = nan\noutput = 1'])
def test_a_bad_price_entry_is_one_line_exit_2_nothing_written(tmp_path, entry):
    config = tmp_path / "config.toml"
    config.write_text(f'[prices."gpt-x"]\n{entry}\n')
    db = tmp_path / "never.db"
    result = agentlog("run", TASK, "--model", "offline", "--db", str(db),
                      env=cli_env(AGENTLOG_CONFIG=str(config)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("agentlog: config file")
    assert "gpt-x" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


# --- cost spent and saved ----------------------------------------------------------------


def test_cost_spent_and_saved_by_reuse_from_the_log(db, env, server):
    result = agentlog("run", TASK, "--model", "priced-model", "--db", db, "-q", env=env)
    assert result.returncode == 0, result.stderr
    parent = only_run(db)
    answers = [d for _, t, d in events(db) if t == "LLMCallAnswered"]
    # $1 per prompt token, $2 per completion token, from what the server reported.
    expected = sum(a["usage"]["prompt_tokens"] + 2 * a["usage"]["completion_tokens"] for a in answers)
    assert len(answers) == server.count() == 7 and expected > 0
    listed = json.loads(agentlog("runs", "--db", db, "--json", env=env).stdout)[0]
    assert listed["cost_usd"] == pytest.approx(expected) and listed["saved_usd"] == 0
    assert f"cost      ${expected:,.4f} spent" in agentlog("show", parent, "--db", db, env=env).stdout
    assert f"${expected:,.4f}" in result.stderr  # the outcome line

    # A fork that changes nothing reuses every answer: it spends nothing and saves what the parent paid.
    fork = agentlog("fork", parent, "--at", "1", "--db", db, "-q", env=env)
    assert fork.returncode == 0, fork.stderr
    assert server.count() == 7
    replayed = json.loads(agentlog("replay", fork_id(db, parent), "--db", db, "--json", env=env).stdout)
    assert replayed["cost"]["spent_usd"] == 0 and replayed["cost"]["calls_made"] == 0
    assert replayed["cost"]["saved_usd"] == pytest.approx(expected) and replayed["cost"]["calls_reused"] == 7


def fork_id(db: str, parent: str) -> str:
    runs = json.loads(agentlog("runs", "--db", db, "--json").stdout)
    return next(r["run_id"] for r in runs if r["parent_run_id"] == parent)


def test_an_unknown_price_is_shown_as_unknown_never_as_zero(db, env, server):
    result = agentlog("run", TASK, "--model", "llama3.1", "--db", db, "-q", env=env)
    assert result.returncode == 0, result.stderr
    run_id = only_run(db)
    listed = json.loads(agentlog("runs", "--db", db, "--json", env=env).stdout)[0]
    assert listed["cost_usd"] is None and listed["unpriced"] == ["llama3.1"]
    table = agentlog("runs", "--db", db, env=env).stdout
    assert "  unknown  $0.0000  " in table.splitlines()[2]  # cost unknown; nothing was reused, so nothing saved
    assert "cost      unknown (no price for llama3.1) spent" in agentlog("show", run_id, "--db", db, env=env).stdout
    assert json.loads(agentlog("replay", run_id, "--db", db, "--json", env=env).stdout)["cost"]["spent_usd"] is None


def test_run_cost_counts_a_fork_from_its_fork_point(tmp_path):
    from agentlog.actors import agent_configs, run
    from agentlog.replay import Overrides, fork

    with SQLiteStore(tmp_path / "log.db") as store:
        parent = run(store, TASK, agents=agent_configs("offline"))
        handle = fork(store, parent.run_id, 4, overrides=Overrides(temperatures={"writer": 0.9}))
        child = handle.wait(timeout=30)
        cost = run_cost(store.events(child.run_id))
        assert cost.spent_usd == 0 and cost.spent_tokens == child.tokens > 0
        # The research answer was copied, neither made nor reused; the writer's calls are new.
        assert cost.calls_made == 3 and cost.calls_reused == 3


# --- budgets ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag,value", [("--budget-usd", "0"), ("--budget-usd", "nan"), ("--budget-tokens", "-5")])
def test_a_budget_of_zero_or_less_is_refused_before_anything_is_written(tmp_path, flag, value):
    db = tmp_path / "never.db"
    result = agentlog("run", TASK, "--model", "offline", "--db", str(db), f"{flag}={value}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("agentlog: ")
    assert not db.exists()


def test_a_usd_budget_needs_a_price_for_every_model(db, env, server):
    result = agentlog("run", TASK, "--model", "llama3.1", "--budget-usd", "1", "--db", db, env=env)
    assert result.returncode == 2 and "needs a price for llama3.1" in result.stderr
    assert server.count() == 0 and not Path(db).exists()


def test_a_token_budget_stops_the_run_before_a_request_and_a_raised_one_resumes_without_repeats(db, env, server):
    result = agentlog("run", TASK, "--model", "gpt-4o-mini", "--budget-tokens", "400", "--db", db, "-q", env=env)
    assert result.returncode == 1
    assert "budget reached" in result.stderr and "--budget-tokens" in result.stderr
    run_id = only_run(db)
    made = server.count()
    recorded = events(db, run_id)
    reached = [d for _, t, d in recorded if t == "BudgetReached"]
    assert len(reached) == 1 and reached[0]["budget"] == "tokens" and reached[0]["limit"] == 400
    spent_before = sum(d["usage"]["total_tokens"] for _, t, d in recorded if t == "LLMCallAnswered")
    assert spent_before >= 400
    # Every answered call was sent once; the stopped call's intent is logged but it was never sent.
    assert made == sum(t == "LLMCallAnswered" for _, t, _ in recorded)
    assert recorded[-1][1] == "RunFailed" and recorded[-2][1] == "BudgetReached"

    again = agentlog("resume", run_id, "--db", db, "-q", env=env)  # the same budget: still stopped, no call
    assert again.returncode == 1 and server.count() == made

    raised = agentlog("resume", run_id, "--budget-tokens", "100000", "--db", db, "-q", env=env)
    assert raised.returncode == 0, raised.stderr
    assert server.count() == 7  # the whole run's calls, none of them twice
    sent = [json.dumps(r["body"]["messages"], sort_keys=True) for r in server.requests]
    assert len(set(sent)) == len(sent)
    assert "verified" in agentlog("verify", run_id, "--db", db).stdout


def test_a_usd_budget_stops_the_run(db, env, server):
    # Each call costs dollars at this price: the first answer already exceeds $1.
    result = agentlog("run", TASK, "--model", "priced-model", "--budget-usd", "1", "--db", db, "-q", env=env)
    assert result.returncode == 1 and "--budget-usd" in result.stderr
    assert by_model(server) == {"priced-model": 1}
    reached = [d for _, t, d in events(db) if t == "BudgetReached"]
    assert reached[0]["budget"] == "usd" and reached[0]["spent"] > 1
    show = agentlog("show", only_run(db), "--db", db, env=env).stdout
    assert "budget    $1.0000" in show and "BudgetReached" in show


# --- fresh samples ------------------------------------------------------------------------


def test_sample_k_is_a_distinct_request_and_is_reused_as_itself(db, env, server):
    assert agentlog("run", TASK, "--model", "gpt-4o-mini", "--db", db, "-q", env=env).returncode == 0
    first = only_run(db)
    requests = [d for _, t, d in events(db, first) if t == "LLMCallRequested"]
    assert all("sample" not in d["request"] for d in requests)  # sample 1 hashes as requests always did
    assert server.count() == 7

    second = agentlog("run", TASK, "--model", "gpt-4o-mini", "--sample", "2", "--db", db, "-q", env=env)
    assert second.returncode == 0, second.stderr
    assert server.count() == 14  # sample 2 of every request is a new call
    sample2 = next(r["run_id"] for r in json.loads(agentlog("runs", "--db", db, "--json").stdout)
                   if r["run_id"] != first)
    assert {d["request"]["sample"] for _, t, d in events(db, sample2) if t == "LLMCallRequested"} == {2}
    assert all("sample" not in r["body"] for r in server.requests)  # never sent on the wire

    refork = agentlog("fork", sample2, "--at", "1", "--db", db, "-q", env=env)  # sample 2 again: reused
    assert refork.returncode == 0 and server.count() == 14
