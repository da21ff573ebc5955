"""`agentlog copy`: every run's events copied identically, forks sharing their prefix again,
the runs index rebuilt, idempotent, refused in one line when the destination differs."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec
import psycopg
import pytest

from agentlog.events import RunFailed, RunForked
from agentlog.store import ConcurrencyError, SQLiteStore, open_store
from agentlog.store.copy import same_event
from tests.damage import damage_event
from tests.test_cli import agentlog
from tests.test_export_import import write_as_the_v1_release_did
from tests.test_store_contract import approved_run


def ok(*args: str):
    done = agentlog(*args)
    assert done.returncode == 0, done.stderr
    return done


def run_ids(db: Path) -> list[str]:
    return [r["run_id"] for r in json.loads(ok("runs", "--db", str(db), "--json").stdout)]


def assert_same_log(a: Path, b: Path) -> None:
    """Every run of ``a`` is in ``b`` with the same events (seq, type, time, content) and index row."""
    with SQLiteStore(a, create=False, read_only=True) as src, SQLiteStore(b, create=False, read_only=True) as dst:
        runs = src.list_runs()
        assert sorted(r.run_id for r in dst.list_runs()) == sorted(r.run_id for r in runs)
        for run in runs:
            ours, theirs = src.read(run.run_id), dst.read(run.run_id)
            assert len(ours) == len(theirs) == run.last_seq
            assert all(same_event(x, y) for x, y in zip(ours, theirs))
            assert dst.get_run(run.run_id) == run


def shares(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT run_id, parent_run_id, upto_seq, recorded_at FROM shares ORDER BY run_id").fetchall()


@pytest.fixture(scope="module")
def made_once(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("copy") / "source.db"
    ok("run", "write-ahead logging", "--model", "offline", "--db", str(db), "-q")
    parent = run_ids(db)[0]
    ok("fork", parent, "--at", "5", "--threshold", "9", "--db", str(db), "-q")
    assert len(shares(db)) == 1
    return db


@pytest.fixture
def source(made_once, tmp_path) -> Path:
    """A log with a finished run and a fork of it (which shares the run's first events)."""
    db = tmp_path / "source.db"
    shutil.copyfile(made_once, db)
    return db


def test_copy_gives_identical_runs_and_a_fork_shares_its_prefix_again(source, tmp_path):
    dest = tmp_path / "dest.db"
    done = ok("copy", "--from", str(source), "--to", str(dest))
    assert "events of 2 runs" in done.stdout and "0 already up to date" in done.stdout
    assert_same_log(source, dest)
    # The fork holds a share row, not a copy of its parent's first events, at the destination too.
    assert [row[:3] for row in shares(dest)] == [row[:3] for row in shares(source)]
    assert shares(dest) == shares(source)
    with closing(sqlite3.connect(dest)) as con:
        fork = shares(dest)[0][0]
        assert con.execute("SELECT min(seq) FROM events WHERE run_id = ?", (fork,)).fetchone() == (6,)
    # The copied runs replay and verify with no model at all.
    ok("verify", "--all", "--db", str(dest))
    ok("replay", shares(dest)[0][0], "--db", str(dest))


def test_copying_again_adds_nothing_and_a_run_that_grew_brings_only_its_new_events(tmp_path):
    source, dest = tmp_path / "source.db", tmp_path / "dest.db"
    waiting = agentlog("run", "caching", "--model", "offline", "--approval", "final", "--db", str(source), "-q")
    assert waiting.returncode == 4, waiting.stderr
    run_id = run_ids(source)[0]
    ok("copy", "--from", str(source), "--to", str(dest))
    before = dest.read_bytes()
    again = ok("copy", "--from", str(source), "--to", str(dest))
    assert "copied 0 events of 0 runs" in again.stdout and "1 already up to date" in again.stdout
    assert dest.read_bytes() == before

    ok("approve", run_id, "--note", "fine", "--db", str(source), "-q")
    with SQLiteStore(dest, create=False, read_only=True) as d:
        held = d.last_seq(run_id)
    grown = ok("copy", "--from", str(source), "--to", str(dest))
    with SQLiteStore(source, create=False, read_only=True) as s:
        new = s.last_seq(run_id) - held
    assert new > 0 and f"copied {new} events of 1 run" in grown.stdout
    assert_same_log(source, dest)


def test_a_destination_that_differs_is_refused_in_one_line_and_nothing_is_copied(source, tmp_path):
    dest = tmp_path / "dest.db"
    ok("copy", "--from", str(source), "--to", str(dest))
    first = run_ids(source)[-1]
    with SQLiteStore(dest, create=False) as d:  # the destination's copy went its own way
        d.append(first, [RunFailed(reason="changed at the destination")], d.last_seq(first))
    ok("run", "another run", "--model", "offline", "--db", str(source), "-q")

    refused = agentlog("copy", "--from", str(source), "--to", str(dest))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("agentlog: ")
    assert first in refused.stderr and "Traceback" not in refused.stderr
    assert len(run_ids(dest)) == 2  # the new run was not copied either


def test_an_event_that_differs_is_named(tmp_path):
    source, dest = tmp_path / "source.db", tmp_path / "dest.db"
    assert agentlog("run", "x", "--model", "offline", "--approval", "final", "--db", str(source), "-q").returncode == 4
    run_id = run_ids(source)[0]
    ok("copy", "--from", str(source), "--to", str(dest))
    ok("approve", run_id, "--no-continue", "--db", str(source))
    ok("reject", run_id, "--note", "no", "--no-continue", "--db", str(dest))
    refused = agentlog("copy", "--from", str(source), "--to", str(dest))
    assert refused.returncode == 2
    with SQLiteStore(dest, create=False, read_only=True) as d:
        seq = d.last_seq(run_id)
    assert f"run {run_id} differs at event {seq}" in refused.stderr


def test_an_older_log_is_copied_as_today_s_versions(tmp_path):
    old, dest = tmp_path / "old.db", tmp_path / "dest.db"
    run_id = write_as_the_v1_release_did(old)
    ok("copy", "--from", str(old), "--to", str(dest))
    assert_same_log(old, dest)
    with SQLiteStore(dest, create=False, read_only=True) as d:
        assert d.read(run_id)[0].version == 2  # upcast on read, stored as today's version
    ok("verify", run_id, "--db", str(dest))


def test_a_copy_stopped_by_a_damaged_event_leaves_whole_runs_and_resumes(source, tmp_path):
    dest = tmp_path / "dest.db"
    parent, fork = sorted(run_ids(source), key=lambda r: r in {s[0] for s in shares(source)})
    damage_event(source, fork, 8, "truncated")
    stopped = agentlog("copy", "--from", str(source), "--to", str(dest))
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    last = stopped.stderr.splitlines()[-1]
    assert last.startswith("agentlog: ") and f"run {fork}" in last and "event 8" in last
    with SQLiteStore(dest, create=False, read_only=True) as d:  # the parent whole, the fork not at all
        assert [r.run_id for r in d.list_runs()] == [parent]
        assert d.last_seq(fork) == 0
    ok("verify", parent, "--db", str(dest))


@pytest.mark.parametrize("args, says", [
    (["--from", "{tmp}/missing.db", "--to", "{tmp}/dest.db"], "no agentlog database at"),
    (["--from", "{tmp}/source.db", "--to", "{tmp}/./source.db"], "name the same log"),
    (["--from", "{tmp}/source.db", "--to", "mysql://somewhere/log"], "mysql://"),
    (["--from", "{tmp}/source.db"], "--to"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    SQLiteStore(tmp_path / "source.db").close()
    done = agentlog("copy", *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("agentlog: ") and done.stderr.count("\n") == 1
    assert says in done.stderr
    assert not (tmp_path / "dest.db").exists()


# --- the store call a copy writes with ------------------------------------------------------


def fork_of(parent: list, at: int, run_id: str) -> list:
    return [*parent[:at], RunForked(parent_run_id=run_id, parent_seq=at), *parent[at:]]


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request, tmp_path):
    """A source and a destination store of one backend."""
    if request.param == "sqlite":
        targets = [str(tmp_path / "a.db"), str(tmp_path / "b.db")]
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        names = [cluster.database(), cluster.database()]
        request.addfinalizer(lambda: [cluster.drop(n) for n in names])
        targets = [cluster.url(n) for n in names]
    with open_store(targets[0]) as a, open_store(targets[1]) as b:
        yield a, b, targets[1]


def shares_at(target: str) -> list[tuple]:
    """The destination's share rows, read with the backend's own driver (the store has no call for them)."""
    sql = "SELECT run_id, parent_run_id, upto_seq FROM shares ORDER BY run_id"
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as db:
            return db.execute(sql).fetchall()
    with closing(sqlite3.connect(target)) as db:
        return db.execute(sql).fetchall()


def test_append_recorded_keeps_each_event_s_time_and_checks_the_expected_seq(two_stores):
    a, b, _ = two_stores
    a.append("r", approved_run("t")[:3], 0)
    a.append("r", approved_run("t")[3:], 3)
    recorded = a.read("r")
    assert len({s.recorded_at for s in recorded}) == 2
    assert b.append_recorded("r", recorded[:3], 0) == 3
    with pytest.raises(ConcurrencyError):
        b.append_recorded("r", recorded[3:], 2)
    assert b.append_recorded("r", recorded[3:], 3) == len(recorded)
    assert all(same_event(x, y) for x, y in zip(recorded, b.read("r"), strict=True))
    assert b.get_run("r") == a.get_run("r")  # the index as a fold over the copied times


def test_a_copied_fork_shares_its_parent_s_prefix_only_when_that_reads_back_the_same(two_stores):
    a, b, target = two_stores
    a.append("p", approved_run("t"), 0)
    a.append("f", fork_of(approved_run("t"), 2, "p")[:3], 0)
    b.append_recorded("p", a.read("p"), 0)
    copied = a.read("f")
    # The same fork with its prefix recorded at two times: a share would read back one time.
    mixed = [msgspec.structs.replace(s, run_id="g", recorded_at=s.recorded_at + (s.seq == 2)) for s in copied]
    b.append_recorded("f", copied, 0)
    b.append_recorded("g", mixed, 0)
    assert all(same_event(x, y) for x, y in zip(copied, b.read("f"), strict=True))
    assert [s.recorded_at for s in b.read("g")] == [s.recorded_at for s in mixed]
    assert shares_at(target) == [("f", "p", 2)]  # f shares p's first two events; g holds its own


# --- SQLite <-> PostgreSQL (a real cluster: tests/postgres.py) -----------------------------


def assert_same_store(a: str, b: str) -> None:
    with open_store(a, create=False, read_only=True) as src, open_store(b, create=False, read_only=True) as dst:
        runs = src.list_runs()
        assert sorted(r.run_id for r in dst.list_runs()) == sorted(r.run_id for r in runs)
        for run in runs:
            ours, theirs = src.read(run.run_id), dst.read(run.run_id)
            assert len(ours) == len(theirs) == run.last_seq
            assert all(same_event(x, y) for x, y in zip(ours, theirs))
            assert dst.get_run(run.run_id) == run


def test_a_log_goes_to_postgres_and_back_identical(source, tmp_path, pg_url, postgres_cluster):
    back = tmp_path / "back.db"
    there = ok("copy", "--from", str(source), "--to", pg_url)
    assert "events of 2 runs" in there.stdout
    assert_same_store(str(source), pg_url)
    with psycopg.connect(pg_url) as db:  # the fork shares its parent's prefix in Postgres too
        assert db.execute("SELECT run_id, parent_run_id, upto_seq FROM shares").fetchall() == \
            [row[:3] for row in shares(source)]
    again = ok("copy", "--from", str(source), "--to", pg_url)
    assert "copied 0 events of 0 runs" in again.stdout and "2 already up to date" in again.stdout

    ok("copy", "--from", pg_url, "--to", str(back))
    assert_same_log(source, back)
    assert shares(back) == shares(source)
    ok("verify", "--all", "--db", pg_url)  # replays with the recorded answers only: no model, no call
    ok("verify", "--all", "--db", str(back))
    for done in (there, again):
        assert postgres_cluster.password not in done.stdout + done.stderr


def test_a_postgres_destination_that_differs_is_refused(source, pg_url, postgres_cluster):
    ok("copy", "--from", str(source), "--to", pg_url)
    run_id = run_ids(source)[0]
    with open_store(pg_url) as there:
        there.append(run_id, [RunFailed(reason="changed there")], there.last_seq(run_id))
    refused = agentlog("copy", "--from", str(source), "--to", pg_url)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and run_id in refused.stderr
    assert postgres_cluster.password not in refused.stderr
    same = agentlog("copy", "--from", pg_url, "--to", pg_url)
    assert same.returncode == 2 and "same log" in same.stderr and postgres_cluster.password not in same.stderr
