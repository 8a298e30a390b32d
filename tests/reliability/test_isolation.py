"""Isolation: concurrent searches and block reads for many subjects never see another subject's data.

Every text of subject k carries the marker ``[S<k>]``. Reader threads search,
format and list for random subjects while a writer adds batches and a
"churn" thread deletes subjects and creates new ones (the newest subject is
deleted, so SQLite would hand its row id to the next one). Every result must
carry only its own subject's marker. With an ``openai:`` embedder the
semantic half of search (and its in-process vector cache) is covered too.
"""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any

import pytest
from support.openai_server import ScriptedOpenAI

_SUBJECT = re.compile(r"\[S(\d+)\]")


def _batch(k: int, i: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"I like apples and topic{i % 5} [S{k}] number {i}"},
        {"role": "assistant", "content": f"apples noted [S{k}] topic{i % 5}"},
    ]


def _foreign(texts: list[str], k: int) -> list[str]:
    return [t[:100] for t in texts if any(int(s) != k for s in _SUBJECT.findall(t))]


def _options(kind: str, server: ScriptedOpenAI) -> dict[str, Any]:
    if kind == "openai":
        return {"embedder": "openai:text-embedding-3-small", "llm_base_url": server.base_url, "llm_api_key": "sk-t"}
    return {"embedder": "none"}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("embedder", ["none", "openai"])
def test_concurrent_readers_never_see_another_subjects_data(make_memory, tmp_path, embedder):
    with ScriptedOpenAI(embedding_dim=48) as server:
        mem = make_memory(path=str(tmp_path / "iso.db"), **_options(embedder, server))
        subjects = 60
        runs = [
            mem.add_messages(f"subject-{k}", _batch(k, i), skip_vector_storage=False)
            for i in range(3)
            for k in range(subjects)
        ]
        for r in runs:
            mem.wait_for_run(r)
        stop = threading.Event()
        leaks: list[str] = []
        errors: list[str] = []
        ops = [0]
        churned = [subjects]  # subjects 0..59 stay; churn subjects are numbered from 60 up

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                # half the time the subject being churned: the one whose row id is about to be freed
                k = churned[0] if rng.random() < 0.5 else rng.randrange(subjects)
                sid = f"subject-{k}"
                try:
                    texts = mem.search(sid, f"apples topic{rng.randrange(5)}", tags=[], limit=50)
                    texts += [r.content for r in mem.search_passages(sid, "noted", tags=["assistant"])]
                    texts.append(mem.get_context(sid) if mem.get_memory_agent_id(sid) else "")
                    texts.append(mem.get_user_memory(sid, prompt_formatted=True) or "")
                    texts += [m.content for m in mem.get_messages(sid, limit=10)]
                    leaks.extend(_foreign(texts, k))
                    ops[0] += 1
                except Exception as exc:  # none expected
                    errors.append(f"{type(exc).__name__}: {exc}")

        def writer() -> None:
            rng = random.Random(99)
            i = 3
            while not stop.is_set():
                k = rng.randrange(subjects)
                try:
                    mem.add_messages(f"subject-{k}", _batch(k, i), skip_vector_storage=False)
                except Exception as exc:
                    errors.append(f"writer {type(exc).__name__}: {exc}")
                i += 1
                time.sleep(0.005)

        def churn() -> None:
            # Delete the newest subject and create the next: without care its row id would be reused.
            while not stop.is_set():
                k = churned[0]
                try:
                    mem.wait_for_run(mem.add_messages(f"subject-{k}", _batch(k, 0), skip_vector_storage=False))
                    mem.search(f"subject-{k}", "apples", tags=[])  # warm the vector cache for this row id
                    mem.delete_user(f"subject-{k}")
                except Exception as exc:
                    errors.append(f"churn {type(exc).__name__}: {exc}")
                churned[0] = k + 1

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
        threads += [threading.Thread(target=writer), threading.Thread(target=churn)]
        for t in threads:
            t.start()
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert leaks == []
    assert ops[0] > 100 and churned[0] > subjects + 5


def _search_all(mem: Any, sid: str, queries: list[str]) -> list[list[tuple[str, float]]]:
    return [[(r.content, round(r.score, 9)) for r in mem.search_passages(sid, q, tags=[], limit=10)] for q in queries]


@pytest.mark.parametrize("how", ["reset", "delete_and_recreate", "delete_message"])
def test_a_long_lived_process_searches_like_a_fresh_one_after_deletes(make_memory, tmp_path, how):
    """Row ids freed by a delete must not make an old process's vector cache serve deleted vectors."""
    with ScriptedOpenAI(embedding_dim=48) as server:
        opts = _options("openai", server)
        path = str(tmp_path / "cache.db")
        mem = make_memory(path=path, **opts)
        old = ["apple banana kiwi", "cherry grape plum", "melon lemon lime"]
        new = ["cherry grape plum", "melon lemon lime", "apple banana kiwi"]
        mem.wait_for_run(
            mem.add_messages("u", [{"role": "user", "content": t} for t in old], skip_vector_storage=False)
        )
        queries = ["apple grape", "lemon", "cherry kiwi lime"]
        _search_all(mem, "u", queries)  # the long-lived process caches u's vectors now
        if how == "reset":
            mem.initialize_user_memory("u", reset=True)
        elif how == "delete_and_recreate":
            mem.delete_user("u")
        else:
            for m in mem.get_messages("u"):
                mem.delete_message(m.id)
        mem.wait_for_run(
            mem.add_messages("u", [{"role": "user", "content": t} for t in new], skip_vector_storage=False)
        )
        fresh = make_memory(path=path, background=False, **opts)
        assert _search_all(mem, "u", queries) == _search_all(fresh, "u", queries)


def test_row_ids_of_deleted_subjects_and_passages_are_never_reused(make_memory, tmp_path):
    """The cause of the stale cache above, and of a search racing ``delete_user`` reading the next subject."""
    import sqlite3

    path = str(tmp_path / "ids.db")
    mem = make_memory(path=path)
    conn = sqlite3.connect(path)
    seen_subjects: set[int] = set()
    seen_passages: set[int] = set()
    for i in range(5):
        mem.wait_for_run(
            mem.add_messages("newest", [{"role": "user", "content": f"hello {i}"}] * 3, skip_vector_storage=False)
        )
        subject_pk = conn.execute("SELECT pk FROM subjects WHERE subject_id='newest'").fetchone()[0]
        passages = {r[0] for r in conn.execute("SELECT pk FROM passages WHERE subject_pk=?", (subject_pk,))}
        assert subject_pk not in seen_subjects and not passages & seen_passages
        seen_subjects.add(subject_pk)
        seen_passages |= passages
        if i % 2:
            mem.delete_user("newest")
        else:
            for m in mem.get_messages("newest"):
                mem.delete_message(m.id)
            mem.delete_user("newest")
    conn.close()
