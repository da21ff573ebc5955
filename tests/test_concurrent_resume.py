"""Two processes resuming the same run at once: exactly one proceeds (it holds the run's
lease), the other is refused before it sends anything (counted at the server)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tests.conftest import SECRET, cli_env
from tests.fake_openai import FakeOpenAIServer
from tests.test_crash import TASK, kill_when, log_rows, start, wire_hash

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("attempt", range(3))
def test_two_resumers_one_proceeds_the_other_stops_clearly(tmp_path, attempt):
    db = str(tmp_path / "log.db")
    with FakeOpenAIServer(delay=0.2) as server:
        env = cli_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=server.base_url)
        proc = start(["run", TASK, "--model", "gpt-4o", "--db", db, "-q"], env)
        assert kill_when(proc, lambda: len(log_rows(db)) >= 5 + attempt)
        proc.stdout.close(), proc.stderr.close()
        with closing(sqlite3.connect(db)) as conn:
            run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]

        before = server.count()
        resumers = [start(["resume", run_id, "--db", db, "-q"], env) for _ in range(2)]
        results = [(p.wait(timeout=60), p.stderr.read()) for p in resumers]
        for p in resumers:
            p.stdout.close(), p.stderr.close()
        after = [wire_hash(r["body"]) for r in server.requests[before:]]

    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    loser = next(err for code, err in results if code == 3)
    # The winner holds the run's lease; the loser is refused before it sends anything.
    assert "is being driven by" in loser and "lease expires at" in loser
    assert len(loser.strip().splitlines()) == 1
    assert len(after) == len(set(after)), "a request was sent twice after the crash: two drivers"
    rows = log_rows(db)
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert rows[-1][1] == "RunFinished"
    answered = [d["call_id"] for _, t, d in rows if t == "LLMCallAnswered"]
    assert len(answered) == len(set(answered)) == 7  # each call answered once in the log
    assert sum(t == "RunResumed" for _, t, _ in rows) == 1
    with closing(sqlite3.connect(db)) as conn:
        status = conn.execute("SELECT status FROM runs").fetchone()[0]
    assert status == "finished"
