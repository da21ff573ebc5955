-- index events_answers_by_hash
CREATE INDEX events_answers_by_hash ON events (request_hash) WHERE request_hash IS NOT NULL;

-- index events_by_run
CREATE UNIQUE INDEX events_by_run ON events (run_id, seq);

-- index queue_by_time
CREATE INDEX queue_by_time ON queue (enqueued_at);

-- index runs_by_created
CREATE INDEX runs_by_created ON runs (created_at);

-- index runs_by_parent
CREATE INDEX runs_by_parent ON runs (parent_run_id, created_at);

-- index shares_by_parent
CREATE INDEX shares_by_parent ON shares (parent_run_id);

-- table blobs
CREATE TABLE blobs (
            hash  BLOB    PRIMARY KEY,
            pack  INTEGER NOT NULL,
            start INTEGER NOT NULL,
            size  INTEGER NOT NULL
        ) WITHOUT ROWID;

-- table events
CREATE TABLE "events" (
            id           INTEGER PRIMARY KEY,
            run_id       TEXT    NOT NULL,
            seq          INTEGER NOT NULL CHECK (seq >= 1),
            type         TEXT    NOT NULL,
            version      INTEGER NOT NULL,
            recorded_at  REAL    NOT NULL,
            data         BLOB    NOT NULL,
            request_hash TEXT
        );

-- table leases
CREATE TABLE leases (
            run_id      TEXT    PRIMARY KEY,
            owner       TEXT,
            token       INTEGER NOT NULL,
            expires_at  REAL    NOT NULL,
            acquired_at REAL    NOT NULL
        );

-- table packs
CREATE TABLE packs (
            id    INTEGER PRIMARY KEY AUTOINCREMENT,
            codec INTEGER NOT NULL,
            data  BLOB    NOT NULL
        );

-- table partial_answers
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

-- table queue
CREATE TABLE queue (
            run_id      TEXT PRIMARY KEY,
            enqueued_at REAL NOT NULL
        ) WITHOUT ROWID;

-- table runs
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

-- table shares
CREATE TABLE shares (
            run_id        TEXT    PRIMARY KEY,
            parent_run_id TEXT    NOT NULL,
            upto_seq      INTEGER NOT NULL CHECK (upto_seq >= 1),
            recorded_at   REAL
        ) WITHOUT ROWID;

