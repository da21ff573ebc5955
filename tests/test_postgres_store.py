"""What the Postgres store promises beyond the shared contract (tests/test_store_contract.py):
its migrations and version table, refusing what it cannot open, a notification per append,
and a password that no error shows. A real cluster (tests/postgres.py), never a mock."""

from __future__ import annotations

import threading

import psycopg
import pytest

from agentlog.events import DraftReady, pack
from agentlog.store import ConcurrencyError, SchemaError, StoreError, open_store
from agentlog.store import pgschema, schema
from agentlog.store._base import _Append
from agentlog.store.blobs import deflate, digest
from agentlog.store.postgres import PostgresStore
from tests.test_store_contract import FORK, approved_run, build_runs, started


def test_a_new_database_gets_every_migration_recorded_once(pg_url):
    PostgresStore(pg_url).close()
    PostgresStore(pg_url).close()  # a second open finds it migrated
    with psycopg.connect(pg_url) as db:
        rows = db.execute("SELECT version, name FROM agentlog_schema ORDER BY version").fetchall()
    assert rows == [(n, name) for n, (name, _) in enumerate(pgschema.MIGRATIONS, start=1)]


def test_a_fork_share_written_before_migration_4_loses_the_time_it_repeats_and_reads_the_same(pg_url):
    with PostgresStore(pg_url) as store:
        build_runs(store)
        expected = store.read(FORK), sorted((s.run_id, s.seq, s.recorded_at) for s in store.find_answers(
            "hash:research/1:researcher"))
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT recorded_at FROM shares WHERE run_id = %s", (FORK,)).fetchall() == [(None,)]
        # The database as migration 3 left it: every share with its time.
        db.execute(f"UPDATE shares SET recorded_at = {schema.SHARED_AT}")
        db.execute("ALTER TABLE shares ALTER COLUMN recorded_at SET NOT NULL")
        db.execute("DELETE FROM agentlog_schema WHERE version = 4")
    with PostgresStore(pg_url) as store:  # migrates
        assert store.read(FORK) == expected[0]
        assert sorted((s.run_id, s.seq, s.recorded_at) for s in store.find_answers(
            "hash:research/1:researcher")) == expected[1]
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT recorded_at FROM shares WHERE run_id = %s", (FORK,)).fetchall() == [(None,)]
        assert db.execute("SELECT max(version) FROM agentlog_schema").fetchone() == (pgschema.SCHEMA_VERSION,)


def test_openers_racing_on_a_new_database_migrate_it_once(pg_url):
    barrier, errors = threading.Barrier(4, timeout=30), []

    def open_it():
        barrier.wait()
        try:
            PostgresStore(pg_url).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT count(*) FROM agentlog_schema").fetchone() == (pgschema.SCHEMA_VERSION,)


def test_a_newer_schema_is_refused_in_one_line(pg_url):
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("INSERT INTO agentlog_schema VALUES (%s, 'm999_from_the_future', 0)",
                   (pgschema.SCHEMA_VERSION + 1,))
    for read_only in (False, True):
        with pytest.raises(SchemaError, match=rf"newer agentlog \(schema {pgschema.SCHEMA_VERSION + 1}, this "
                                              rf"release knows {pgschema.SCHEMA_VERSION}\)") as caught:
            PostgresStore(pg_url, read_only=read_only)
        assert "\n" not in str(caught.value) and "pw-" not in str(caught.value)


def test_a_database_without_the_log_is_created_only_by_a_writer(pg_url):
    for options in ({"create": False}, {"read_only": True}):
        with pytest.raises(SchemaError, match="holds no agentlog log"):
            PostgresStore(pg_url, **options)
    with psycopg.connect(pg_url) as db:  # nothing was made by looking
        assert db.execute("SELECT to_regclass('agentlog_schema')").fetchone() == (None,)
    with PostgresStore(pg_url) as store:
        assert store.append("run", [started("t")], 0) == 1


