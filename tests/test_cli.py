"""The command line as a user meets it: a real subprocess, a real log file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import PYTHON, SECRET, cli_env, logged_events

TASK = "Explain how Kubernetes horizontal pod autoscaling works"


def agentlog(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "runs.db")


def run_id_of(db: str) -> str:
    out = agentlog("runs", "--db", db, "--json")
    return json.loads(out.stdout)[0]["run_id"]


def test_offline_run_then_runs_and_show(db):
    result = agentlog("run", TASK, "--model", "offline", "--db", db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# {TASK}")  # the final draft on stdout
    assert "offline model (deterministic stand-in" in result.stderr  # clearly labelled
    assert "[review-2] reviewer -> offline" in result.stderr and "score 7/10" in result.stderr  # live progress
    assert "finished (approved)" in result.stderr

    runs = agentlog("runs", "--db", db)
    assert runs.returncode == 0
    header, _, row = runs.stdout.splitlines()[:3]
    assert header.split()[:4] == ["ID", "TASK", "PIPELINE", "STATUS"]
    assert "finished" in row and " 8 " in row and " 3 " in row

    none = agentlog("runs", "--db", db, "--status", "failed")  # a filter nothing matches is not an empty log
    assert none.returncode == 0 and none.stdout == ""
    assert "no runs match" in none.stderr and "no runs yet" not in none.stderr

    show = agentlog("show", run_id_of(db)[:8], "--db", db)  # a unique prefix is enough
    assert show.returncode == 0
    assert "scores    6 -> 7 -> 8" in show.stdout
    assert "RunFinished" in show.stdout and "final draft" in show.stdout


def test_out_writes_the_draft_to_a_file(db, tmp_path):
    out = tmp_path / "draft.md"
    result = agentlog("run", TASK, "--model", "offline", "--db", db, "--out", str(out), "-q")
    assert result.returncode == 0 and result.stdout == ""
    assert out.read_text().startswith(f"# {TASK}")


def test_run_against_a_local_server_logs_requests_and_answers_not_the_key(db, server):
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    result = agentlog("run", TASK, "--model", "gpt-4o-mini", "--db", db, "-q", env=env)
    assert result.returncode == 0, result.stderr
    rows = [(t, d) for _run, _seq, t, d in logged_events(db)]
    requested = [d for t, d in rows if t == "LLMCallRequested"]
    answered = [d for t, d in rows if t == "LLMCallAnswered"]
    assert len(requested) == len(answered) == server.count() == 7
    assert [r["request"]["messages"] for r in requested] == [r["body"]["messages"] for r in server.requests]
    assert all(a["usage"]["total_tokens"] > 0 for a in answered)
    for path in Path(db).parent.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.fixture
def bare_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTLOG_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTLOG_CONFIG", "/nonexistent/config.toml")


@pytest.mark.parametrize("extra_installed", [False, True])
def test_without_any_model_configuration(db, bare_env, monkeypatch, capsys, extra_installed):
    from agentlog import cli
    from agentlog.models import local

    monkeypatch.setattr(local, "local_available", lambda: extra_installed)
    if not extra_installed:
        assert cli.main(["run", TASK, "--db", db]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "OPENAI_API_KEY" in err[0] and "--model offline" in err[0] and "agentlog[local]" in err[0]
    else:
        # With the extra, the local model is the default and it says so, once the input is valid.
        monkeypatch.setattr(cli, "start_run", _refuse_to_start)
        monkeypatch.setattr(cli.Gateway, "check", lambda self, model: None)
        with pytest.raises(_Started) as started:
            cli.main(["run", TASK, "--db", db])
        assert {a.model for a in started.value.agents.values()} == {"local"}
        err = capsys.readouterr().err
        assert "using the local model" in err


class _Started(Exception):
    def __init__(self, agents):
        self.agents = agents


def _refuse_to_start(store, task, *, agents, **kwargs):
    raise _Started(agents)


@pytest.mark.parametrize("args,needle", [
    (["show", "nosuchrun"], "no run 'nosuchrun'"),
    (["run", "   ", "--model", "offline"], "task is empty"),
    (["run", TASK, "--model", "offline", "--max-iterations", "0"], "at least 1"),
    (["run", TASK, "--model", "offline", "--max-iterations", "many"], "whole number"),
    (["run", TASK, "--model", "offline", "--threshold", "11"], "1 to 10"),
    (["run", TASK, "--model", "offline", "--temperature", "writer=hot"], "must be a number"),
    (["run", TASK, "--model", "offline", "--temperature", "writer=3"], "between 0 and 2"),
    (["run", TASK, "--model", "editor=offline"], "unknown agent 'editor'"),
    (["run", TASK, "--model", "writer="], "AGENT=VALUE"),
    (["run", TASK, "--model", "offline", "--bogus"], "unrecognized arguments"),
    (["fork", "nosuchrun", "--at", "3"], "no run"),
    (["verify"], "--all"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_gets_one_line_and_exit_2(db, args, needle):
    agentlog("run", TASK, "--model", "offline", "--db", db, "-q")
    result = agentlog(*args, "--db", db) if args[0] != "frobnicate" else agentlog(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_log_is_refused(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, this is not SQLite\n" * 100)
    result = agentlog("runs", "--db", str(junk))
    assert result.returncode == 2 and "not an agentlog database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_log_is_not_created_by_reading_commands(tmp_path):
    path = tmp_path / "typo.db"
    result = agentlog("runs", "--db", str(path))
    assert result.returncode == 2 and "no agentlog database" in result.stderr
    assert not path.exists()


def test_an_unreadable_log_is_refused(tmp_path):
    # Root reads every file, so what cannot be read even as root stands in the log's place: a directory.
    path = tmp_path / "locked.db"
    path.mkdir()
    for args in (["runs"], ["show", "abc"], ["run", TASK, "--model", "offline"]):
        result = agentlog(*args, "--db", str(path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"agentlog: {path} is a directory, not a database file"
        assert "Traceback" not in result.stderr
    assert list(path.iterdir()) == []


def test_default_db_location_follows_xdg(tmp_path):
    env = cli_env(XDG_DATA_HOME=str(tmp_path / "data"))
    result = agentlog("run", TASK, "--model", "offline", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "agentlog" / "agentlog.db").exists()
    assert agentlog("runs", env=env).stdout.count("finished") == 1


def test_config_file_sets_models_and_db(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'model = "offline"\ndb = "{tmp_path / "from-config.db"}"\n[agents.writer]\ntemperature = 0.9\n')
    env = cli_env(AGENTLOG_CONFIG=str(config))
    result = agentlog("run", TASK, "-q", env=env)
    assert result.returncode == 0, result.stderr
    replay = agentlog("replay", run_id_of(str(tmp_path / "from-config.db")), "--json", env=env)
    agents = json.loads(replay.stdout)["agents"]
    assert agents["writer"] == {"model": "offline", "temperature": 0.9, "system_prompt": None, "max_tokens": None}


def test_a_broken_config_file_is_one_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("model = [unclosed\n")
    result = agentlog("runs", env=cli_env(AGENTLOG_CONFIG=str(config)))
    assert result.returncode == 2 and str(config) in result.stderr


def test_commands_that_call_no_model_do_not_load_the_openai_client(db):
    # Importing `openai` costs about half a second: reading, replaying and verifying a log,
    # and a run on the offline model, never call a remote model, so they must not pay it.
    assert agentlog("run", TASK, "--model", "offline", "--db", db).returncode == 0
    run_id = run_id_of(db)
    script = (
        "import sys\n"
        "from agentlog.cli import main\n"
        "for argv in sys.argv[1:]:\n"
        "    assert main(argv.split()) == 0, argv\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'openai'))\n"
    )
    commands = [f"runs --db {db}", f"show {run_id} --db {db}", f"replay {run_id} --db {db}",
                f"verify {run_id} --db {db}", f"run {TASK.split()[0]} --model offline --db {db}"]
    result = subprocess.run([PYTHON, "-c", script, *commands], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
