"""Every benchmark runs exactly as its docstring says, from the repository root, and prints its figures.

Each script in ``benchmarks/`` is started as a subprocess with the command its
docstring documents (``.venv/bin/python benchmarks/<script>.py``, optional
arguments left out) plus ``--smoke`` (the same code path at tiny sizes), in a
clean environment (no ``PYTHONPATH``: the script finds its helpers itself). It
must exit 0, print no traceback, and print the line that carries its figures.
Benchmarks that start the Letta or llama.cpp server carry those markers.
``vs_peers.py`` runs here for this package alone; its peers (mem0, Letta's
original SDK) have their own tests, skipped with the command that builds
their venvs when those are missing (``.ci/setup`` does not build mem0's).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from support import letta_server, llama_server, postgres_server

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py") if not p.name.startswith("_"))

# The line each benchmark prints once it has measured something (its smoke sizes are in the script).
FIGURES = {
    "bench_engines.py": r"add_messages \(10 msgs\)\s+[\d.]+\s+[\d.]+\s+[\d.]+",
    "bench_local.py": r"get_user_memory\(prompt_formatted=True\)\s+\d+\s+[\d.]+us",
    "llm_pass_cost.py": r"LLM calls per pass \(2 passes\):\s+\[\d+, \d+\]",
    "local_model.py": r"== 1 passes of the memory agent against SmolLM2",
    "locomo_qa.py": r"overall\s+[\d.]+% \(\d+/8\)\s+[\d.]+% \(\d+/8\)",
    "locomo_retrieval.py": r"hybrid \(absolute 1\.5:1\)\s+[\d.]+/[\d.]+/[\d.]+",
    "long_horizon.py": r"long_horizon: all checks passed \(offline, llm; 30 batches\)",
    "research/score_fusion.py": r"LIBRARY: hybrid\.fuse.*\s[\d.]+/[\d.]+/[\d.]+",
    "research/locomo_recipes.py": r"CHOSEN: .* [\d.]+/[\d.]+/[\d.]+ [\d.]+/[\d.]+/[\d.]+ [\d.]+/[\d.]+/[\d.]+",
    "scale_out.py": r"scale_out: efficiency .*; add_messages/raw p50 [\d.]+; wake p50 [\d.]+ ms",
    "search_latency.py": r"whole search, tags=\[\], precomputed query\s+p50\s+[\d.]+ ms",
    "server_load.py": r"server_load: add_messages p50 [\d.]+ ms \(1 client\), \d+ adds/s sustained with \d+ clients, 0 errors",
    "soak.py": r"soak: all OK",
    "trace_size.py": r"tracing: [\d,]+ B of trace JSON per batch learned",
    "vs_peers.py": r"\| `add` returns, p50 / p99 ms \| [\d.]+ / [\d.]+ \|",
    "wrap_overhead.py": r"\nsync\s+[\d.]+/[\d.]+\s+[\d.]+/[\d.]+\s+-?[\d.]+\s+-?[\d.]+/-?[\d.]+\s+-?[\d.]+/-?[\d.]+\s+\d+ ",
}
SERVERS = {"bench_engines.py": "letta", "local_model.py": "llama", "scale_out.py": "postgres"}
EXTRA_ARGS = {"vs_peers.py": ["--systems", "ours"]}  # the peers: test_vs_peers_with_a_peer


def _name(script: Path) -> str:
    return script.relative_to(ROOT / "benchmarks").as_posix()


def documented_command(script: Path) -> list[str]:
    """The first ``.venv/bin/python benchmarks/...`` line of the script's docstring, without ``[optional]`` parts."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    rel = script.relative_to(ROOT).as_posix()
    for line in doc.splitlines():
        words = line.split("#", 1)[0]
        if words.strip().startswith(f".venv/bin/python {rel}"):
            return shlex.split(re.sub(r"\[[^\]]*\]", " ", words))
    raise AssertionError(f"{rel}: its docstring documents no command '.venv/bin/python {rel} ...'")


def _needs_server(kind: str) -> None:
    if kind == "postgres":
        postgres_server.require("system")
        return
    installed = {"letta": letta_server.is_installed, "llama": llama_server.is_installed}[kind]()
    if kind == "letta":
        installed = installed and (letta_server.original_sdk_venv() / "bin" / "python").exists()
    if not installed:
        setup = {"letta": letta_server.SETUP_COMMAND, "llama": llama_server.SETUP_COMMAND}[kind]
        msg = f"the {kind} server is not installed; run: {setup}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def test_every_benchmark_is_covered() -> None:
    assert {_name(p) for p in SCRIPTS} == set(FIGURES)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "script",
    [
        pytest.param(p, id=_name(p), marks=[getattr(pytest.mark, SERVERS[_name(p)])] if _name(p) in SERVERS else [])
        for p in SCRIPTS
    ],
)
def test_benchmark_runs_as_documented(script: Path) -> None:
    if _name(script) in SERVERS:
        _needs_server(SERVERS[_name(script)])
    command = documented_command(script)
    assert command[:2] == [".venv/bin/python", script.relative_to(ROOT).as_posix()], command
    proc = _smoke([*command, *EXTRA_ARGS.get(_name(script), [])])
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    assert re.search(FIGURES[_name(script)], proc.stdout), output


def _smoke(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [*command, "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540, check=False
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("peer", "column", "settings"),
    [
        pytest.param("mem0", "mem0", r"mem0ai=2\.2\.", id="mem0"),
        pytest.param(
            "postgres", "this package, PostgreSQL", r"PostgreSQL \d+", id="postgres", marks=[pytest.mark.postgres]
        ),
        pytest.param(
            "letta", r"ai-memory-sdk 0\.2\.0 \+ Letta", r"ai-memory-sdk=0\.2\.0", id="letta", marks=[pytest.mark.letta]
        ),
    ],
)
def test_vs_peers_with_a_peer(peer: str, column: str, settings: str) -> None:
    """A peer's part of vs_peers.py (and this package on PostgreSQL): its figures in the table beside ours."""
    if peer in ("letta", "postgres"):
        _needs_server(peer)
    command = documented_command(ROOT / "benchmarks" / "vs_peers.py")
    check = subprocess.run([*command, "--check", "--systems", peer], cwd=ROOT, capture_output=True, text=True)
    if check.returncode == 1:  # its venv is not built: .ci/setup leaves mem0's to `vs_peers.py --setup`
        pytest.skip(check.stdout.strip())
    assert check.returncode == 0 and check.stdout.strip() == f"{peer}: ready", check.stdout + check.stderr
    proc = _smoke([*command, "--systems", f"ours,{peer}"])
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    number, ratio = r"[\d.]+ / [\d.]+", r"\([\d.e+]+x\)"
    expected = [
        rf"^{peer}: .*{settings}",  # its versions and settings, printed with the figures
        rf"^\| figure \| this package \| {column} \|$",
        rf"^\| `add` returns, p50 / p99 ms \| {number} \| {number} {ratio} \|$",
        rf"^\| search p50 / p99 ms, 80 messages stored \| {number} \| {number} {ratio} \|$",
        r"^\| LoCoMo dev recall@10 \(\d+ questions\) \| [\d.]+ \| [^|]*\d\.\d{3}[^|]* \|$",
        # this package erased every text of the deleted user; the peer's count is a figure, not a check
        r"^\| after delete-user: the user's messages readable, of \d+ \(in live rows\) \| 0 \(0\) \| \d+ \(\d+\) \|$",
    ]
    for pattern in expected:
        assert re.search(pattern, proc.stdout, re.M), f"{pattern}\n{output}"
