"""The bad-input sweep, from the command line: one line, the right exit code, nothing paid for lost.

Disk-full and read-only-directory cases use a real small tmpfs (mounted here as root), so
SQLite meets a real ENOSPC and a real EROFS; they skip, saying why, where mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from agentlog.events import RunStarted
from agentlog.events.types import AgentConfig
from agentlog.store import SQLiteStore
from tests.conftest import PYTHON, SECRET, cli_env
from tests.test_cli import TASK, agentlog, run_id_of


def one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single ``agentlog:`` line of a refused command (notes may precede it)."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("agentlog: ")]
    assert len(lines) == 1 and not result.stderr.strip().splitlines()[-1].startswith(" "), result.stderr
    return lines[0]


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "log.db")


@pytest.fixture
def finished(db) -> str:
    result = agentlog("run", TASK, "--model", "offline", "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    return run_id_of(db)


# --- run --out ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
def test_out_that_cannot_be_written_is_refused_before_any_call(tmp_path, db, server, where):
    out = tmp_path / "nowhere" / "draft.md" if where == "missing-directory" else tmp_path
    env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
    line = one_line(agentlog("run", TASK, "--model", "gpt-4o-mini", "--db", db, "--out", str(out), env=env))
    assert "--out" in line and str(out) in line
    assert server.count() == 0 and not Path(db).exists()  # nothing was asked, nothing was paid for


def test_out_is_checked_before_a_resume_or_fork_too(tmp_path, db, finished):
    out = str(tmp_path / "nowhere" / "draft.md")
    assert "--out" in one_line(agentlog("fork", finished, "--at", "3", "--db", db, "--out", out))
    assert len(json.loads(agentlog("runs", "--db", db, "--json").stdout)) == 1  # no fork was started


# --- configuration -----------------------------------------------------------------------


def test_a_tool_module_that_raises_on_import_is_one_line(tmp_path, db):
    (tmp_path / "broken_tools.py").write_text("raise RuntimeError('the tool server is not configured')\n")
    config = tmp_path / "agents.toml"
    config.write_text('model = "offline"\ntool_modules = ["broken_tools"]\n')
    line = one_line(agentlog("run", TASK, "--config", str(config), "--db", db))
    assert "'broken_tools'" in line and "RuntimeError: the tool server is not configured" in line
    assert not Path(db).exists()


def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path, db):
    unreadable = tmp_path / "config.toml"
    unreadable.mkdir()  # as root, no file can be made unreadable; a directory in its place cannot be read
    assert str(unreadable) in one_line(agentlog("runs", "--db", db, env=cli_env(AGENTLOG_CONFIG=str(unreadable))))
    assert str(unreadable) in one_line(agentlog("run", TASK, "--config", str(unreadable), "--db", db))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_timeout_must_be_a_positive_finite_number(db, value):
    line = one_line(agentlog("run", TASK, "--model", "offline", "--timeout", value, "--db", db))
    assert "--timeout" in line and value in line
    assert not Path(db).exists()


def test_an_unknown_agent_is_reported_before_the_model_is_resolved(db, server):
    # With a base URL and no --model, resolving the model would fail first ("name the model ...").
    env = cli_env(OPENAI_BASE_URL=server.base_url)
    assert "unknown agent 'editor'" in one_line(agentlog("run", TASK, "--temperature", "editor=0.5", "--db", db,
                                                         env=env))


def test_resume_and_fork_name_an_unknown_agent_before_any_model(db, finished):
    # No key: resolving gpt-4o would fail ("no API key"); the agent is unknown first.
    assert "unknown agent 'editor'" in one_line(agentlog("fork", finished, "--at", "3", "--model", "editor=gpt-4o",
                                                         "--db", db))
    with closing(sqlite3.connect(db)) as con, con:  # unfinished, as if its process had died
        con.execute("DELETE FROM events WHERE type = 'RunFinished'")
        con.execute("UPDATE runs SET status = 'running'")
    assert "unknown agent 'editor'" in one_line(agentlog("resume", finished, "--model", "editor=gpt-4o", "--db", db))


def test_fork_at_is_checked_before_the_model(db, finished):
    # No key: resolving gpt-4o would fail; the event number is wrong first.
    line = one_line(agentlog("fork", finished, "--at", "999", "--model", "writer=gpt-4o", "--db", db))
    assert "--at must be an event of run" in line and "999" in line


# --- tasks -------------------------------------------------------------------------------


def test_a_task_that_is_not_utf8_is_refused_and_shown_escaped(db):
    result = subprocess.run([PYTHON, "-m", "agentlog.cli", "run", b"caf\xe9 \xff task", "--model", "offline",
                             "--db", db], capture_output=True, env=cli_env(), timeout=60)
    result = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                         result.stderr.decode())
    line = one_line(result)
    assert "not valid UTF-8" in line and r"caf\xe9 \xff task" in line
    assert not Path(db).exists()


def test_control_characters_in_a_task_are_shown_escaped(tmp_path, db):
    golden = Path(__file__).parent / "golden" / "content-offline.jsonl"
    rows = [json.loads(line) for line in golden.read_text().splitlines()]
    rows[0]["data"]["task"] = "NUL\x00 and \x1b[31mred\x1b[0m"
    dump = tmp_path / "run.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert agentlog("import", str(dump), "--db", db).returncode == 0
    for args in (["runs"], ["show", rows[0]["run_id"]]):
        out = agentlog(*args, "--db", db).stdout
        assert r"NUL\x00 and \x1b[31mred" in out and "\x00" not in out and "\x1b" not in out


def test_the_offline_model_takes_a_long_task(db):
    task = "Explain " + " and ".join(f"topic number {n}" for n in range(40))
    assert len(task) > 300
    result = agentlog("run", task, "--model", "offline", "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# {task}")


# --- output ------------------------------------------------------------------------------


def test_export_into_a_closed_pipe_is_quiet(db):
    with SQLiteStore(db) as store:  # events far bigger than a pipe's buffer
        started = RunStarted(task="x" * 200_000, pipeline="content", max_iterations=1, threshold=8,
                             agents={"writer": AgentConfig(model="offline", temperature=0.6)})
        store.append("big", [started] * 3, 0)
    proc = subprocess.Popen([PYTHON, "-m", "agentlog.cli", "export", "big", "--db", db], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env())
    first = proc.stdout.read(100)  # as `| head -c 100` does, then it goes away
    proc.stdout.close()
    try:
        code = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
    finally:
        proc.stderr.close()
    assert first.startswith(b'{"run_id": "big"')
    assert code == 0 and err == ""  # the reader had what it wanted: no error, no traceback


# --- serve -------------------------------------------------------------------------------


def test_serve_port_out_of_range(db, finished):
    assert "65535" in one_line(agentlog("serve", "--port", "70000", "--db", db))


def test_serve_on_a_busy_port_is_one_line_exit_2(db, finished):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        line = one_line(agentlog("serve", "--port", str(port), "--db", db, timeout=30))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line


# --- the disk: full, read-only -----------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str):
    """A small file system of its own at ``path``, unmounted afterwards."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, timeout=30)


