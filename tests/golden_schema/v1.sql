-- index runs_by_created
CREATE INDEX runs_by_created ON runs (created_at);

-- table events
CREATE TABLE events (
            run_id      TEXT    NOT NULL,
            seq         INTEGER NOT NULL CHECK (seq >= 1),
            type        TEXT    NOT NULL,
            version     INTEGER NOT NULL,
            recorded_at REAL    NOT NULL,
            data        TEXT    NOT NULL,
            PRIMARY KEY (run_id, seq)
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

