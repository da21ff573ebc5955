"""`agentlog watch RUN`: another process's run printed event by event as it is appended."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path

import pytest

from agentlog.models import offline
from agentlog.store import SQLiteStore, open_store
from agentlog.store.pgnotify import Listener
from tests.conftest import PYTHON, SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_cli import agentlog
from tests.test_store_contract import approved_run

TIMEOUT = 60


def offline_answer(body: dict) -> dict:
    completion = offline.complete(body)
    return {"content": completion.content, "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens}


class GatedServer(FakeOpenAIServer):
    """Answers like the offline model, but holds request number ``at`` (the first by default)
    until ``gate`` is set."""

    def __init__(self, at: int = 1) -> None:
        self.arrived, self.gate = threading.Event(), threading.Event()
        self._at, self._seen, self._seen_lock = at, 0, threading.Lock()
        super().__init__(responder=self._respond)

    def _respond(self, body: dict) -> dict:
        with self._seen_lock:
            self._seen += 1
            held = self._seen == self._at
        if held:
            self.arrived.set()
            assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        return offline_answer(body)


class Lines:
    """A process's stdout, line by line, read in a thread so every wait has a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._queue = proc, [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str) -> str:
        while True:
            line = self._queue.get(timeout=TIMEOUT)
            assert line is not None, f"ended before a line matching {pattern!r}: {self.seen}"
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def rest(self) -> list[str]:
        while (line := self._queue.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "agentlog.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(server: GatedServer, procs: list[subprocess.Popen]) -> None:
    server.gate.set()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def seqs(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.match(r"\s*(\d+)  \d\d:\d\d:\d\d  ", line))]


def test_watch_prints_a_run_of_another_process_as_it_is_appended_and_ends_with_it(tmp_path):
    db = str(tmp_path / "log.db")
    env = cli_env(OPENAI_API_KEY=SECRET)
    with GatedServer() as server, ExitStack() as procs:
        writer = procs.enter_context(start("run", "consensus protocols", "--db", db, "--base-url", server.base_url,
                                           "--model", "fake", "-q", env=env))
        assert server.arrived.wait(TIMEOUT)
        with SQLiteStore(db, create=False, read_only=True) as store:
            (run,) = store.list_runs()
            assert run.status == "running"
        watcher = procs.enter_context(start("watch", run.run_id[:6], "--db", db, env=env))
        interrupted = procs.enter_context(start("watch", run.run_id, "--db", db, env=env))
        lines, other = Lines(watcher), Lines(interrupted)
        procs.callback(stop, server, [writer, watcher, interrupted])  # first, if an assertion fails
        # The run is held at its first call: both watchers show it, and the run is not over.
        lines.until(r"LLMCallRequested")
        other.until(r"LLMCallRequested")
        assert watcher.poll() is None
        interrupted.send_signal(signal.SIGINT)
        assert interrupted.wait(TIMEOUT) == 130
        other.rest()
        assert "Traceback" not in interrupted.stderr.read()

        server.gate.set()
        assert writer.wait(TIMEOUT) == 0, writer.stderr.read()
        assert watcher.wait(TIMEOUT) == 0, watcher.stderr.read()
        shown = lines.rest()
    with SQLiteStore(db, create=False, read_only=True) as store:
        last = store.last_seq(run.run_id)
        types = [s.type for s in store.read(run.run_id)]
    assert seqs(shown) == list(range(1, last + 1))  # every event once, in order, none missed
    assert [line.split()[2] for line in shown if re.match(r"\s*\d+  ", line)] == types
    assert shown[-1].startswith(f"run {run.run_id}: finished")


@pytest.fixture(scope="module")
def ended_runs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A log with a finished, a waiting and a failed run."""
    db = tmp_path_factory.mktemp("watch") / "log.db"
    assert agentlog("run", "done", "--model", "offline", "--db", str(db), "-q").returncode == 0
    assert agentlog("run", "asks", "--model", "offline", "--approval", "final", "--db", str(db), "-q").returncode == 4
    failed = agentlog("run", "fails", "--model", "offline", "--budget-tokens", "1", "--db", str(db), "-q")
    assert failed.returncode == 1, failed.stderr
    with SQLiteStore(db, create=False, read_only=True) as store:
        return db, {r.task: r.run_id for r in store.list_runs()}


@pytest.mark.parametrize("task, code, says", [("done", 0, "finished"), ("asks", 4, "waits for a person"),
                                              ("fails", 1, "failed")])
def test_watching_an_ended_run_prints_it_and_exits_as_the_run_ended(ended_runs, task, code, says):
    db, runs = ended_runs
    done = agentlog("watch", runs[task], "--db", str(db))
    assert done.returncode == code, done.stderr
    assert seqs(done.stdout.splitlines())[0] == 1 and says in done.stdout


def test_watching_a_run_that_is_not_there_is_one_line_and_exit_2(ended_runs, tmp_path):
    db, _ = ended_runs
    for args in (["nosuchrun", "--db", str(db)], ["abc", "--db", str(tmp_path / "missing.db")]):
        done = agentlog("watch", *args)
        assert done.returncode == 2 and done.stderr.startswith("agentlog: ") and done.stderr.count("\n") == 1


# --- PostgreSQL: LISTEN/NOTIFY as the hint, reads by seq as the truth ------------------------


def test_a_listener_wakes_at_an_append_to_its_run_and_not_before(pg_url):
    with open_store(pg_url) as store, Listener(pg_url) as listener:
        woke = threading.Event()
        waiter = threading.Thread(target=lambda: (listener.wait("mine", TIMEOUT), woke.set()))
        waiter.start()
        store.append("other", approved_run("not watched")[:2], 0)  # another run's append: no wake-up
        assert not woke.wait(0.5)
        store.append("mine", approved_run("watched")[:1], 0)
        assert woke.wait(TIMEOUT / 2), "the append's notification did not wake the listener"
        waiter.join(TIMEOUT)


def test_watch_on_postgres_follows_a_run_and_reads_on_when_its_listener_drops(pg_url, postgres_cluster):
    events = approved_run("watched on postgres")
    with open_store(pg_url) as store:
        store.append("pgrun", events[:1], 0)
        with start("watch", "pgrun", "--db", pg_url, env=cli_env()) as watcher, ExitStack() as stack:
            stack.callback(lambda: watcher.poll() is None and watcher.kill())
            lines = Lines(watcher)
            lines.until(r"^\s*1  ")
            for seq, event in enumerate(events[1:-1], start=1):  # each append seen before the next is made
                store.append("pgrun", [event], seq)
                lines.until(rf"^\s*{seq + 1}  ")
                if seq == 3:  # the listener's connection is cut: later appends are found by the periodic read
                    with postgres_cluster.admin() as db:
                        cut = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = 'agentlog-listen'").fetchall()
                    assert cut == [(True,)]
            store.append("pgrun", events[-1:], len(events) - 1)
            assert watcher.wait(TIMEOUT) == 0, watcher.stderr.read()
            shown = lines.rest()
            stderr = watcher.stderr.read()
    assert seqs(shown) == list(range(1, len(events) + 1))
    assert shown[-1].startswith("run pgrun: finished")
    assert postgres_cluster.password not in "\n".join(shown) + stderr