def test_a_full_disk_is_said_so_and_the_run_resumes_once_space_is_freed(tmp_path):
    with tmpfs(tmp_path / "small", "8m") as disk:
        db = str(disk / "log.db")
        first = agentlog("run", "Explain SQLite WAL mode", "--model", "offline", "--db", db, "-q")
        assert first.returncode == 0, first.stderr
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * (free - 160 * 1024))  # room for the start of a run, not for all of it
        task = "Explain " + " ".join(f"write-ahead logging, part {n}," for n in range(600))
        result = agentlog("run", task, "--model", "offline", "--db", db, "-q")
        line = one_line(result)
        assert "the disk is full" in line and "agentlog resume" in line, line
        run_id = line.rsplit(" ", 1)[-1]
        filler.unlink()  # space is freed
        resumed = agentlog("resume", run_id, "--db", db, "-q")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.startswith("# Explain write-ahead logging")
        assert agentlog("verify", "--all", "--db", db).returncode == 0


@contextmanager
def directory_made_read_only(path: Path):
    """A directory, and a function that makes it read-only: a read-only mount as root
    (root writes in any directory), permissions otherwise."""
    if os.geteuid() == 0:
        with tmpfs(path, "4m") as disk:
            yield disk, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
        return
    path.mkdir()
    try:
        yield path, lambda: path.chmod(0o555)
    finally:
        path.chmod(0o755)


def test_a_log_in_a_read_only_directory_can_still_be_read(tmp_path):
    with directory_made_read_only(tmp_path / "ro") as (disk, make_read_only):
        db = str(disk / "log.db")
        assert agentlog("run", TASK, "--model", "offline", "--db", db, "-q").returncode == 0
        run_id = run_id_of(db)
        make_read_only()
        before = sorted(p.name for p in disk.iterdir())
        for args in (["runs"], ["show", run_id], ["replay", run_id], ["export", run_id], ["verify", run_id]):
            result = agentlog(*args, "--db", db)
            assert result.returncode == 0 and result.stderr == "", (args, result.stderr)
        assert "finished" in agentlog("runs", "--db", db).stdout
        line = one_line(agentlog("fork", run_id, "--at", "3", "--db", db))  # writing is what cannot be done
        assert "cannot be written" in line
        assert sorted(p.name for p in disk.iterdir()) == before
