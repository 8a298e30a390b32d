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

    -- Per-subject change counters of passages and vectors: a search reads one row to know whether
    -- its cached arrays are current (``added`` only: append; ``removed``: rebuild).
    CREATE TABLE search_gen (
        subject_pk INTEGER PRIMARY KEY REFERENCES subjects(pk) ON DELETE CASCADE,
        added INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0
    );

    -- Archival passages. ``context`` is what the lexical index adds to a passage: its date as words and
    -- the text of the 2 passages of the subject stored before it, written at enqueue and rewritten when
    -- one of those is deleted.
    CREATE TABLE passages (
        pk INTEGER PRIMARY KEY,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        message_seq INTEGER REFERENCES messages(seq) ON DELETE CASCADE,
        content TEXT NOT NULL,
        context TEXT NOT NULL,
        role TEXT,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX passages_subject ON passages(subject_pk);
    CREATE INDEX passages_message ON passages(message_seq);

    CREATE VIRTUAL TABLE passages_fts USING fts5(
        content, context, content='passages', content_rowid='pk', tokenize='porter unicode61'
    );
    CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts(rowid, content, context) VALUES (new.pk, new.content, new.context);
        INSERT INTO search_gen(subject_pk, added) VALUES (new.subject_pk, 1)
            ON CONFLICT(subject_pk) DO UPDATE SET added=added+1;
    END;
    CREATE TRIGGER passages_au AFTER UPDATE OF content, context ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, content, context) VALUES ('delete', old.pk, old.content, old.context);
        INSERT INTO passages_fts(rowid, content, context) VALUES (new.pk, new.content, new.context);
    END;
    CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, content, context) VALUES ('delete', old.pk, old.content, old.context);
        UPDATE search_gen SET removed=removed+1 WHERE subject_pk=old.subject_pk;
    END;

    -- One vector per (passage, embedder); ``seq`` only grows, so a search cache reads what is new.
    CREATE TABLE passage_vectors (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        passage_pk INTEGER NOT NULL REFERENCES passages(pk) ON DELETE CASCADE,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (passage_pk, embedder)
    );
    CREATE INDEX passage_vectors_subject ON passage_vectors(subject_pk, embedder, seq);
    CREATE TRIGGER passage_vectors_ai AFTER INSERT ON passage_vectors BEGIN
        INSERT INTO search_gen(subject_pk, added) VALUES (new.subject_pk, 1)
            ON CONFLICT(subject_pk) DO UPDATE SET added=added+1;
    END;
    CREATE TRIGGER passage_vectors_ad AFTER DELETE ON passage_vectors BEGIN
        UPDATE search_gen SET removed=removed+1 WHERE subject_pk=old.subject_pk;
    END;

    """,
    # v2: tenants (a subject id is unique per tenant), run kinds, pass traces, agent sessions, API keys.
    # subjects is rebuilt (its UNIQUE(subject_id) becomes UNIQUE(tenant, subject_id)) with foreign keys off.
    """
    CREATE TABLE subjects_v2 (
        pk INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL DEFAULT '',
        subject_id TEXT NOT NULL,
        agent_id TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        UNIQUE (tenant, subject_id)
    );
    INSERT INTO subjects_v2(pk, tenant, subject_id, agent_id, created_at)
        SELECT pk, '', subject_id, agent_id, created_at FROM subjects;
    DROP TABLE subjects;
    ALTER TABLE subjects_v2 RENAME TO subjects;

    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'learn';
    CREATE INDEX runs_claim ON runs(claim_id);

    -- What a pass sent to the model and what it did (the inspector): one row per claim, so a coalesced
    -- pass is stored once for all its runs (runs.claim_id).
    CREATE TABLE traces (
        claim_id TEXT PRIMARY KEY,
        subject_pk INTEGER NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        trace TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX traces_subject ON traces(subject_pk);

    -- OpenAI Agents SDK sessions: items in order, each session bound to the subject it teaches.
    CREATE TABLE sessions (
        pk INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        session_id TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (tenant, session_id)
    );
    CREATE INDEX sessions_subject ON sessions(tenant, subject_id);
    CREATE TABLE session_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_pk INTEGER NOT NULL REFERENCES sessions(pk) ON DELETE CASCADE,
        item TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX session_items_session ON session_items(session_pk, seq);

    -- HTTP server keys: only a hash is stored; a name (its tenant) has at most one active key.
    CREATE TABLE api_keys (
        pk INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE UNIQUE INDEX api_keys_active ON api_keys(name) WHERE revoked_at IS NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
