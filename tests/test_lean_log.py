"""The lean log: large text stored once, forks that share their prefix, the upgrade of
an older log in place, and vacuum. Real SQLite files; the rows are inspected in raw SQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import zlib
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from agentlog.events import (
    CodecError,
    DraftReady,
    LLMCallAnswered,
    LLMCallRequested,
    RunFinished,
    RunForked,
    RunStarted,
    ToolReturned,
    Usage,
    encode,
    to_builtins,
)
from agentlog.events.packed import chunks
from agentlog.replay import build_view, verify
from agentlog.store import MIGRATIONS, AsyncSQLiteStore, SQLiteStore, StoredEvent
from agentlog.store.blobs import INFLATE_GUESS
from agentlog.store.schema import SHARED_AT
from tests.conftest import PYTHON, cli_env

GOLDEN = Path(__file__).parent / "golden"


def sql(path: Path, query: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as con:
        return con.execute(query, params).fetchall()


def paragraphs(rng, n: int, words: int = 60) -> str:
    vocabulary = [f"w{i}" for i in range(3000)]
    return "\n\n".join(" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(n))


def started(task: str = "a task") -> RunStarted:
    return RunStarted(task=task, pipeline="content", agents={}, max_iterations=2, threshold=8)


def call(call_id: str, messages: list[dict], answer: str) -> list:
    request = {"model": "m", "messages": messages, "temperature": 0.5}
    return [
        LLMCallRequested(call_id=call_id, agent="writer", step=call_id, attempt=1, request=request,
                         request_hash=f"hash-{call_id}"),
        LLMCallAnswered(call_id=call_id, agent="writer", request_hash=f"hash-{call_id}", content=answer,
                        usage=Usage(1, 2, 3)),
    ]


# --- large text stored once -------------------------------------------------------------


def test_a_text_quoted_in_many_events_and_runs_is_stored_once(tmp_path, rng):
    path = tmp_path / "log.db"
    system = paragraphs(rng, 3)
    findings = paragraphs(rng, 6)
    draft = paragraphs(rng, 8)
    with SQLiteStore(path) as store:
        for run in ("a", "b", "c"):
            events = [started(), *call("research", [{"role": "system", "content": system},
                                                    {"role": "user", "content": f"Task {run}"}], findings)]
            events += call("write", [{"role": "system", "content": system},
                                     {"role": "user", "content": f"Task {run}\n\n## Findings\n\n{findings}"}], draft)
            events.append(DraftReady(iteration=1, draft=draft, call_id="write"))
            events += call("review", [{"role": "user", "content": f"## Findings\n\n{findings}\n\n## Draft\n\n{draft}"}],
                           "fine")
            store.append(run, events, 0)
            assert store.events(run) == events
    stored = sum(n for (n,) in sql(path, "SELECT length(data) FROM packs"))
    raw = sum(len(x.encode()) for x in (system, findings, draft))
    # Three runs, each quoting the findings three times and the draft twice: the text is
    # held once (less, compressed); a little more where a quote's chunks start differently.
    assert stored < 1.2 * raw, (stored, raw)
    # Rows hold references, not the text.
    assert max(n for (n,) in sql(path, "SELECT length(data) FROM events")) < 400


def test_packs_are_zlib_streams_and_text_that_deflates_far_beyond_the_size_guess_reads_back(tmp_path, rng):
    path = tmp_path / "log.db"
    plain = paragraphs(rng, 4)
    repetitive = "the same line, again and again\n" * 20000  # deflates to ~1/400: past the inflate guess
    events = [started(), *call("plain", [{"role": "user", "content": plain}], plain[::-1]),
              *call("repetitive", [{"role": "user", "content": "repeat"}], repetitive)]
    with SQLiteStore(path) as store:
        store.append("r", events, 0)
    packs = sql(path, "SELECT codec, data FROM packs")
    assert packs and all(codec == 1 for codec, _ in packs)
    # Any zlib reads them (what libdeflate writes is a zlib stream): logs move between machines.
    raw = b"".join(zlib.decompress(data) for _, data in packs)
    assert plain.encode() in raw
    assert any(len(zlib.decompress(data)) > len(data) * INFLATE_GUESS + 1024 for _, data in packs)
    with SQLiteStore(path) as store:  # a fresh store: every pack inflated anew
        assert store.events("r") == events


def test_chunk_boundaries_follow_the_content_so_a_quoted_block_gives_the_same_chunks(rng):
    block = paragraphs(rng, 200, words=20).encode()
    alone = set(chunks(block))
    quoted = set(chunks(b"Some preamble of another length\n\n" + block + b"\n\nand a tail"))
    assert sum(len(c) for c in alone & quoted) >= 0.75 * len(block)
    assert b"".join(chunks(block)) == block
    long_line = b"x" * 20000
    assert b"".join(chunks(long_line)) == long_line and max(map(len, chunks(long_line))) <= 8192


def test_a_row_whose_blob_is_gone_is_a_codec_error_naming_it(tmp_path, rng):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("r", [started(), *call("c", [{"role": "user", "content": paragraphs(rng, 2)}], "ok")], 0)
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("DELETE FROM packs")
    with SQLiteStore(path) as store:
        assert store.read("r", upto=1)[0].event == started()
        with pytest.raises(CodecError, match=r"LLMCallRequested v1: pack \d+ is missing from the log"):
            store.read("r")


# --- forks share their prefix ------------------------------------------------------------


def twenty_events(rng) -> list:
    events = [started()]
    for i in range(1, 10):
        events += call(f"c{i}", [{"role": "user", "content": paragraphs(rng, 3)}], paragraphs(rng, 4))
    events.append(RunFinished(reason="approved", iterations=1, score=9))
    return events


def file_bytes(path: Path) -> int:
    """Bytes the log's pages hold (the WAL checkpointed first)."""
    with closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]


