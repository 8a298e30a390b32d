"""PostgreSQL schema of the store, in its own schema ``ai_memory``, versioned in ``schema_version``.

Each entry of ``MIGRATIONS`` takes the database from version i to i+1; a new
release appends one and never edits an old one. Version 1 holds everything
the SQLite store's version 2 holds (tenants, run kinds, traces, sessions, API
keys), with the same columns where both have them, so ``store/_rows.py``
reads rows of either backend: times are epoch seconds (``double
precision``), JSON is text.

What PostgreSQL adds:

- ``subjects.queue_seq`` and ``subjects.busy``: the queue state of a subject
  on its own row (the oldest queued run's ``seq``; whether a run is
  running). A claim locks the row of a claimable subject with ``SKIP
  LOCKED``, and every change of a subject's run statuses locks that row
  first, so the state is always that of its runs and no two workers on any
  machines can claim one subject at once (see ``queue.py``).
- ``passages.tsv``: a weighted ``tsvector`` (the passage's own text weight A,
  its context weight B) with a GIN index, in a text search configuration of
  the Snowball English stemmer without a stopword list (the recipe drops
  stopwords from queries itself, and BM25 needs every token counted), and
  ``passages.tokens``, the token count BM25 normalises by (``index.py``).
- ``search_gen`` also counts each subject's passages and their tokens: the
  ``N`` and average length of its BM25, read in the same row as the cache
  generation.
- ``passage_vectors.vector`` is float32 ``bytea``; when the ``vector``
  extension (pgvector) can be created, ``migrate_vectors`` adds an
  ``embedding vector`` column, and HNSW indexes are made per embedder.
"""

from __future__ import annotations

SCHEMA = "ai_memory"
TS_CONFIG = "ai_memory.english_all"  # Snowball English, no stopwords

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TEXT SEARCH DICTIONARY english_all_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION english_all (COPY = pg_catalog.english);
    ALTER TEXT SEARCH CONFIGURATION english_all
        ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part WITH english_all_stem;

    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);

    CREATE TABLE subjects (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant text NOT NULL DEFAULT '',
        subject_id text NOT NULL,
        agent_id text NOT NULL UNIQUE,
        created_at double precision NOT NULL,
        queue_seq bigint,
        busy boolean NOT NULL DEFAULT false,
        UNIQUE (tenant, subject_id)
    );
    CREATE INDEX subjects_claimable ON subjects (queue_seq) WHERE queue_seq IS NOT NULL AND NOT busy;

    CREATE TABLE blocks (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        label text NOT NULL,
        description text NOT NULL,
        value text NOT NULL,
        char_limit integer NOT NULL,
        version integer NOT NULL DEFAULT 1,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        UNIQUE (subject_pk, label)
    );

    CREATE TABLE block_versions (
        block_pk bigint NOT NULL REFERENCES blocks(pk) ON DELETE CASCADE,
        version integer NOT NULL,
        value text NOT NULL,
        run_id text,
        created_at double precision NOT NULL,
        PRIMARY KEY (block_pk, version)
    );

    CREATE TABLE runs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        kind text NOT NULL DEFAULT 'learn',
        status text NOT NULL,
        error text,
        stop_reason text,
        created_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        learner text,
        llm_calls integer NOT NULL DEFAULT 0,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        claim_id text,
        lease_owner text,
        lease_expires double precision
    );
    CREATE INDEX runs_subject ON runs (subject_pk, seq);
    CREATE INDEX runs_queued ON runs (subject_pk, seq) WHERE status = 'queued';
    CREATE INDEX runs_running ON runs (subject_pk) WHERE status = 'running';
    CREATE INDEX runs_lease ON runs (lease_expires) WHERE status = 'running';
    CREATE INDEX runs_claim ON runs (claim_id) WHERE claim_id IS NOT NULL;

    CREATE TABLE messages (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        run_seq bigint REFERENCES runs(seq) ON DELETE SET NULL,
        role text NOT NULL,
        content text NOT NULL,
        name text,
        metadata text,
        created_at double precision NOT NULL
    );
    CREATE INDEX messages_subject ON messages (subject_pk, created_at, seq);
    CREATE INDEX messages_run ON messages (run_seq);

    CREATE TABLE search_gen (
        subject_pk bigint PRIMARY KEY REFERENCES subjects(pk) ON DELETE CASCADE,
        added bigint NOT NULL DEFAULT 0,
        removed bigint NOT NULL DEFAULT 0,
        passages bigint NOT NULL DEFAULT 0,
        tokens bigint NOT NULL DEFAULT 0
    );

    CREATE TABLE passages (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        message_seq bigint REFERENCES messages(seq) ON DELETE CASCADE,
        content text NOT NULL,
        context text NOT NULL,
        role text,
        tags text NOT NULL,
        created_at double precision NOT NULL,
        tokens integer NOT NULL,
        tsv tsvector NOT NULL GENERATED ALWAYS AS (
            setweight(to_tsvector('ai_memory.english_all'::regconfig, content), 'A')
            || setweight(to_tsvector('ai_memory.english_all'::regconfig, context), 'B')
        ) STORED
    );
    CREATE INDEX passages_subject ON passages (subject_pk, pk);
    CREATE INDEX passages_message ON passages (message_seq);
    CREATE INDEX passages_tsv ON passages USING gin (tsv);

    CREATE TABLE passage_vectors (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        passage_pk bigint NOT NULL REFERENCES passages(pk) ON DELETE CASCADE,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        embedder text NOT NULL,
        vector bytea,
        UNIQUE (passage_pk, embedder)
    );
    CREATE INDEX passage_vectors_subject ON passage_vectors (subject_pk, embedder, seq);

    CREATE TABLE traces (
        claim_id text PRIMARY KEY,
        subject_pk bigint NOT NULL REFERENCES subjects(pk) ON DELETE CASCADE,
        trace text NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE INDEX traces_subject ON traces (subject_pk);

    CREATE TABLE sessions (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant text NOT NULL,
        session_id text NOT NULL,
        subject_id text NOT NULL,
        created_at double precision NOT NULL,
        UNIQUE (tenant, session_id)
    );
    CREATE INDEX sessions_subject ON sessions (tenant, subject_id);
    CREATE TABLE session_items (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_pk bigint NOT NULL REFERENCES sessions(pk) ON DELETE CASCADE,
        item text NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE INDEX session_items_session ON session_items (session_pk, seq);

    CREATE TABLE api_keys (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        created_at double precision NOT NULL,
        revoked_at double precision
    );
    CREATE UNIQUE INDEX api_keys_active ON api_keys (name) WHERE revoked_at IS NULL;

    -- Tables to rewrite after a delete (erasure.py): a generation per table, so a purge that ran
    -- before a newer delete committed does not clear that delete's mark.
    CREATE TABLE purge (tbl text PRIMARY KEY, gen bigint NOT NULL DEFAULT 1);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
