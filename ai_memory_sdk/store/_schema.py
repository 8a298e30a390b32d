"""SQLite schema of the local store, versioned with ``PRAGMA user_version``.

Each entry of ``MIGRATIONS`` takes the database from version i to i+1; a new
release appends one and never edits an old one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE subjects (
        pk INTEGER PRIMARY KEY,
        subject_id TEXT NOT NULL UNIQUE,
        agent_id TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );

    CREATE TABLE blocks (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        label TEXT NOT NULL,
        description TEXT NOT NULL,
        value TEXT NOT NULL,
        char_limit INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (subject_pk, label)
    );

    CREATE TABLE block_versions (
        block_pk INTEGER NOT NULL REFERENCES blocks(pk) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        value TEXT NOT NULL,
        run_id TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (block_pk, version)
    ) WITHOUT ROWID;

    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        status TEXT NOT NULL,
        error TEXT,
        stop_reason TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        learner TEXT,
        llm_calls INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        claim_id TEXT,
        lease_owner TEXT,
        lease_expires REAL
    );
    CREATE INDEX runs_queue ON runs(status, subject_pk, seq);
    CREATE INDEX runs_subject ON runs(subject_pk, seq);

    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        run_seq INTEGER REFERENCES runs(seq) ON DELETE SET NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        name TEXT,
        metadata TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_subject ON messages(subject_pk, created_at, seq);
    CREATE INDEX messages_run ON messages(run_seq);

    CREATE TABLE passages (
        pk INTEGER PRIMARY KEY,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        message_seq INTEGER REFERENCES messages(seq) ON DELETE CASCADE,
        content TEXT NOT NULL,
        index_text TEXT NOT NULL,
        role TEXT,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX passages_subject ON passages(subject_pk, created_at);
    CREATE INDEX passages_message ON passages(message_seq);

    CREATE VIRTUAL TABLE passages_fts USING fts5(
        index_text, content='passages', content_rowid='pk', tokenize='porter unicode61'
    );
    CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts(rowid, index_text) VALUES (new.pk, new.index_text);
    END;
    CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, index_text) VALUES ('delete', old.pk, old.index_text);
    END;

    CREATE TABLE passage_vectors (
        passage_pk INTEGER PRIMARY KEY REFERENCES passages(pk) ON DELETE CASCADE,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX passage_vectors_subject ON passage_vectors(subject_pk, embedder);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
