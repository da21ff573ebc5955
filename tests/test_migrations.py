"""Opening a file: migrations from every older schema, and refusing what is not ours.

The schema each released migration leaves is checked in under ``golden_schema/``: a
released migration is never edited, so those files never change; a new migration adds
one (``python -m tests.test_migrations`` writes the missing ones).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from agentlog.events import LLMCallAnswered, LLMCallRequested, RunStarted, Usage, encode
from agentlog.events.types import AgentConfig
from agentlog.store import MIGRATIONS, SCHEMA_VERSION, AsyncSQLiteStore, RunSummary, SchemaError, SQLiteStore, StoreBusy
from agentlog.store import sqlite as sqlite_face
from agentlog.store.schema import ANSWERS_BY_HASH, APPLICATION_ID

GOLDEN = Path(__file__).parent / "golden_schema"
FACES = ("sync", "async")


def open_and_close(face: str, path: Path | str, **options) -> None:
    """Open the store through one face (migrating or refusing the file), then close it."""
    if face == "sync":
        SQLiteStore(path, **options).close()
        return

    async def go():
        store = await AsyncSQLiteStore.open(path, **options)
        await store.close()

    asyncio.run(go())


def schema_of(path: Path | str) -> str:
    """Every table and index in the file, as SQLite recorded its CREATE statement."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
    finally:
        con.close()
    return "".join(f"-- {kind} {name}\n{sql};\n\n" for kind, name, sql in rows)


def pragma(path: Path | str, name: str):
    con = sqlite3.connect(path)
    try:
        return con.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        con.close()


