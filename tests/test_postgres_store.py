"""The PostgreSQL store on a real server: opening and migrating, the run queue, wake-ups, search, erasure.

Each test gets an empty database on the session's server (``postgres_url``:
the system PostgreSQL, vectors as bytea; ``pgvector_url``: PostgreSQL 18
with pgvector). Several ``PostgresStore`` objects on one database stand for
several processes (each has its own lease owner); tests that need real
processes start them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from support.postgres_server import PostgresServer, database_name

from ai_memory_sdk import Memory
from ai_memory_sdk.errors import StoreError
from ai_memory_sdk.models import BlockSpec, MessageIn
from ai_memory_sdk.store.base import MAX_ATTEMPTS, IndexCursor, PassResult
from ai_memory_sdk.store.postgres import PostgresStore
from ai_memory_sdk.store.postgres._schema import SCHEMA_VERSION
from ai_memory_sdk.store.postgres.index import PgvectorIndex, PostgresIndex

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]
HUMAN = BlockSpec(label="human", description="about the user", limit=100_000)


@pytest.fixture
def open_store(postgres_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """``PostgresStore`` objects on the test's database (one per simulated process), all closed afterwards."""
    made: list[PostgresStore] = []

    def make(url: str = postgres_url, **options: Any) -> PostgresStore:
        store = PostgresStore(url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def make_pg(postgres_url: str) -> Iterator[Callable[..., Memory]]:
    made: list[Memory] = []

    def make(**options: Any) -> Memory:
        options.setdefault("path", postgres_url)
        options.setdefault("learner", "offline")
        options.setdefault("embedder", "none")
        m = Memory(**options)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def msg(text: str, role: str = "user", **extra: Any) -> MessageIn:
    return MessageIn(role=role, content=text, created_at=datetime.now(timezone.utc), **extra)


def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO ai_memory, public")
        cur = conn.execute(statement, args or None)
        return list(cur.fetchall()) if cur.description else []


# -- opening ---------------------------------------------------------------------------------------


def test_path_masks_the_password_and_the_schema_is_versioned(postgres_server: PostgresServer, open_store) -> None:
    url = postgres_server.create_database()
    with_password = url.replace("postgresql://app@", "postgresql://app:s3cret-pw@")  # trust auth ignores it
    store = open_store(with_password)
    assert store.path == url.replace("postgresql://app@", "postgresql://app:***@")
    assert "s3cret" not in repr(Memory(path=with_password, learner="offline", embedder="none", background=False))
    assert sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert sql(url, "SELECT value FROM meta WHERE key='vectors'") == [("bytea",)]  # app may not create pgvector


def test_an_unreachable_server_is_a_store_error_naming_the_masked_url(tmp_path: Path) -> None:
    url = f"postgresql://app:s3cret@/memory?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError) as err:
        Memory(path=url, learner="offline", embedder="none")
    text = str(err.value)
    assert f"postgresql://app:***@/memory?host={tmp_path}" in text and "cannot connect" in text
    assert "s3cret" not in text


def test_without_the_postgres_extra_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("ai_memory_sdk.store.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra looks like to import
    with pytest.raises(StoreError, match=r"pip install 'ai-memory-sdk\[postgres\]'") as err:
        Memory(path="postgresql://app:s3cret@db/memory", learner="offline", embedder="none")
    assert "postgresql://app:***@db/memory" in str(err.value)


def test_a_missing_database_says_to_create_it(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match="create the database first"):
        PostgresStore(postgres_server.url("no_such_db", "app"))


def test_a_newer_schema_is_refused_and_left_unchanged(open_store, postgres_url: str) -> None:
    open_store().close()
    sql(postgres_url, "UPDATE schema_version SET version=99")
    tables = sql(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname='ai_memory'")
    with pytest.raises(StoreError, match=r"schema version 99; this ai_memory_sdk knows up to \d+\. Upgrade"):
        open_store()
    assert sql(postgres_url, "SELECT version FROM schema_version") == [(99,)]
    assert sql(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname='ai_memory'") == tables


def test_a_running_process_stops_writing_once_a_newer_package_migrated(open_store, postgres_url: str) -> None:
    store = open_store()
    store.create_subject("alice", reset=False, blocks=[HUMAN])
    assert store.listener.wait_up(10)
    sql(postgres_url, f"UPDATE schema_version SET version={SCHEMA_VERSION + 1}")
    sql(postgres_url, f"NOTIFY ai_memory_schema, '{SCHEMA_VERSION + 1}'")  # what a newer migration sends
    deadline = time.monotonic() + 5
    while store.listener.newer_schema is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(StoreError, match=r"migrated to schema version .* upgrade the package"):
        store.enqueue("alice", [msg("hello")], passages=[None])
    assert sql(postgres_url, "SELECT count(*) FROM runs") == [(0,)]


def test_a_foreign_ai_memory_schema_is_refused(open_store, postgres_url: str) -> None:
    sql(postgres_url, "CREATE SCHEMA ai_memory")
    sql(postgres_url, "CREATE TABLE ai_memory.invoices (id int)")
    with pytest.raises(StoreError, match=r"not ai_memory_sdk's .*invoices"):
        open_store()


def test_many_processes_opening_a_new_database_at_once_migrate_it_once(postgres_url: str) -> None:
    code = (
        "import sys; from ai_memory_sdk.store.postgres import PostgresStore;"
        " s = PostgresStore(sys.argv[1]); s.create_subject('p' + sys.argv[2], reset=False); s.close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_url, str(i)], cwd=ROOT) for i in range(6)]
    assert [p.wait(120) for p in procs] == [0] * 6
    assert sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert sql(postgres_url, "SELECT count(*) FROM subjects") == [(6,)]


# -- the run queue -----------------------------------------------------------------------------------


def _queue_runs(store: PostgresStore, subject: str, n: int) -> list[str]:
    return [
        store.enqueue(subject, [msg(f"{subject} batch {i}")], passages=[None], default_blocks=[HUMAN]) for i in range(n)
    ]


def test_claims_take_the_oldest_subject_coalesce_and_put_consolidation_first(open_store) -> None:
    store = open_store()
    a = _queue_runs(store, "a", 2)
    b = _queue_runs(store, "b", 1)
    a += _queue_runs(store, "a", 1)
    first = store.queue.claim(30)
    assert first is not None and first.subject_id == "a" and first.run_ids == tuple(a)  # all three, in order
    assert store.queue.claim(30).run_ids == tuple(b)  # type: ignore[union-attr]
    assert store.queue.claim(30) is None  # a is busy, b is busy
    more = _queue_runs(store, "a", 1)
    assert store.queue.claim(30) is None  # never two passes of one subject
    assert store.queue.complete(first, PassResult(learner="test"))
    consolidation = store.consolidate("a")
    nxt = store.queue.claim(30)
    assert nxt is not None and nxt.kind == "consolidate" and nxt.run_ids == (consolidation,)
    store.queue.complete(nxt, PassResult(learner="test"))
    assert store.queue.claim(30).run_ids == tuple(more)  # type: ignore[union-attr]


def test_a_lost_lease_fences_the_old_claim_and_a_crashed_run_fails_alone_at_the_limit(open_store, postgres_url) -> None:
    dead, live = open_store(), open_store()  # two processes: different lease owners
    poison = _queue_runs(dead, "s", 1)[0]
    neighbour = _queue_runs(dead, "s", 1)[0]
    claim = dead.queue.claim(0.2)
    assert claim is not None and claim.run_ids == (poison, neighbour)
    row = sql(postgres_url, "SELECT lease_expires - started_at FROM runs WHERE id=%s", poison)[0][0]
    assert abs(row - 0.2) < 0.01  # both from the server's clock
    time.sleep(0.3)
    assert live.queue.recover() == 2
    assert not dead.queue.complete(claim, PassResult(learner="late"))  # fenced: nothing applied
    assert dead.get_run(poison).status == "queued"  # type: ignore[union-attr]
    for attempt in range(2, MAX_ATTEMPTS + 1):  # the attempted run is claimed alone from now on
        again = live.queue.claim(0.05)
        assert again is not None and again.run_ids == (poison,), attempt
        time.sleep(0.1)
        live.queue.recover()
    failed = live.get_run(poison)
    assert failed is not None and failed.status == "failed" and failed.stop_reason == "crashed"
    assert "retry_run" in (failed.error or "")
    rest = live.queue.claim(30)
    assert rest is not None and rest.run_ids == (neighbour,)


def test_a_dead_process_of_this_host_loses_its_runs_before_its_lease_ends(open_store, postgres_url) -> None:
    import socket

    store, other = open_store(), open_store()
    run = _queue_runs(store, "s", 1)[0]
    assert store.queue.claim(3600) is not None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has now
    sql(postgres_url, "UPDATE runs SET lease_owner=%s WHERE id=%s", f"{socket.gethostname()}:{gone.pid}:dead", run)
    assert other.queue.recover() == 1  # the lease had an hour left
    assert sql(postgres_url, "SELECT status FROM runs WHERE id=%s", run) == [("queued",)]


def test_release_hands_runs_back_without_counting_an_attempt(open_store, postgres_url) -> None:
    store = open_store()
    run = _queue_runs(store, "s", 1)[0]
    claim = store.queue.claim(30)
    assert claim is not None and store.queue.release(claim) == 1
    assert sql(postgres_url, "SELECT status, attempts, claim_id FROM runs WHERE id=%s", run) == [("queued", 0, None)]
    assert not store.queue.complete(claim, PassResult(learner="late"))
    assert store.queue.claim(30).run_ids == (run,)  # type: ignore[union-attr]


def test_renewed_leases_are_not_recovered(open_store) -> None:
    owner, other = open_store(), open_store()
    _queue_runs(owner, "s", 1)
    claim = owner.queue.claim(0.5)
    for _ in range(4):
        time.sleep(0.2)
        assert owner.queue.renew_leases(0.5) == 1
        assert other.queue.recover() == 0
    assert owner.queue.complete(claim, PassResult(learner="test"))  # type: ignore[arg-type]


def test_claimers_in_many_threads_of_two_processes_never_overlap_a_subject(open_store, postgres_url) -> None:
    stores = [open_store(), open_store()]
    subjects = [f"s{i}" for i in range(6)]
    runs = [rid for k in range(15) for s in subjects for rid in _queue_runs(stores[k % 2], s, 1)]
    active: dict[int, int] = {}
    problems: list[str] = []
    applied: list[str] = []
    lock = threading.Lock()

    def work(store: PostgresStore) -> None:
        idle = 0
        while idle < 20:
            claim = store.queue.claim(30)
            if claim is None:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            with lock:
                if active.get(claim.subject_pk):
                    problems.append(f"two passes of {claim.subject_id}")
                active[claim.subject_pk] = 1
            time.sleep(0.005)
            with lock:
                active[claim.subject_pk] = 0
                applied.extend(claim.run_ids)
            if not store.queue.complete(claim, PassResult(learner="t")):
                problems.append("lost claim")

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert problems == []
    assert sorted(applied) == sorted(runs)  # each run exactly once
    for s in subjects:  # and in queue order per subject
        order = [rid for rid in applied if rid in set(r.id for r in stores[0].list_runs(s))]
        assert order == [r.id for r in stores[0].list_runs(s)]
    assert sql(postgres_url, "SELECT count(*) FROM subjects WHERE busy OR queue_seq IS NOT NULL") == [(0,)]


# -- wake-ups across processes ------------------------------------------------------------------------

_WAITER = """
import sys, time
from ai_memory_sdk.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
reads = 0
get_run = store.get_run
def counted(run_id):
    global reads
    reads += 1
    return get_run(run_id)
store.get_run = counted
store.listener.wait_up(10)
print("READY", flush=True)
for line in sys.stdin:
    print("WAITING", flush=True)
    store.wait_for_run(line.strip(), 30)
    print("WOKE", time.time(), reads, flush=True)
store.close()
"""


def test_wait_for_run_in_another_process_wakes_within_50ms_without_polling(open_store) -> None:
    store = open_store()
    child = subprocess.Popen(
        [sys.executable, "-c", _WAITER, store.db.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None
    delays, reads = [], [0]
    try:
        assert child.stdout.readline().strip() == "READY"
        for _ in range(5):
            run_id = _queue_runs(store, "s", 1)[0]
            child.stdin.write(run_id + "\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "WAITING"
            time.sleep(1.0)  # the child waits a whole second: polling would show as reads
            claim = store.queue.claim(30)
            assert claim is not None and claim.run_ids == (run_id,)
            store.queue.complete(claim, PassResult(learner="t"))
            done = time.time()
            woke = child.stdout.readline().split()
            delays.append(float(woke[1]) - done)
            reads.append(int(woke[2]))
    finally:
        child.stdin.close()
        child.wait(30)
    delays.sort()
    assert delays[len(delays) // 2] < 0.05, delays
    assert max(b - a for a, b in itertools.pairwise(reads)) <= 3, reads  # a read or two per wait, not a poll loop


def test_a_notification_of_a_rolled_back_transaction_is_never_delivered(open_store, postgres_url) -> None:
    store = open_store()
    assert store.listener.wait_up(10)
    time.sleep(0.1)
    seen = store.signals.generation
    with psycopg.connect(postgres_url) as conn:  # a transaction that ends runs, then rolls back
        conn.execute("SELECT pg_notify('ai_memory_ended', 'elsewhere:1:x run-1')")
        conn.rollback()
    time.sleep(0.3)
    assert store.signals.generation == seen
    sql(postgres_url, "SELECT pg_notify('ai_memory_ended', 'elsewhere:1:x run-1')")
    deadline = time.monotonic() + 2
    while store.signals.generation == seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.signals.generation != seen


def test_the_listener_reconnects_after_its_connection_is_killed(open_store, postgres_url, postgres_server) -> None:
    store, worker = open_store(), open_store()
    assert store.listener.wait_up(10)
    db = database_name(postgres_url)
    killed = postgres_server.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{db}' AND query LIKE 'LISTEN%'"
    )
    assert killed and all(r[0] for r in killed)
    run_id = _queue_runs(worker, "s", 1)[0]
    deadline = time.monotonic() + 10
    while not store.listener.up and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.listener.up
    done = threading.Timer(0.5, lambda: worker.queue.complete(worker.queue.claim(30), PassResult(learner="t")))  # type: ignore[arg-type]
    done.start()
    t0 = time.monotonic()
    assert store.wait_for_run(run_id, 10).status == "completed"
    assert time.monotonic() - t0 < 1.5


def test_a_forked_child_opens_its_own_connections(make_pg) -> None:
    mem = make_pg(background=False)
    mem.initialize_user_memory("parent")
    run = mem.add_messages("parent", [{"role": "user", "content": "I live in Oslo."}])
    pid = os.fork()
    if pid == 0:  # the child: uses the inherited Memory, then exits without running the parent's atexit hooks
        code = 1
        try:
            child_run = mem.add_messages("child", [{"role": "user", "content": "I live in Rome."}])
            code = 0 if mem.get_run(child_run).status == "queued" and mem.get_run(run) is not None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert mem.get_run(run).status == "queued"  # the parent's pool still works
    assert {r.subject_id for s in ("parent", "child") for r in mem.list_runs(s)} == {"parent", "child"}


# -- search --------------------------------------------------------------------------------------------

HOSTILE = [
    "'",
    "\\",
    "a & b | !c",
    "foo:*",
    "(((",
    "<-> <2>",
    "it''s",
    "😀 emoji only",
    "x" * 10_000,
    "'; DROP TABLE passages; --",
    "Ω ñ ü résumé",
    "and or not",
    "%s %(x)s {}",
    "_",
    "a:A b:B",
]


@pytest.fixture(params=["postgres", "pgvector"])
def any_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("postgres_url" if request.param == "postgres" else "pgvector_url"))


def test_no_query_text_ever_raises(any_url: str) -> None:
    with Memory(path=any_url, learner="offline", embedder="none") as mem:
        mem.wait_for_run(
            mem.add_messages(
                "u", [{"role": "user", "content": "it's a test: a & b, résumé, foo:bar"}], skip_vector_storage=False
            )
        )
        for query in HOSTILE:
            assert isinstance(mem.search_passages("u", query, tags=[]), list), query
        assert mem.search("u", "résumé")[0].startswith("it's")
        assert mem.search("u", "it's") != []


def test_bm25_ranks_rare_words_above_common_ones(make_pg) -> None:
    mem = make_pg()
    texts = [f"the weather is nice today number {i}" for i in range(30)] + ["the weather brought a blizzard"]
    mem.wait_for_run(mem.add_messages("u", [{"role": "user", "content": t} for t in texts], skip_vector_storage=False))
    assert mem.search("u", "weather blizzard", limit=1) == ["the weather brought a blizzard"]
    index = mem._engine.store.index  # type: ignore[attr-defined]
    assert isinstance(index, PostgresIndex) and not isinstance(index, PgvectorIndex)
    index.budget = 10  # the subject is over the budget: frequent words are dropped, the rare one kept
    assert mem.search("u", "weather blizzard", limit=1) == ["the weather brought a blizzard"]


def _fake_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic bag-of-words embedder (the scripted server's) behind the sentence-transformers spec."""
    from support.openai_server import embed_text

    from ai_memory_sdk.search import embedders

    class Words:
        name = "test:words"

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.array([embed_text(t, 64) for t in texts], dtype=np.float32)

    monkeypatch.setattr(embedders, "make_embedder", lambda *a, **k: Words())
    import ai_memory_sdk.engines.local as local

    monkeypatch.setattr(local, "make_embedder", lambda *a, **k: Words())


def test_pgvector_searches_vectors_in_the_database(pgvector_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_embedder(monkeypatch)
    with Memory(path=pgvector_url, learner="offline", embedder="none") as mem:
        store = mem._engine.store  # type: ignore[attr-defined]
        assert isinstance(store.index, PgvectorIndex)
        texts = [f"topic{i} alpha{i % 7} beta{i % 5}" for i in range(60)]
        messages = [{"role": "user" if i % 2 else "assistant", "content": t} for i, t in enumerate(texts)]
        mem.wait_for_run(mem.add_messages("u", messages, skip_vector_storage=False))
        assert sql(pgvector_url, "SELECT count(*) FROM passage_vectors WHERE embedding IS NOT NULL") == [(60,)]
        assert sql(pgvector_url, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'passage_vectors_hnsw_%%'") == [
            (1,)
        ]
        from support.openai_server import embed_text

        matrix = np.array([embed_text(t, 64) for t in texts], dtype=np.float32)
        query = "alpha3 beta4"
        q = np.array(embed_text(query, 64), dtype=np.float32)
        pk = store.subject_pk("u")
        exact = store.index.nearest(pk, "test:words", q, 10)
        by_pk = {row[0]: i for i, row in enumerate(store.index.changes(pk, None, IndexCursor()).passages)}
        cosine = matrix @ q / np.linalg.norm(matrix, axis=1)
        assert np.allclose([s for _, s in exact], np.sort(cosine)[::-1][:10], atol=1e-5)  # exact top 10
        assert all(abs(cosine[by_pk[p]] - s) < 1e-5 for p, s in exact)
        monkeypatch.setattr("ai_memory_sdk.store.postgres.index.EXACT_MAX", 10)  # through the HNSW index
        approx = store.index.nearest(pk, "test:words", q, 10, subject_size=60)
        assert approx[0][0] == exact[0][0]
        results = mem.search_passages("u", query, tags=["user"], limit=5)  # hybrid, filtered in the database
        assert results and all(r.role == "user" for r in results)
        assert mem._engine.vectors._entries and all(e.m == 0 for e in mem._engine.vectors._entries.values())  # type: ignore[attr-defined]


def test_without_pgvector_vectors_are_bytea_and_compared_in_process(postgres_url: str, monkeypatch) -> None:
    _fake_embedder(monkeypatch)
    with Memory(path=postgres_url, learner="offline", embedder="none") as mem:
        store = mem._engine.store  # type: ignore[attr-defined]
        assert not isinstance(store.index, PgvectorIndex)
        mem.wait_for_run(
            mem.add_messages(
                "u", [{"role": "user", "content": f"topic{i} alpha{i}"} for i in range(20)], skip_vector_storage=False
            )
        )
        assert sql(postgres_url, "SELECT count(*), min(length(vector)) FROM passage_vectors") == [(20, 64 * 4)]
        assert mem.search("u", "alpha7", limit=1) == ["topic7 alpha7"]
        assert any(e.m == 20 for e in mem._engine.vectors._entries.values())  # type: ignore[attr-defined]


# -- erasure ---------------------------------------------------------------------------------------------


def _files_holding(server: PostgresServer, needles: list[bytes]) -> list[str]:
    server.checkpoint()
    found = []
    for path in server.data_files():
        data = path.read_bytes()
        found += [f"{path.relative_to(server.data_dir)}: {n!r}" for n in needles if n in data]
    return found


def test_delete_user_leaves_no_text_in_the_data_files(postgres_server: PostgresServer, make_pg) -> None:
    mem = make_pg()
    victim, marker = "victim-7f3a@example.com", "zqvmarker8c1e"
    for subject in ("bystander-1", victim, "bystander-2"):
        batch = [
            {"role": "user", "content": f"my secret word is {marker if subject == victim else 'ordinary'} number {i}"}
            for i in range(40)
        ]
        mem.wait_for_run(mem.add_messages(subject, batch, skip_vector_storage=False))
    mem.set_memory("human", f"edited {marker}", subject_id=victim)
    needles = [victim.encode(), marker.encode()]
    assert _files_holding(postgres_server, needles)  # the scan finds what is there
    mem.delete_user(victim)
    assert _files_holding(postgres_server, needles) == []
    assert mem.search("bystander-1", "ordinary") != []


def test_without_secure_delete_deleted_rows_are_vacuumed_at_once(postgres_url: str, make_pg) -> None:
    mem = make_pg(secure_delete=False)
    mem.wait_for_run(mem.add_messages("gone", [{"role": "user", "content": "bye"}] * 5, skip_vector_storage=False))
    mem.delete_user("gone")
    assert sql(postgres_url, "SELECT count(*) FROM purge") == [(0,)]
    dead = sql(
        postgres_url,
        "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname IN ('messages', 'passages')",
    )
    assert dead == [(0,)]


def test_tenant_views_share_nothing(open_store) -> None:
    store = open_store()
    a, b = store.scoped("tenant-a"), store.scoped("tenant-b")
    run_a = a.enqueue("alice", [msg("I am A")], passages=["I am A"], default_blocks=[HUMAN])
    b.enqueue("alice", [msg("I am B")], passages=["I am B"], default_blocks=[HUMAN])
    assert a.get_run(run_a) is not None and b.get_run(run_a) is None
    assert [m.content for m in b.get_messages("alice")] == ["I am B"]
    assert a.subject_pk("alice") != b.subject_pk("alice")
    assert b.delete_subject("alice") and a.get_messages("alice")[0].content == "I am A"
