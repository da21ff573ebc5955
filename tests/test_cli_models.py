"""In-process models from the command line and TOML configs: ``python:MODULE:FACTORY``."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PYTHON, cli_env

TASK = "Explain how Kubernetes horizontal pod autoscaling works"

MODULE = textwrap.dedent('''
    import threading
    from agentlog import Completion, FunctionModel, Review, ScriptedModel
    from agentlog.models import offline

    def _offline(request):
        return offline.complete({"model": request.model, "messages": request.messages, "tools": request.tools,
                                 "response_format": request.response_format})

    def make():
        return FunctionModel(_offline)

    def judge():
        return ScriptedModel({"reviewer": Review(score=4, approved=False, issues=["thin"], missed_topics=[],
                                                 suggestions=[], summary="strict judge")})

    def broken():
        raise RuntimeError("no weights here")

    def wrong():
        return lambda request: {"content": "a dict"}

    def hangs():
        return lambda request: threading.Event().wait()
''')


def agentlog(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or cli_env(), timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: a module of models, run from its directory."""
    (tmp_path / "mymodels.py").write_text(MODULE)
    return tmp_path


def events(db: Path, run_id: str, cwd: Path) -> list[dict]:
    out = agentlog("show", run_id, "--json", "--db", str(db), cwd=cwd)
    return [json.loads(line) for line in out.stdout.splitlines()]


def only_run(db: Path, cwd: Path) -> str:
    [row] = json.loads(agentlog("runs", "--json", "--db", str(db), cwd=cwd).stdout)
    return row["run_id"]


def test_run_with_a_python_model_records_it_like_any_model(project):
    db = project / "runs.db"
    result = agentlog("run", TASK, "--model", "python:mymodels:make", "--model", "reviewer=offline",
                      "--db", str(db), "-q", cwd=project)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# {TASK}")
    log = events(db, only_run(db, project), project)
    agents = log[0]["data"]["agents"]
    assert agents["writer"]["model"] == "python:mymodels:make" and agents["reviewer"]["model"] == "offline"
    requested = [e["data"] for e in log if e["type"] == "LLMCallRequested"]
    assert {r["agent"]: r["request"]["model"] for r in requested} == {
        "researcher": "python:mymodels:make", "writer": "python:mymodels:make", "reviewer": "offline"}


def test_a_run_config_names_a_model_beside_it_and_the_user_config_one_for_the_cli(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (project / "run.toml").write_text('model = "python:mymodels:make"\n'
                                      '[agents.reviewer]\nmodel = "python:mymodels:judge"\n')
    db = project / "runs.db"
    result = agentlog("run", TASK, "--config", str(project / "run.toml"), "--max-iterations", "1", "--db", str(db),
                      "-q", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    reviews = [e["data"] for e in events(db, only_run(db, elsewhere), elsewhere) if e["type"] == "ReviewScored"]
    assert [r["review"]["summary"] for r in reviews] == ["strict judge"]

    user_config = project / "config.toml"
    user_config.write_text('model = "python:mymodels:make"\n')
    result = agentlog("run", TASK, "--db", str(project / "other.db"), "-q", cwd=project,
                      env=cli_env(AGENTLOG_CONFIG=str(user_config)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("model, needle", [
    ("python:nosuchmodule:make", "model 'python:nosuchmodule:make': cannot import 'nosuchmodule': "
                                 "ModuleNotFoundError: No module named 'nosuchmodule'"),
    ("python:mymodels:nosuch", "model 'python:mymodels:nosuch': mymodels has no attribute 'nosuch'"),
    ("python:mymodels:broken", "model 'python:mymodels:broken': the factory broken() raised RuntimeError: "
                               "no weights here"),
    ("python:mymodels", "write an in-process model as python:package.module:factory"),
    ("writer=python:mymodels:broken", "model 'python:mymodels:broken': the factory broken() raised"),
])
def test_a_factory_that_cannot_be_loaded_is_one_line_and_exit_2_before_any_event(project, model, needle):
    db = project / "runs.db"
    result = agentlog("run", TASK, "--model", "offline", "--model", model, "--db", str(db), cwd=project)

    assert result.returncode == 2
    assert result.stderr.startswith("agentlog: ") and result.stderr.count("\n") == 1 and needle in result.stderr
    assert not db.exists()  # nothing was written, not even the database


def test_a_wrong_answer_fails_the_run_as_an_event_and_it_resumes_with_a_fixed_model(project):
    db = project / "runs.db"
    result = agentlog("run", TASK, "--model", "python:mymodels:wrong", "--db", str(db), "-q", cwd=project)

    assert result.returncode == 1
    run_id = only_run(db, project)
    assert f"agentlog: run {run_id} failed: researcher call research/1 failed after 1 attempt(s): bad_response: " \
           "model 'python:mymodels:wrong' returned a dict, not a Completion or a str" in result.stderr
    assert "Traceback" not in result.stderr

    # The user fixes the factory and resumes: the failed call is made again, now answered.
    (project / "mymodels.py").write_text(MODULE + "\nwrong = make\n")
    resumed = agentlog("resume", run_id, "--db", str(db), "-q", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"# {TASK}")
    failed = [e["data"] for e in events(db, run_id, project) if e["type"] == "LLMCallFailed"]
    assert [(f["call_id"], f["error_kind"]) for f in failed] == [("research/1", "bad_response")]


def test_a_model_that_hangs_is_stopped_by_the_runs_timeout(project):
    db = project / "runs.db"
    result = agentlog("run", TASK, "--model", "python:mymodels:hangs", "--timeout", "0.3", "--retries", "2",
                      "--db", str(db), "-q", cwd=project)

    assert result.returncode == 1
    run_id = only_run(db, project)
    failed = [e["data"] for e in events(db, run_id, project) if e["type"] == "LLMCallFailed"]
    assert [(f["attempt"], f["error_kind"], f.get("gave_up", False)) for f in failed] == [(1, "timeout", False),
                                                                              (2, "timeout", True)]
    assert "did not answer within 0.3 s" in result.stderr and "Traceback" not in result.stderr


def test_fork_and_rereview_take_python_models(project):
    db = project / "runs.db"
    assert agentlog("run", TASK, "--model", "offline", "--db", str(db), "-q", cwd=project).returncode == 0
    run_id = only_run(db, project)

    rereview = agentlog("rereview", run_id, "--model", "python:mymodels:judge", "--json", "--db", str(db), cwd=project)
    assert rereview.returncode == 0, rereview.stderr
    assert {row["new_score"] for row in json.loads(rereview.stdout)} == {4}

    forked = agentlog("fork", run_id, "--at", "7", "--model", "reviewer=python:mymodels:judge", "--db", str(db),
                      "-q", cwd=project)
    assert forked.returncode == 0, forked.stderr
    assert "scores 4 -> 4" in forked.stderr
