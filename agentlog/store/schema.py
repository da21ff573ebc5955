"""Schema migrations and the SQL shared by the sync and async faces.

Migrations are an ordered list, applied when a database is opened; ``PRAGMA
user_version`` counts how many are applied. Never edit a released migration: add one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE events (
            run_id      TEXT    NOT NULL,
            seq         INTEGER NOT NULL CHECK (seq >= 1),
            type        TEXT    NOT NULL,
            version     INTEGER NOT NULL,
            recorded_at REAL    NOT NULL,
            data        TEXT    NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE runs (
            run_id        TEXT PRIMARY KEY,
            parent_run_id TEXT,
            fork_seq      INTEGER,
            task          TEXT    NOT NULL DEFAULT '',
            pipeline      TEXT    NOT NULL DEFAULT '',
            status        TEXT    NOT NULL,
            created_at    REAL    NOT NULL,
            updated_at    REAL    NOT NULL,
            score         INTEGER,
            iterations    INTEGER NOT NULL DEFAULT 0,
            tokens        INTEGER NOT NULL DEFAULT 0,
            last_seq      INTEGER NOT NULL
        );
        CREATE INDEX runs_by_created ON runs (created_at);
        """,
    ),
    (
        "m002_answers_by_hash",
        # Reuse of recorded calls looks answers up by request hash.
        """
        CREATE INDEX events_answers_by_hash
            ON events (json_extract(data, '$.request_hash'))
            WHERE type = 'LLMCallAnswered';
        """,
    ),
    (
        "m003_runs_by_parent",
        # Lineage views list a run's forks and re-reviews.
        "CREATE INDEX runs_by_parent ON runs (parent_run_id, created_at)",
    ),
    (
        "m004_blobs_and_shared_prefixes",
        # Large text moves to content-addressed blobs and rows become MessagePack (rows
        # written before stay JSON text and read as before); a fork shares its parent's
        # prefix instead of copying it; the reuse lookup gets a column of its own, since
        # json_extract cannot see into MessagePack. Events move to a rowid table with a
        # unique (run_id, seq) index: 2.5x the insert rate of WITHOUT ROWID for runs
        # appending side by side (docs/benchmarks.md, 7).
        """
        CREATE TABLE packs (
            id    INTEGER PRIMARY KEY AUTOINCREMENT,
            codec INTEGER NOT NULL,
            data  BLOB    NOT NULL
        );
        CREATE TABLE blobs (
            hash  BLOB    PRIMARY KEY,
            pack  INTEGER NOT NULL,
            start INTEGER NOT NULL,
            size  INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE shares (
            run_id        TEXT    PRIMARY KEY,
            parent_run_id TEXT    NOT NULL,
            upto_seq      INTEGER NOT NULL CHECK (upto_seq >= 1),
            recorded_at   REAL    NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX shares_by_parent ON shares (parent_run_id);
        CREATE TABLE events_v4 (
            id           INTEGER PRIMARY KEY,
            run_id       TEXT    NOT NULL,
            seq          INTEGER NOT NULL CHECK (seq >= 1),
            type         TEXT    NOT NULL,
            version      INTEGER NOT NULL,
            recorded_at  REAL    NOT NULL,
            data         BLOB    NOT NULL,
            request_hash TEXT
        );
        INSERT INTO events_v4 (run_id, seq, type, version, recorded_at, data, request_hash)
            SELECT run_id, seq, type, version, recorded_at, data,
                   CASE WHEN type = 'LLMCallAnswered' AND json_valid(data)
                        THEN json_extract(data, '$.request_hash') END
            FROM events ORDER BY run_id, seq;
        DROP TABLE events;
        ALTER TABLE events_v4 RENAME TO events;
        CREATE UNIQUE INDEX events_by_run ON events (run_id, seq);
        CREATE INDEX events_answers_by_hash ON events (request_hash) WHERE request_hash IS NOT NULL;
        """,
    ),
    (
        "m005_leases",
        # Who drives a live run. A released lease keeps its row (owner NULL) so that its
        # token, the fencing epoch, keeps growing across owners.
        """
        CREATE TABLE leases (
            run_id      TEXT    PRIMARY KEY,
            owner       TEXT,
            token       INTEGER NOT NULL,
            expires_at  REAL    NOT NULL,
            acquired_at REAL    NOT NULL
        );
        """,
    ),
    (
        "m006_partial_answers",
        # Answers still being streamed, for watchers in other processes (the viewer). Not
        # part of the log: rewritten a few times a second, deleted when the call ends.
        """
        CREATE TABLE partial_answers (
            run_id     TEXT    NOT NULL,
            call_id    TEXT    NOT NULL,
            agent      TEXT    NOT NULL,
            attempt    INTEGER NOT NULL,
            text       TEXT    NOT NULL,
            pieces     INTEGER NOT NULL,
            started_at REAL    NOT NULL,
            updated_at REAL    NOT NULL,
            PRIMARY KEY (run_id, call_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "m007_application_id",
        # Marks the file as an agentlog log (b"aglg"), so another application's is refused.
        "PRAGMA application_id = 1634167911",
    ),
    (
        "m008_run_queue",
        # Runs waiting for a worker, or driven by one, until they end: a row is written with
        # a run's RunQueued event and deleted with its last one (RunFinished, RunFailed), in
        # the same transactions; rebuildable from the events like the runs index.
        """
        CREATE TABLE queue (
            run_id      TEXT PRIMARY KEY,
            enqueued_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX queue_by_time ON queue (enqueued_at);
        """,
    ),
    (
        "m009_rows_and_answer_keys",
        # Rows are written in a new format (agentlog.events.rows: the event's MessagePack
        # array, its large values spliced in), which a release before it cannot read: so
        # the schema version moves on and such a release refuses the log. Rows written
        # before stay as they are and read as before. The reuse lookup's column keeps the
        # first 16 hex digits of an answer's request hash (the index a quarter of the size);
        # a lookup compares the full hash of the answers it finds.
        """
        UPDATE events SET request_hash = substr(request_hash, 1, 16) WHERE request_hash IS NOT NULL;
        """,
    ),
    (
        "m010_shares_timed_by_the_fork",
        # A share's time is NULL when it is its fork's first own event's (the RunForked
        # appended with the prefix, at the same time, as a fork always is): 8 bytes a fork
        # fewer, read back from that event (SHARED_AT). A fork copied with a prefix time of
        # its own keeps it. Shares written before lose the time they repeat; read, they are
        # the same. SQLite cannot drop a NOT NULL: the table is made again, in the pages the
        # old one frees (its rows kept aside in a temporary table), so no page is left empty.
        """
        CREATE TEMP TABLE shares_v9 AS
            SELECT run_id, parent_run_id, upto_seq,
                   CASE WHEN recorded_at = (SELECT own.recorded_at FROM events own
                                            WHERE own.run_id = shares.run_id AND own.seq = shares.upto_seq + 1)
                        THEN NULL ELSE recorded_at END AS recorded_at
            FROM shares;
        DROP TABLE shares;
        CREATE TABLE shares (
            run_id        TEXT    PRIMARY KEY,
            parent_run_id TEXT    NOT NULL,
            upto_seq      INTEGER NOT NULL CHECK (upto_seq >= 1),
            recorded_at   REAL
        ) WITHOUT ROWID;
        CREATE INDEX shares_by_parent ON shares (parent_run_id);
        INSERT INTO shares (run_id, parent_run_id, upto_seq, recorded_at)
            SELECT run_id, parent_run_id, upto_seq, recorded_at FROM temp.shares_v9;
        DROP TABLE temp.shares_v9;
        """,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)
SHARES_VERSION = 4  # the first schema with blobs, shared prefixes and events.request_hash

# How an agentlog database is recognised before anything in it is changed: its
# application id, or (a log written before the id was set) the tables of m001 with
# (at least) their columns and a user_version below the migration that sets the id.
APPLICATION_ID = int.from_bytes(b"aglg", "big")
APPLICATION_ID_SINCE = next(n for n, (name, _) in enumerate(MIGRATIONS, start=1) if name.endswith("_application_id"))
FIRST_TABLES = {
    "events": {"run_id", "seq", "type", "version", "recorded_at", "data"},
    "runs": {"run_id", "parent_run_id", "fork_seq", "task", "pipeline", "status", "created_at", "updated_at",
             "score", "iterations", "tokens", "last_seq"},
}
# Read-only: the header fields and every table's columns, read in one snapshot.
IDENTITY = "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version), " \
    "(SELECT count(*) FROM sqlite_master)"
TABLE_COLUMNS = "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'"

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
)

RUN_COLUMNS = (
    "run_id, parent_run_id, fork_seq, task, pipeline, status, created_at, updated_at, "
    "score, iterations, tokens, last_seq"
)

LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?"
INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, type, version, recorded_at, data, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# A run's events, without its id (the reader has it: one string fewer per row).
SELECT_EVENTS = (
    "SELECT seq, type, version, recorded_at, data FROM events "
    "WHERE run_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
)
SELECT_SHARE = "SELECT parent_run_id, upto_seq FROM shares WHERE run_id = ?"
INSERT_SHARE = "INSERT INTO shares (run_id, parent_run_id, upto_seq, recorded_at) VALUES (?, ?, ?, ?)"
# When a share's prefix was recorded: its own time, or (NULL, since schema 10) the time of the
# fork's first own event, its RunForked, appended with the prefix (``SQLStore._share``).
SHARED_AT = ("coalesce(shares.recorded_at, (SELECT own.recorded_at FROM events own "
             "WHERE own.run_id = shares.run_id AND own.seq = shares.upto_seq + 1))")
# A run that shares a prefix: its own rows, then each ancestor's up to where it was forked
# (the bound shrinking along the chain), read as the run's (the reader labels them with its
# id) and, as a copy would be, recorded at the time the prefix was shared. Parameters: run
# id, after, upto. The depth bound stops a (corrupt) cycle.
SELECT_SHARED_EVENTS = f"""
    WITH RECURSIVE chain(src, hi, at, depth) AS (
        SELECT CAST(?1 AS TEXT), CAST(?3 AS BIGINT), CAST(NULL AS DOUBLE PRECISION), 0
        UNION ALL
        SELECT shares.parent_run_id, CASE WHEN shares.upto_seq < chain.hi THEN shares.upto_seq ELSE chain.hi END,
               coalesce(chain.at, {SHARED_AT}), chain.depth + 1
        FROM shares JOIN chain ON shares.run_id = chain.src WHERE chain.depth < 1000
    )
    SELECT events.seq, events.type, events.version, coalesce(chain.at, events.recorded_at), events.data
    FROM chain JOIN events ON events.run_id = chain.src AND events.seq > ?2 AND events.seq <= chain.hi
    ORDER BY events.seq
"""
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
# The runs-index row is updated in place: ``INSERT OR REPLACE`` would delete and
# re-insert it, rewriting the table's and both indexes' pages on every append.
UPSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET parent_run_id = excluded.parent_run_id, "
    "fork_seq = excluded.fork_seq, task = excluded.task, pipeline = excluded.pipeline, "
    "status = excluded.status, created_at = excluded.created_at, updated_at = excluded.updated_at, "
    "score = excluded.score, iterations = excluded.iterations, tokens = excluded.tokens, "
    "last_seq = excluded.last_seq"
)
# The same, for a run whose row exists and whose indexed columns (parent_run_id,
# created_at) stay: no index of the table is rewritten.
UPDATE_RUN = (
    "UPDATE runs SET fork_seq = ?, task = ?, pipeline = ?, status = ?, updated_at = ?, score = ?, "
    "iterations = ?, tokens = ?, last_seq = ? WHERE run_id = ?"
)
# The same with the fence of an append under a lease (SQLStore.ONE_WRITER): no row is
# updated if the lease the batch is appended under (its token, last parameter) is gone.
UPDATE_RUN_FENCED = UPDATE_RUN + (
    " AND (SELECT token FROM leases WHERE leases.run_id = runs.run_id AND owner IS NOT NULL) = ?"
)
# A new run's index row: the key is taken if the run has one (it has events) after all.
INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# A group's checks in one statement each: the last seq (by the key's max optimisation) and
# the index row of every run in the group, the ids given as a JSON array read by ``ids``
# (the dialect's table function of a JSON array, one column ``value``).
def last_seqs(ids: str) -> str:
    return f"SELECT value, (SELECT coalesce(max(seq), 0) FROM events WHERE run_id = value) FROM {ids}"


def runs_in(ids: str) -> str:
    return f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id IN (SELECT value FROM {ids})"


JSON_IDS = "json_each(?)"
RUN_IDS_BY_PREFIX = "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT 2"
# The run, its parent, its parent's parent, ... in one statement; the depth bound stops a
# (corrupt) cycle, which lineage_of() then cuts at the first repeat.
LINEAGE = """
    WITH RECURSIVE chain(run_id, depth) AS (
        SELECT CAST(? AS TEXT), 0
        UNION ALL
        SELECT runs.parent_run_id, chain.depth + 1 FROM runs JOIN chain ON runs.run_id = chain.run_id
        WHERE runs.parent_run_id IS NOT NULL AND chain.depth < 1000
    )
    SELECT run_id FROM chain ORDER BY depth
"""
CHILDREN = f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ? ORDER BY created_at, run_id"
PARTIAL_COLUMNS = "run_id, call_id, agent, attempt, text, pieces, started_at, updated_at"
UPSERT_PARTIAL = (
    f"INSERT INTO partial_answers ({PARTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, call_id) DO UPDATE SET agent = excluded.agent, attempt = excluded.attempt, "
    "text = excluded.text, pieces = excluded.pieces, started_at = excluded.started_at, "
    "updated_at = excluded.updated_at"
)
DELETE_PARTIAL = "DELETE FROM partial_answers WHERE run_id = ? AND call_id = ?"
SELECT_PARTIALS = f"SELECT {PARTIAL_COLUMNS} FROM partial_answers WHERE run_id = ? ORDER BY started_at, call_id"
# Events of one type in every run (a sweep's members); a scan, for rare lookups. Rows of
# a shared prefix are the parent's, so a fork never lists its parent's events as its own.
EVENTS_OF_TYPE = (
    "SELECT run_id, seq, type, version, recorded_at, data FROM events WHERE type = ? ORDER BY recorded_at, run_id"
)
# ``request_hash`` is filled for answers only (the partial index holds just those rows): its
# first ANSWER_KEY characters since schema 9, the whole hash in a log of schema 4-8 opened
# read-only; the caller compares the full hash. An answer in a shared prefix is found in
# every run that shares it, as a copy would be.
ANSWER_KEY = 16
ANSWERS_BY_HASH = f"""
    WITH RECURSIVE hits(run_id, seq, type, version, recorded_at, data, depth) AS (
        SELECT run_id, seq, type, version, recorded_at, data, 0 FROM events
        WHERE request_hash IN (?1, substr(?1, 1, {ANSWER_KEY}))
        UNION ALL
        SELECT shares.run_id, hits.seq, hits.type, hits.version, {SHARED_AT}, hits.data, hits.depth + 1
        FROM shares JOIN hits ON shares.parent_run_id = hits.run_id AND shares.upto_seq >= hits.seq
        WHERE hits.depth < 1000
    )
    SELECT run_id, seq, type, version, recorded_at, data FROM hits
"""
# What vacuum needs: every packed row (JSON rows refer to no pack), every pack's size.
PACKED_ROWS = "SELECT run_id, seq, data FROM events WHERE typeof(data) = 'blob'"
PACK_SIZES = "SELECT id, length(data), (SELECT count(*) FROM blobs WHERE blobs.pack = packs.id) FROM packs"
# The same, in a log of an older schema opened read-only (the viewer never migrates).
ANSWERS_BY_HASH_BEFORE_SHARES = (
    "SELECT run_id, seq, type, version, recorded_at, data FROM events "
    "WHERE json_extract(data, '$.request_hash') = ? AND type = 'LLMCallAnswered'"
)

# Leases: the SQL only; when a lease may be taken over is the caller's policy.
SELECT_LEASE = "SELECT owner, token, expires_at FROM leases WHERE run_id = ?"
# Before a claim: a released row for a run never leased, so that there is a row to lock
# (concurrent claimants then queue on it instead of both inserting).
ENSURE_LEASE = (
    "INSERT INTO leases (run_id, owner, token, expires_at, acquired_at) VALUES (?, NULL, 0, 0, 0) "
    "ON CONFLICT (run_id) DO NOTHING"
)
LEASE_TOKEN = "SELECT token FROM leases WHERE run_id = ? AND owner IS NOT NULL"
# The first lease of a run never leased, in one statement (SQLStore.ONE_WRITER): no row is
# inserted if the run has a lease row; and back to the row ENSURE_LEASE makes, should the
# run's batch be refused after all.
CLAIM_NEW_LEASE = (
    "INSERT INTO leases (run_id, owner, token, expires_at, acquired_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO NOTHING"
)
UNCLAIM_NEW_LEASE = "UPDATE leases SET owner = NULL, token = 0, expires_at = 0, acquired_at = 0 WHERE run_id = ? AND token = ?"
CLAIM_LEASE = (
    "INSERT INTO leases (run_id, owner, token, expires_at, acquired_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
    "expires_at = excluded.expires_at, acquired_at = excluded.acquired_at"
)
RENEW_LEASE = "UPDATE leases SET expires_at = ? WHERE run_id = ? AND token = ? AND owner IS NOT NULL"
RELEASE_LEASE = "UPDATE leases SET owner = NULL, expires_at = 0 WHERE run_id = ? AND token = ?"

# The run queue. Claimable: a queued run nobody drives (never claimed, released, or its lease
# expired), oldest first; a run waiting for a person is not, until a decision moves it on.
ENQUEUE = "INSERT INTO queue (run_id, enqueued_at) VALUES (?, ?) ON CONFLICT (run_id) DO NOTHING"
DEQUEUE = "DELETE FROM queue WHERE run_id = ?"
CLAIMABLE = """
    SELECT queue.run_id, leases.token FROM queue
    JOIN runs ON runs.run_id = queue.run_id
    LEFT JOIN leases ON leases.run_id = queue.run_id
    WHERE runs.status IN ('queued', 'running') AND (leases.owner IS NULL OR leases.expires_at <= ?)
    ORDER BY queue.enqueued_at, queue.run_id LIMIT 1
"""
# The same, up to ``?`` runs: a worker claims as many as it has room for in one transaction.
CLAIMABLE_SOME = CLAIMABLE.replace("LIMIT 1", "LIMIT ?")
QUEUED_RUNS = "SELECT run_id FROM queue ORDER BY enqueued_at, run_id"


def list_runs_query(
    *, status: str | None, text: str | None, limit: int | None, offset: int, like: str = "LIKE"
) -> tuple[str, list[object]]:
    """``like``: the dialect's case-insensitive LIKE (SQLite's LIKE is; Postgres has ILIKE)."""
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if text:
        where.append(f"(task {like} ? ESCAPE '\\' OR run_id {like} ? ESCAPE '\\')")
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    sql = f"SELECT {RUN_COLUMNS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, run_id DESC"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [limit, offset]
    return sql, params


def count_runs_query(*, status: str | None, text: str | None, like: str = "LIKE") -> tuple[str, list[object]]:
    sql, params = list_runs_query(status=status, text=text, limit=None, offset=0, like=like)
    return f"SELECT count(*) FROM ({sql}) AS matching", params