def create_at_version(path: Path, k: int) -> None:
    """A database as a release with only the first ``k`` migrations left it."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for _name, sql in MIGRATIONS[:k]:
            con.executescript(sql)
        con.execute(f"PRAGMA user_version = {k}")
    finally:
        con.close()


def golden_text(k: int) -> str:
    path = GOLDEN / f"v{k}.sql"
    if not path.exists():
        pytest.fail(f"no golden schema for migration {k} ({MIGRATIONS[k - 1][0]}): "
                    f"run `python -m tests.test_migrations` and check in {path.relative_to(GOLDEN.parent.parent)}")
    return path.read_text()


# --- fresh databases ---------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
def test_a_fresh_database_is_at_the_schema_version_in_wal_mode(tmp_path, face):
    path = tmp_path / "log.db"
    open_and_close(face, path)
    assert pragma(path, "user_version") == SCHEMA_VERSION == len(MIGRATIONS)
    assert pragma(path, "journal_mode") == "wal"  # persistent: recorded in the file itself
    assert pragma(path, "application_id") == APPLICATION_ID
    assert schema_of(path) == golden_text(SCHEMA_VERSION)


def test_migrations_are_named_in_order():
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names)
    assert [name[:5] for name in names] == [f"m{n:03d}_" for n in range(1, len(MIGRATIONS) + 1)]


@pytest.mark.parametrize("k", range(1, SCHEMA_VERSION + 1))
def test_released_migrations_are_never_edited(tmp_path, k):
    path = tmp_path / "log.db"
    create_at_version(path, k)
    assert schema_of(path) == golden_text(k), f"migration {MIGRATIONS[k - 1][0]} changed: add a new one instead"


def test_opening_twice_is_idempotent(tmp_path):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("run", [RunStarted(task="t", pipeline="content", agents={}, max_iterations=1, threshold=8)], 0)
        row = store.get_run("run")
    schema = schema_of(path)
    for face in ("sync", "async", "sync"):
        open_and_close(face, path)
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert schema_of(path) == schema
    with SQLiteStore(path, create=False) as store:
        assert store.get_run("run") == row
        assert store.last_seq("run") == 1


def test_the_answers_lookup_uses_its_index(tmp_path):
    path = tmp_path / "log.db"
    SQLiteStore(path).close()
    con = sqlite3.connect(path)
    try:
        plan = " ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + ANSWERS_BY_HASH, ("h",)))
    finally:
        con.close()
    assert "events_answers_by_hash" in plan, plan


# --- older schemas -----------------------------------------------------------------------

STARTED = RunStarted(task="Explain SQLite WAL mode", pipeline="content",
                     agents={"writer": AgentConfig(model="offline", temperature=0.6)}, max_iterations=2, threshold=8)
REQUEST = {"model": "offline", "messages": [{"role": "user", "content": "WAL?"}]}
OLD_EVENTS = [
    STARTED,
    LLMCallRequested(call_id="draft/1", agent="writer", step="draft", attempt=1, request=REQUEST, request_hash="h1"),
    LLMCallAnswered(call_id="draft/1", agent="writer", request_hash="h1", content="# WAL", usage=Usage(10, 20, 30)),
]
OLD_ROW = RunSummary("0123456789abcdef", None, None, STARTED.task, "content", "running", 1700000000.0, 1700000001.5,
                     None, 0, 30, 3)


def write_old_rows(path: Path) -> None:
    """A run recorded by an older release: its events and its runs-index row, in raw SQL."""
    con = sqlite3.connect(path)
    columns = [row[1] for row in con.execute("PRAGMA table_info(events)")]
    with con:
        for seq, event in enumerate(OLD_EVENTS, start=1):
            type_name, version, data = encode(event)
            con.execute("INSERT INTO events (run_id, seq, type, version, recorded_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (OLD_ROW.run_id, seq, type_name, version, 1700000000.0 + seq / 2, data.decode()))
            if "request_hash" in columns and isinstance(event, LLMCallAnswered):  # schema 4 on
                con.execute("UPDATE events SET request_hash = ? WHERE run_id = ? AND seq = ?",
                            (event.request_hash, OLD_ROW.run_id, seq))
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", OLD_ROW.as_row())
    con.close()


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("k", range(SCHEMA_VERSION))
def test_migrating_from_each_older_version(tmp_path, k, face):
    path = tmp_path / "log.db"
    create_at_version(path, k)
    if k >= 1:
        write_old_rows(path)
    open_and_close(face, path)

    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert pragma(path, "application_id") == APPLICATION_ID  # a log from before the id is recognised, then marked
    assert schema_of(path) == golden_text(SCHEMA_VERSION)  # the same schema as a fresh database
    with SQLiteStore(path, create=False) as store:
        if k >= 1:
            assert store.events(OLD_ROW.run_id) == OLD_EVENTS
            assert store.get_run(OLD_ROW.run_id) == OLD_ROW
            assert [(s.run_id, s.seq) for s in store.find_answers("h1")] == [(OLD_ROW.run_id, 3)]
            assert store.append(OLD_ROW.run_id, OLD_EVENTS[1:2], 3) == 4
        else:
            assert store.list_runs() == []


# --- files that are not ours -------------------------------------------------------------


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("run", [STARTED], 0)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    for face in FACES:
        with pytest.raises(SchemaError, match=rf"newer agentlog \(schema {SCHEMA_VERSION + 1}, this release "
                                              rf"knows {SCHEMA_VERSION}\): upgrade agentlog"):
            open_and_close(face, path)
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (1,)
    con.close()


NOT_SQLITE = {
    "random-bytes": lambda rng: rng.randbytes(8192),  # the seed is in the report header
    "text": lambda rng: "# Notes\n\nThis is a Markdown file, not a database.\n".encode() * 100,
    "json": lambda rng: json.dumps({"runs": []}).encode(),
    "bad-sqlite-header": lambda rng: b"SQLite format 3\x00" + b"\xff" * 4080,
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", NOT_SQLITE)
def test_a_file_that_is_not_sqlite_is_refused(tmp_path, rng, kind, face):
    path = tmp_path / "notes.db"
    content = NOT_SQLITE[kind](rng)
    path.write_bytes(content)
    with pytest.raises(SchemaError, match=r"notes\.db is not an agentlog database"):
        open_and_close(face, path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def make_foreign(path: Path, user_version: int = 0, application_id: int = 0, tables: str = "") -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        con.execute("INSERT INTO notes (body) VALUES ('buy milk')")
        if tables:
            con.executescript(tables)
        con.execute(f"PRAGMA user_version = {user_version}")
        con.execute(f"PRAGMA application_id = {application_id}")
    con.close()


FOREIGN = {
    **{f"user-version-{v}": {"user_version": v} for v in (0, 1, 2, SCHEMA_VERSION, SCHEMA_VERSION + 1, 1000)},
    "another-application-id": {"user_version": SCHEMA_VERSION, "application_id": 0x5AEBBA5E},
    # Tables named like ours, columns not: not taken for a log written before the application id.
    "look-alike-tables": {"user_version": 2, "tables": "CREATE TABLE events (id INTEGER, payload BLOB);"
                                                       "CREATE TABLE runs (id INTEGER, name TEXT);"},
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("kind", FOREIGN)
def test_another_applications_file_is_refused_before_anything_changes_it(tmp_path, face, kind):
    path = tmp_path / "notes.db"
    make_foreign(path, **FOREIGN[kind])
    content = path.read_bytes()
    with pytest.raises(SchemaError, match=r"notes\.db is an SQLite database, but not an agentlog one"):
        open_and_close(face, path)
    assert path.read_bytes() == content  # not switched to WAL, not migrated, not marked as ours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
    assert pragma(path, "journal_mode") == "delete"


@pytest.mark.parametrize("face", FACES)
def test_another_applications_sqlite_file_is_refused(tmp_path, face):
    path = tmp_path / "notes.db"
    make_foreign(path)
    schema = schema_of(path)
    with pytest.raises(SchemaError, match=r"notes\.db is an SQLite database, but not an agentlog one"):
        open_and_close(face, path)
    assert schema_of(path) == schema  # no agentlog table was added
    assert pragma(path, "user_version") == 0
    con = sqlite3.connect(path)
    assert con.execute("SELECT body FROM notes").fetchall() == [("buy milk",)]
    con.close()


def test_refusing_another_applications_file_leaves_its_journal_mode(tmp_path):
    path = tmp_path / "notes.db"
    make_foreign(path)
    assert pragma(path, "journal_mode") == "delete"
    with pytest.raises(SchemaError):
        SQLiteStore(path)
    assert pragma(path, "journal_mode") == "delete"


@pytest.mark.parametrize("face", FACES)
def test_create_false_needs_an_existing_database(tmp_path, face):
    path = tmp_path / "missing" / "log.db"
    with pytest.raises(SchemaError, match=r"no agentlog database at .*missing/log\.db"):
        open_and_close(face, path, create=False)
    assert not path.parent.exists()
    open_and_close(face, path)  # create=True makes the directory and the database
    open_and_close(face, path, create=False)
    assert pragma(path, "user_version") == SCHEMA_VERSION


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("face", FACES)
def test_a_directory_is_refused(tmp_path, face, create):
    with pytest.raises(SchemaError, match="is a directory, not a database file"):
        open_and_close(face, tmp_path, create=create)
    assert list(tmp_path.iterdir()) == []


def test_an_opener_that_loses_the_race_to_migrate_a_new_file_still_opens_it(tmp_path, monkeypatch):
    path = tmp_path / "log.db"
    check = sqlite_face.check_identity
    interposed = []

    def another_opener_migrates_meanwhile(where, identity, columns):
        # The race, made deterministic: this opener has just read user_version 0; before it
        # goes on, another opener creates and migrates the file.
        if not interposed:
            interposed.append(identity[1])
            SQLiteStore(path).close()
            assert pragma(path, "user_version") == SCHEMA_VERSION
        return check(where, identity, columns)

    monkeypatch.setattr(sqlite_face, "check_identity", another_opener_migrates_meanwhile)
    SQLiteStore(path).close()
    assert interposed == [0]
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_opening_while_another_connection_writes_waits_out_the_busy_timeout(tmp_path):
    path = tmp_path / "log.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # as another opener creating the file does
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="locked by another process"):
            SQLiteStore(path, busy_timeout=0.5)
        waited = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert waited >= 0.45, f"StoreBusy after {waited:.3f}s, before the 0.5s busy timeout"
    SQLiteStore(path).close()  # once the lock is gone, it opens
    assert pragma(path, "user_version") == SCHEMA_VERSION


# --- the viewer's read-only open ---------------------------------------------------------


def read_only_view(path: Path, face: str = "async") -> tuple[list[RunSummary], list]:
    if face == "sync":
        with SQLiteStore(path, create=False, read_only=True) as store:
            return store.list_runs(), store.events(OLD_ROW.run_id)

    async def go():
        store = await AsyncSQLiteStore.open(path, read_only=True)
        try:
            return await store.list_runs(), await store.events(OLD_ROW.run_id)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("k", range(1, SCHEMA_VERSION + 1))
def test_read_only_open_reads_any_released_schema_as_it_is(tmp_path, k, face):
    path = tmp_path / "log.db"
    create_at_version(path, k)
    write_old_rows(path)
    content = path.read_bytes()
    assert read_only_view(path, face) == ([OLD_ROW], OLD_EVENTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.db"]
    assert path.read_bytes() == content  # not migrated, not switched to WAL
    assert pragma(path, "user_version") == k


def _newer(path: Path) -> None:
    SQLiteStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: None, "no agentlog database at"),
        (lambda path: path.mkdir(), "no agentlog database at"),
        (lambda path: path.write_bytes(b""), "is not an agentlog database"),
        (lambda path: path.write_text("plain text, not SQLite\n" * 50), "is not an agentlog database"),
        (make_foreign, "not an agentlog one"),
        (_newer, "newer agentlog"),
    ],
    ids=["missing", "directory", "empty-file", "text", "another-application", "newer-schema"],
)
def test_read_only_open_refuses_what_it_cannot_read(tmp_path, make, message):
    path = tmp_path / "log.db"
    make(path)

    def files():  # a WAL database's reader may make its -wal and -shm files: SQLite's, not a write
        return sorted((p.name, p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")
                      if not p.name.endswith(("-wal", "-shm")))

    before = files()
    with pytest.raises(SchemaError, match=message):
        read_only_view(path)
    assert files() == before


def write_missing_goldens() -> None:
    """The schema after each migration that has no golden file yet (released ones never change)."""
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for k in range(1, SCHEMA_VERSION + 1):
        target = GOLDEN / f"v{k}.sql"
        if target.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "log.db"
            create_at_version(path, k)
            target.write_text(schema_of(path))
        print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    write_missing_goldens()