def test_another_applications_tables_are_left_alone(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE events (id serial PRIMARY KEY, what text)")
    with pytest.raises(SchemaError, match="has tables named events or runs, but no agentlog log"):
        PostgresStore(pg_url)
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT to_regclass('agentlog_schema')").fetchone() == (None,)


def test_a_read_only_store_reads_and_never_writes(pg_url):
    with PostgresStore(pg_url) as writer:
        build_runs(writer)
        with PostgresStore(pg_url, read_only=True) as reader:
            assert reader.read(FORK) == writer.read(FORK)
            with pytest.raises(StoreError, match="read-only transaction"):
                reader.append(FORK, [DraftReady(iteration=3, draft="x", call_id="draft/3")], 18)
        assert writer.last_seq(FORK) == 18


def test_every_append_notifies_listeners_as_it_commits(pg_url):
    with PostgresStore(pg_url) as store, psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute("LISTEN agentlog_events")
        store.append("run-a", approved_run("a")[:3], 0)
        store.append_all([("run-a", approved_run("a")[3:5], 3), ("run-b", approved_run("b")[:2], 0)])
        with pytest.raises(StoreError):  # a stale batch commits nothing, so it tells nobody
            store.append("run-b", approved_run("b")[:1], 0)
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=3)]
        assert got == ["run-a:3", "run-a:5", "run-b:2"]
        assert [n.payload for n in listener.notifies(timeout=0.2)] == []


def test_the_reuse_lookup_by_request_hash_is_indexed(pg_url):
    with PostgresStore(pg_url) as store:
        build_runs(store)
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in db.execute(
            "EXPLAIN SELECT run_id FROM events WHERE request_hash = 'hash:research/1:researcher'").fetchall())
    assert "events_answers_by_hash" in plan


@pytest.mark.parametrize("wrong", ["port", "password", "database"])
def test_a_connection_that_fails_says_why_in_one_line_without_the_password(postgres_cluster, pg_url, wrong):
    from tests.postgres import free_port

    url = {
        "port": postgres_cluster.url(pg_url.rsplit("/", 1)[1], port=free_port()),
        "password": postgres_cluster.url(pg_url.rsplit("/", 1)[1], password="not-the-password-42"),
        "database": postgres_cluster.url("no_such_database"),
    }[wrong]
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert message.startswith("cannot connect to postgresql://agentlog:***@127.0.0.1:")
    assert "\n" not in message
    assert postgres_cluster.password not in message and "not-the-password-42" not in message
    expected = {"port": "Connection refused", "password": "password authentication failed",
                "database": 'database "no_such_database" does not exist'}[wrong]
    assert expected in message



def test_vacuum_drops_only_the_packs_no_event_refers_to(pg_url):
    with PostgresStore(pg_url) as store:
        build_runs(store)
        before = {run.run_id: store.read(run.run_id) for run in store.list_runs()}
        with psycopg.connect(pg_url, autocommit=True) as db:  # a pack left by a batch that failed half-way
            pack = db.execute("INSERT INTO packs (codec, data) VALUES (0, %s) RETURNING id", (b"x" * 500,)).fetchone()[0]
            db.execute("INSERT INTO blobs VALUES (%s, %s, 0, 500)", (b"\x01" * 16, pack))
        dry = store.vacuum(dry_run=True)
        assert (dry.packs, dry.chunks, dry.pack_bytes) == (1, 1, 500)
        done = store.vacuum()
        assert (done.packs, done.chunks) == (1, 1) and done.file_before > 0
        assert store.vacuum(dry_run=True).packs == 0
        assert {run_id: store.read(run_id) for run_id in before} == before