def test_a_fork_shares_its_parents_prefix_and_reads_as_a_copy(tmp_path, rng):
    path = tmp_path / "log.db"
    parent = twenty_events(rng)
    with SQLiteStore(path) as store:
        store.append("parent", parent, 0)
        fork = [*store.events("parent", 0, 10), RunForked(parent_run_id="parent", parent_seq=10)]
        store.append("fork", fork, 0)
        own = call("c10", [{"role": "user", "content": "again"}], "new answer")
        assert store.append("fork", own, 11) == 13
        # The fork of the fork, at an event inside the shared prefix.
        store.append("fork2", [*store.events("fork", 0, 4), RunForked(parent_run_id="fork", parent_seq=4)], 0)

        assert store.events("fork") == [*parent[:10], fork[10], *own]
        assert [s.seq for s in store.read("fork", after=8, upto=12)] == [9, 10, 11, 12]
        assert {s.run_id for s in store.read("fork")} == {"fork"}
        assert store.events("fork2") == [*parent[:4], RunForked(parent_run_id="fork", parent_seq=4)]
        assert store.last_seq("fork") == 13 and store.last_seq("fork2") == 5
        summary = store.get_run("fork")
        assert (summary.parent_run_id, summary.fork_seq, summary.last_seq) == ("parent", 10, 13)
        assert summary.created_at == store.read("fork")[0].recorded_at
        # An answer of the shared prefix is found in each run that holds it, as a copy was.
        assert sorted((s.run_id, s.seq) for s in store.find_answers("hash-c2")) == [("fork", 5), ("parent", 5)]
        assert sorted((s.run_id, s.seq) for s in store.find_answers("hash-c1")) == [
            ("fork", 3), ("fork2", 3), ("parent", 3)]
        rebuilt = {r.run_id: r for r in store.list_runs()}
        store.rebuild_index()
        assert {r.run_id: r for r in store.list_runs()} == rebuilt
    # Stored: one share row each, and only the events written after the fork point.
    assert sql(path, "SELECT run_id, parent_run_id, upto_seq FROM shares ORDER BY run_id") == [
        ("fork", "parent", 10), ("fork2", "fork", 4)]
    assert sql(path, "SELECT seq FROM events WHERE run_id = 'fork' ORDER BY seq") == [(11,), (12,), (13,)]
    # A share keeps no time of its own: its prefix reads as recorded with its RunForked.
    assert sql(path, "SELECT recorded_at FROM shares") == [(None,), (None,)]
    with SQLiteStore(path) as store:
        read = store.read("fork")
        assert {s.recorded_at for s in read[:10]} == {read[10].recorded_at}

    async def through_the_async_face():
        store = await AsyncSQLiteStore.open(path, read_only=True)
        try:
            return await store.read("fork"), await store.find_answers("hash-c1")
        finally:
            await store.close()

    with SQLiteStore(path) as store:
        expected = store.read("fork"), store.find_answers("hash-c1")
    assert asyncio.run(through_the_async_face()) == expected


