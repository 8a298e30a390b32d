"""Every benchmark runs exactly as its docstring says, from the repository root, and prints its figures.

Each script in ``benchmarks/`` is started as a subprocess with the command its
docstring documents (``.venv/bin/python benchmarks/<script>.py``, optional
arguments left out) plus ``--smoke`` (the same code path at tiny sizes), in a
clean environment (no ``PYTHONPATH``: the script finds its helpers itself). It
must exit 0, print no traceback, and print the line that carries its figures.
Benchmarks that start the Letta or llama.cpp server carry those markers.
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
    "wrap_overhead.py": r"\nsync\s+[\d.]+/[\d.]+\s+[\d.]+/[\d.]+\s+-?[\d.]+\s+-?[\d.]+/-?[\d.]+\s+-?[\d.]+/-?[\d.]+\s+\d+ ",
}
SERVERS = {"bench_engines.py": "letta", "local_model.py": "llama", "scale_out.py": "postgres"}


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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [*command, "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    assert re.search(FIGURES[_name(script)], proc.stdout), output