def test_workers_claiming_at_once_take_different_queued_runs(pg_url):
    from agentlog.events import RunQueued

    stores = [PostgresStore(pg_url) for _ in range(4)]
    try:
        for n in range(3):
            stores[0].append(f"queued-{n}", [started(f"t{n}"), RunQueued()], 0)
        assert stores[0].queued_runs() == ["queued-0", "queued-1", "queued-2"]
        barrier, claims = threading.Barrier(4, timeout=30), []

        def claim(store, owner):
            barrier.wait()
            claims.append(store.claim_run(owner, 30))

        threads = [threading.Thread(target=claim, args=(s, f"worker-{i}")) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        taken = [c.run_id for c in claims if c is not None]
        assert len(taken) == len(set(taken)) >= 1  # never one run twice
        for lease in claims:
            if lease is not None:
                assert stores[0].lease(lease.run_id) == lease
        while (more := stores[0].claim_run("worker-late", 30)) is not None:  # the rest is still there
            taken.append(more.run_id)
        assert sorted(taken) == ["queued-0", "queued-1", "queued-2"]
    finally:
        for store in stores:
            store.close()


def test_text_another_session_stored_is_referred_to_not_stored_again(pg_url):
    # An append looks up every chunk of its text at once (not one round trip per chunk):
    # what another session stored is found there and referred to.
    text = "A paragraph long enough to be stored apart from its row.\n" * 40
    with PostgresStore(pg_url) as first, PostgresStore(pg_url) as second:
        first.append("r1", [started("one"), DraftReady(iteration=1, draft=text, call_id="c1")], 0)
        second.append("r2", [started("two"), DraftReady(iteration=1, draft=text, call_id="c2")], 0)
        with psycopg.connect(pg_url) as db:
            assert db.execute("SELECT count(*) FROM packs").fetchone() == (1,)
        assert second.read("r2")[1].event.draft == text
        assert first.read("r2") == second.read("r2") and second.read("r1") == first.read("r1")


def test_a_stale_batchs_chunk_in_a_pack_vacuum_drops_is_not_remembered(pg_url):
    # A batch that failed half-way left its text in a pack no event refers to. A group whose
    # stale batch has that text looks it up with the rest; only chunks of the batches it
    # commits may be kept as known, or vacuum drops the pack and a later append refers to it.
    text = "An orphan's paragraph, long enough to be stored apart from its row.\n" * 40
    draft = DraftReady(iteration=1, draft=text, call_id="c1")
    chunks: list[bytes] = []
    pack(draft, lambda cut: chunks.extend(cut) or [])
    assert chunks
    with psycopg.connect(pg_url, autocommit=True) as db, PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        codec, data = deflate(b"".join(chunks))
        orphan = db.execute("INSERT INTO packs (codec, data) VALUES (%s, %s) RETURNING id", (codec, data)).fetchone()[0]
        start = 0
        for chunk in dict.fromkeys(chunks):
            db.execute("INSERT INTO blobs VALUES (%s, %s, %s, %s)", (digest(chunk), orphan, start, len(chunk)))
            start += len(chunk)
        b.append("r", [started("r")], 0)
        other = DraftReady(iteration=1, draft="Another text, stored here.\n" * 40, call_id="c2")
        stale, fresh = _Append("r", [draft], 0), _Append("q", [started("q"), other], 0)
        with a._lock:
            a._write_group(a._db, [stale, fresh])
        assert isinstance(stale.error, ConcurrencyError) and (fresh.error, fresh.result) == (None, 2)
        assert b.vacuum().packs == 1  # the orphan
        a.append("s", [started("s"), draft], 0)
        assert b.read("s")[1].event.draft == text
        assert a.read("q")[1].event == other


def test_a_read_only_store_stays_read_only_after_a_failed_append(pg_url):
    # A failed pipelined append renews the session: the new one is read-only too.
    with PostgresStore(pg_url) as writer:
        writer.append("run", [started("t")], 0)
        with PostgresStore(pg_url, read_only=True) as reader:
            for _ in range(2):
                with pytest.raises(StoreError, match="read-only transaction"):
                    reader.append("run", [DraftReady(iteration=1, draft="x", call_id="c")], 1)
            assert reader.read("run") == writer.read("run")
        assert writer.last_seq("run") == 1