def test_a_fork_copied_with_a_prefix_time_of_its_own_keeps_it_through_the_upgrade(tmp_path, rng):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("parent", twenty_events(rng), 0)
        prefix = [s.event for s in store.read("parent", 0, 10)]
        forked = RunForked(parent_run_id="parent", parent_seq=10)
        store.append("fork", [*prefix, forked], 0)
        # As ``agentlog copy`` writes a fork: each event at its time in the other log.
        store.append_recorded("copied", [StoredEvent("copied", i + 1, type(e).__name__, e.VERSION, 1000.0, e)
                                         for i, e in enumerate(prefix)]
                              + [StoredEvent("copied", 11, "RunForked", forked.VERSION, 2000.0, forked)], 0)
        times = {run: [s.recorded_at for s in store.read(run)] for run in ("fork", "copied")}
        answers = sorted((s.run_id, s.recorded_at) for s in store.find_answers("hash-c1"))
        assert times["copied"] == [1000.0] * 10 + [2000.0] and len(set(times["fork"])) == 1
        assert ("copied", 1000.0) in answers
    assert sql(path, "SELECT run_id, recorded_at FROM shares ORDER BY run_id") == [("copied", 1000.0), ("fork", None)]
    before = folded(path, ["parent", "fork", "copied"])

    # The same log as schema 9 held it (every share with its time), upgraded in place.
    with closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.executescript(f"""
            CREATE TABLE shares_v9 (run_id TEXT PRIMARY KEY, parent_run_id TEXT NOT NULL,
                                    upto_seq INTEGER NOT NULL CHECK (upto_seq >= 1),
                                    recorded_at REAL NOT NULL) WITHOUT ROWID;
            INSERT INTO shares_v9 SELECT run_id, parent_run_id, upto_seq, {SHARED_AT} FROM shares;
            DROP TABLE shares;
            ALTER TABLE shares_v9 RENAME TO shares;
            CREATE INDEX shares_by_parent ON shares (parent_run_id);
            PRAGMA user_version = 9;
            """)
    assert sql(path, "SELECT run_id, recorded_at FROM shares ORDER BY run_id") == [
        ("copied", 1000.0), ("fork", times["fork"][0])]
    assert folded_read_only(path, ["parent", "fork", "copied"]) == before
    with SQLiteStore(path) as store:  # migrates
        assert sorted((s.run_id, s.recorded_at) for s in store.find_answers("hash-c1")) == answers
    assert sql(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert sql(path, "SELECT run_id, recorded_at FROM shares ORDER BY run_id") == [("copied", 1000.0), ("fork", None)]
    assert folded(path, ["parent", "fork", "copied"]) == before


def test_a_batch_that_differs_from_the_parent_is_stored_in_full(tmp_path, rng):
    path = tmp_path / "log.db"
    parent = twenty_events(rng)
    with SQLiteStore(path) as store:
        store.append("parent", parent, 0)
        edited = [started("another task"), *parent[1:10], RunForked(parent_run_id="parent", parent_seq=10)]
        store.append("fork", edited, 0)
        assert store.events("fork") == edited
    assert sql(path, "SELECT count(*) FROM shares") == [(0,)]
    assert sql(path, "SELECT count(*) FROM events WHERE run_id = 'fork'") == [(11,)]


def test_forks_cost_references_not_bytes(tmp_path, rng):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("parent", twenty_events(rng), 0)
    one_run = file_bytes(path)
    with SQLiteStore(path) as store:
        prefix = store.events("parent", 0, 10)
        store.append("fork-0", [*prefix, RunForked(parent_run_id="parent", parent_seq=10)], 0)
        first = file_bytes(path) - one_run
        for i in range(1, 100):
            store.append(f"fork-{i}", [*prefix, RunForked(parent_run_id="parent", parent_seq=10)], 0)
    assert first <= 2048 * 2  # at most a page or two: a share row, one event, a runs row
    assert file_bytes(path) <= 1.3 * one_run + 100 * 200, (file_bytes(path), one_run)


# --- an older log upgrades in place -------------------------------------------------------


def log_at_schema_3(path: Path, name: str) -> list[str]:
    """A golden log as a release of schema 3 stored it: JSON rows, copied fork prefixes."""
    with closing(sqlite3.connect(path, isolation_level=None)) as con:
        for _name, script in MIGRATIONS[:3]:
            con.executescript(script)
        con.execute("PRAGMA user_version = 3")
    runs: list[str] = []
    with closing(sqlite3.connect(path)) as con, con:
        for line in (GOLDEN / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            con.execute("INSERT INTO events (run_id, seq, type, version, recorded_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (row["run_id"], row["seq"], row["type"], row["version"], 1700000000.0 + row["seq"],
                         json.dumps(row["data"])))
            runs.append(row["run_id"])
    return list(dict.fromkeys(runs))


def folded(path: Path, runs: list[str]) -> list[bytes]:
    with SQLiteStore(path, create=False) as store:
        return [msgspec.json.encode(build_view(run_id, store.read(run_id))) for run_id in runs]


def folded_read_only(path: Path, runs: list[str]) -> list[bytes]:
    """The runs' folded views as the viewer reads an old schema: as it is, before any migration."""

    async def read() -> list[bytes]:
        store = await AsyncSQLiteStore.open(path, read_only=True)
        try:
            return [msgspec.json.encode(build_view(r, await store.read(r))) for r in runs]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("name", ["content-offline", "fork-offline", "rereview-offline", "v1-runstarted"])
def test_a_schema_3_log_upgrades_in_place_with_the_same_folded_views(tmp_path, name):
    path = tmp_path / "log.db"
    runs = log_at_schema_3(path, name)

    before = folded_read_only(path, runs)
    with SQLiteStore(path) as store:  # migrates
        store.rebuild_index()
        answers = [a for r in runs for s in store.read(r) if isinstance(a := s.event, LLMCallAnswered)]
        for answer in answers:
            assert any(f.event == answer for f in store.find_answers(answer.request_hash))
        assert all(verify(r, store.read(r)).ok for r in runs)
    assert sql(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert folded(path, runs) == before
    # Old rows stay JSON text; new appends are packed, and both read as one stream.
    assert {t for (t,) in sql(path, "SELECT DISTINCT typeof(data) FROM events")} == {"text"}
    with SQLiteStore(path) as store:
        last = store.last_seq(runs[0])
        done = RunFinished(reason="approved", iterations=1, score=9)
        store.append(runs[0], [done], last)
        assert store.events(runs[0])[-1] == done
    assert sql(path, "SELECT typeof(data) FROM events WHERE run_id = ? AND seq = ?", runs[0], last + 1) == [("blob",)]


def test_packed_and_json_rows_decode_to_the_same_event():
    event = call("c", [{"role": "user", "content": "x" * 500}], "y" * 300)[0]
    type_name, version, data = encode(event)
    from agentlog.events import decode, pack

    store: dict[int, bytes] = {}

    def put(chunks: list[bytes]) -> list[int]:
        refs = []
        for chunk in chunks:
            store[len(store) + 1] = chunk
            refs.append(len(store))
        return refs

    _, _, packed = pack(event, put)
    resolve = lambda refs: b"".join(store[i] for i in refs)  # noqa: E731
    assert decode(type_name, version, data) == decode(type_name, version, packed, resolve) == event
    assert len(packed) < len(data) / 2


# --- vacuum -------------------------------------------------------------------------------


def agentlog(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "agentlog.cli", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=60)


def test_vacuum_drops_only_blobs_no_event_refers_to(tmp_path, rng):
    path = tmp_path / "log.db"
    events = [started(), *call("c", [{"role": "user", "content": paragraphs(rng, 3)}], paragraphs(rng, 3))]
    with SQLiteStore(path) as store:
        store.append("r", events, 0)
    kept = sql(path, "SELECT count(*) FROM packs")[0][0]
    orphan = paragraphs(rng, 50).encode()
    with closing(sqlite3.connect(path)) as con, con:  # as left by a batch that failed half-way
        pack = con.execute("INSERT INTO packs (codec, data) VALUES (0, ?)", (orphan,)).lastrowid
        con.execute("INSERT INTO blobs (hash, pack, start, size) VALUES (randomblob(16), ?, 0, ?)", (pack, len(orphan)))

    dry = agentlog("vacuum", "--dry-run", "--db", str(path))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == f"would free {len(orphan):,} bytes: 1 pack of text no event refers to\n"
    assert sql(path, "SELECT count(*) FROM packs") == [(kept + 1,)]

    done = agentlog("vacuum", "--db", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"freed {len(orphan):,} bytes: 1 pack of text no event refers to; file ")
    assert sql(path, "SELECT count(*) FROM packs") == [(kept,)]
    assert sql(path, "SELECT count(*) FROM blobs WHERE pack = ?", pack) == [(0,)]
    with SQLiteStore(path) as store:
        assert store.events("r") == events
        report = store.vacuum()
        assert (report.packs, report.pack_bytes) == (0, 0)

    again = agentlog("vacuum", "--db", str(path))
    assert again.stdout == "nothing to free: every stored text is referred to\n"
    missing = agentlog("vacuum", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and missing.stderr.startswith("agentlog: no agentlog database at")


def test_export_of_a_shared_fork_holds_its_full_events(tmp_path, rng):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("parent", twenty_events(rng), 0)
        store.append("forked", [*store.events("parent", 0, 6), RunForked(parent_run_id="parent", parent_seq=6)], 0)
        expected = [to_builtins(e) for e in store.events("forked")]
    result = agentlog("export", "forked", "--db", str(path))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["data"] for r in rows] == expected and [r["seq"] for r in rows] == list(range(1, 8))


def test_vacuum_refuses_when_a_row_cannot_be_read_and_drops_nothing(tmp_path, rng):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("r", [started(), *call("c", [{"role": "user", "content": paragraphs(rng, 3)}], "ok")], 0)
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("UPDATE events SET data = x'82a474797065' WHERE run_id = 'r' AND seq = 2")  # truncated
        orphan = con.execute("INSERT INTO packs (codec, data) VALUES (0, x'00')").lastrowid
    result = agentlog("vacuum", "--db", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("agentlog: ") and result.stderr.count("\n") == 1
    assert "run r event 2 cannot be read" in result.stderr and "nothing was dropped" in result.stderr
    assert sql(path, "SELECT count(*) FROM packs WHERE id = ?", orphan) == [(1,)]


def test_stored_values_are_remembered_again_after_their_memo_empties(tmp_path):
    """The store remembers the values its committed events hold, by their bytes, so as not to cut
    and hash them again, and empties that memo when it is full. A value whose chunks it still
    knows by their bytes is remembered again on its next append, or every later append of it
    would be cut anew (the bytes are the same either way: this is the CPU the memo saves)."""
    store = SQLiteStore(tmp_path / "log.db")
    texts = [f"a system prompt long enough to be stored apart from its row, number {i}. " * 3 for i in range(4)]
    seq = 0

    def put(i: int) -> None:
        nonlocal seq
        seq = store.append("r", [ToolReturned(call_id=f"c{seq}", tool_call_id="t", name="x", result=texts[i],
                                              is_error=False)], seq)

    for i in range(4):
        put(i)
    assert {t.encode() for t in texts} <= set(store._texts)
    store._texts.clear()  # as when the next values would pass its bound
    store._texts.size = 0
    for i in range(4):
        put(i)
    assert {t.encode() for t in texts} <= set(store._texts)
    assert [s.event.result for s in store.read("r")] == texts * 2
    store.close()
