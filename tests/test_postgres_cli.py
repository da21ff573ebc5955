"""The command line against PostgreSQL, as a user meets it: real subprocesses, a real cluster,
a real chat-completions server on 127.0.0.1 counting the calls.

A run recorded in Postgres replays, verifies and forks without a call, and its events are
the ones an SQLite log holds; a database agentlog cannot use is one line and exit 2, and
the URL's password is in no output.
"""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from agentlog.store import open_store, pgschema
from tests.conftest import PYTHON, SECRET, cli_env
from tests.postgres import free_port
from tests.test_golden import GOLDEN, PASSING

TASK = "Explain how Kubernetes horizontal pod autoscaling works"


def agentlog(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)


def no_password(cluster, *results: subprocess.CompletedProcess) -> None:
    for result in results:
        assert cluster.password not in result.stdout + result.stderr


def test_a_run_on_postgres_replays_verifies_and_forks_without_a_call(postgres_cluster, pg_url, server):
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    run = agentlog("run", TASK, "--model", "gpt-4o-mini", "--db", pg_url, env=env)
    assert run.returncode == 0, run.stderr
    assert server.count() == 7
    assert f"(log: {pg_url.replace(postgres_cluster.password, '***')})" in run.stderr
    run_id = json.loads(agentlog("runs", "--db", pg_url, "--json").stdout)[0]["run_id"]

    replay = agentlog("replay", run_id, "--db", pg_url, env=env)
    verify = agentlog("verify", run_id, "--db", pg_url, env=env)
    assert replay.returncode == 0 and "scores" in replay.stdout, replay.stderr
    assert verify.returncode == 0 and "verified" in verify.stdout, verify.stdout + verify.stderr

    exported = [json.loads(line) for line in agentlog("export", run_id, "--db", pg_url).stdout.splitlines()]
    first_review = next(e["seq"] for e in exported if e["type"] == "ReviewScored")
    fork = agentlog("fork", run_id, "--at", str(first_review), "--db", pg_url, env=env)
    assert fork.returncode == 0, fork.stderr
    assert server.count() == 7  # every answer the fork needed was in its parent's log
    runs = json.loads(agentlog("runs", "--db", pg_url, "--json").stdout)
    assert sorted(r["status"] for r in runs) == ["finished", "finished"]
    secret_seen = [r for r in (run, replay, verify, fork) if SECRET in r.stdout + r.stderr]
    assert secret_seen == []
    no_password(postgres_cluster, run, replay, verify, fork)
    with psycopg.connect(pg_url) as db:  # nor is the key in the log
        assert db.execute("SELECT count(*) FROM events WHERE position(%s in encode(data, 'escape')) > 0",
                          (SECRET,)).fetchone() == (0,)


@pytest.mark.parametrize("name", [*PASSING, "diverges-threshold"])
def test_golden_logs_in_postgres_verify_and_hold_what_sqlite_holds(postgres_cluster, tmp_path, name):
    url, sqlite_db = postgres_cluster.url(postgres_cluster.database()), str(tmp_path / "golden.db")
    for db in (url, sqlite_db):
        done = agentlog("import", str(GOLDEN / f"{name}.jsonl"), "--db", db)
        assert done.returncode == 0, done.stderr
    verified = agentlog("verify", "--all", "--db", url)
    if name in PASSING:
        assert verified.returncode == 0 and "DIVERGES" not in verified.stdout, verified.stdout + verified.stderr
    else:  # recorded by other code: it diverges, at its first difference
        assert verified.returncode == 1 and "DIVERGES at event 17" in verified.stdout
    with open_store(url, read_only=True) as pg, open_store(sqlite_db, read_only=True) as lite:
        runs = [r.run_id for r in lite.list_runs()]
        assert [r.run_id for r in pg.list_runs()] == runs
        for run_id in runs:
            assert pg.events(run_id) == lite.events(run_id), run_id
            assert pg.lineage(run_id) == lite.lineage(run_id)


def test_a_database_without_the_log_is_said_so_by_readers_and_made_by_writers(postgres_cluster, pg_url):
    for command in (["runs"], ["show", "abc"], ["verify", "--all"], ["export", "abc"]):
        done = agentlog(*command, "--db", pg_url)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "holds no agentlog log" in done.stderr, done.stderr
        no_password(postgres_cluster, done)
    with psycopg.connect(pg_url) as db:  # looking made nothing
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    run = agentlog("run", TASK, "--model", "offline", "--db", pg_url, "-q")
    assert run.returncode == 0, run.stderr
    assert agentlog("runs", "--db", pg_url).returncode == 0


def test_a_newer_schema_is_refused_in_one_line(postgres_cluster, pg_url):
    assert agentlog("run", TASK, "--model", "offline", "--db", pg_url, "-q").returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("INSERT INTO agentlog_schema VALUES (%s, 'm999_from_the_future', 0)",
                   (pgschema.SCHEMA_VERSION + 1,))
    for command in (["runs"], ["run", TASK, "--model", "offline", "-q"]):
        done = agentlog(*command, "--db", pg_url)
        errors = [line for line in done.stderr.splitlines() if line.startswith("agentlog:")]
        assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "written by a newer agentlog" in errors[0] and "upgrade agentlog" in errors[0]
        no_password(postgres_cluster, done)


@pytest.mark.parametrize("case", ["closed port", "wrong password", "no such database", "port not a number",
                                  "bad parameter"])
def test_a_database_that_cannot_be_reached_is_one_line_exit_2_and_nothing_is_paid_for(postgres_cluster, pg_url,
                                                                                       server, case):
    database = pg_url.rsplit("/", 1)[1]
    url, needle = {
        "closed port": (postgres_cluster.url(database, port=free_port()), "Connection refused"),
        "wrong password": (postgres_cluster.url(database, password="wrong-pass-77"), "password authentication failed"),
        "no such database": (postgres_cluster.url("nosuchdb"), 'database "nosuchdb" does not exist'),
        "port not a number": (pg_url.replace(f":{postgres_cluster.port}/", ":fivefourthreetwo/"), "port"),
        "bad parameter": (pg_url + "?sslmode=sometimes", "sslmode"),
    }[case]
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    for command in (["runs"], ["run", TASK, "--model", "gpt-4o-mini"]):
        done = agentlog(*command, "--db", url, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("agentlog: cannot connect to postgresql://agentlog:***@127.0.0.1:")
        assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
        assert "wrong-pass-77" not in done.stderr
        no_password(postgres_cluster, done)
    assert server.count() == 0


def test_queued_runs_on_postgres_are_driven_by_a_worker_and_no_output_shows_the_password(postgres_cluster, pg_url):
    queued = [agentlog("run", task, "--model", "offline", "--queue", "--db", pg_url) for task in ("WAL", "MVCC")]
    assert [q.returncode for q in queued] == [0, 0], queued[0].stderr
    assert all("a worker drives them: agentlog worker --db URL (or $AGENTLOG_DB)" in q.stderr for q in queued)
    worker = agentlog("worker", "--concurrency", "2", "--idle-exit", "1", "--db", pg_url)
    assert worker.returncode == 0, worker.stderr
    assert "2 claimed, 2 finished" in worker.stderr
    runs = json.loads(agentlog("runs", "--db", pg_url, "--json").stdout)
    assert sorted(r["run_id"] for r in runs) == sorted(q.stdout.strip() for q in queued)
    assert {r["status"] for r in runs} == {"finished"}
    no_password(postgres_cluster, *queued, worker)
