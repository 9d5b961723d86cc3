"""What the journal file holds: the tables of every store, and how an older file is brought up to
date.

The schema is kept whole here rather than beside each store because its versions are the file's,
not a store's: a migration is numbered in one sequence for all the tables. The statements'
whitespace is part of what SQLite stores in `sqlite_master`, so it stays as first written.
"""

SCHEMA_VERSION = 4

# Each statement is run on its own: executescript() would COMMIT the surrounding transaction.
SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids appear in logs
        content_hash   TEXT NOT NULL,
        preset         TEXT NOT NULL,
        fingerprint    TEXT NOT NULL,
        source_path    TEXT NOT NULL,
        state          TEXT NOT NULL
            CHECK (state IN ('queued', 'running', 'done', 'failed', 'quarantined')),
        attempts       INTEGER NOT NULL CHECK (attempts >= 0),
        enqueued_at    REAL NOT NULL,
        started_at     REAL,
        finished_at    REAL,
        not_before     REAL NOT NULL,
        planned_output TEXT,
        outputs        TEXT NOT NULL DEFAULT '[]',  -- JSON array of paths
        error          TEXT,
        details        TEXT NOT NULL DEFAULT '{}'   -- JSON object
    )
    """,
    "CREATE UNIQUE INDEX jobs_identity ON jobs (content_hash, fingerprint)",
    "CREATE INDEX jobs_claim ON jobs (state, id)",
    """
    CREATE TABLE files (
        path         TEXT PRIMARY KEY,
        size         INTEGER NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        content_hash TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    "PRAGMA user_version = 1",
)
# Version 2: the transactional outbox of events (notify:). An event is inserted in the same
# transaction as the state change it reports, with one delivery row per channel it goes to; the
# sender marks each row sent or given up. A journal of version 1 gains these when opened.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        """
        CREATE TABLE events (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order they happened in
            id       TEXT NOT NULL UNIQUE,               -- what receivers de-duplicate by
            type     TEXT NOT NULL,
            time     REAL NOT NULL,
            payload  TEXT NOT NULL                       -- the event as sent, JSON
        )
        """,
        """
        CREATE TABLE deliveries (
            seq       INTEGER NOT NULL REFERENCES events (seq),
            channel   TEXT NOT NULL,
            state     TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'given_up')),
            attempts  INTEGER NOT NULL DEFAULT 0,
            next_try  REAL NOT NULL,
            done_at   REAL,
            error     TEXT,
            PRIMARY KEY (channel, seq)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX deliveries_due ON deliveries (channel, state, next_try)",
        "PRAGMA user_version = 2",
    ),
    # Version 3: a file's ctime beside its mtime. `cp -p` (and sync tools) can replace a photo's
    # bytes keeping its size and mtime; no tool can set the ctime, which any write changes.
    3: (
        "ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0",
        "PRAGMA user_version = 3",
    ),
    # Version 4: the files skipped without a job (videos: a Live Photo's .MOV), by the version
    # (size, mtime, ctime) seen, so a rescan or a restart says nothing of them again.
    4: (
        """
        CREATE TABLE skipped_files (
            path        TEXT PRIMARY KEY,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            kind        TEXT NOT NULL,  -- what it is, as the log said: 'QuickTime video'
            skipped_at  REAL NOT NULL
        ) WITHOUT ROWID
        """,
        "PRAGMA user_version = 4",
    ),
}
