"""What every benchmark script shares: the repository's paths, the test helpers' import name, percentiles.

A script run as ``.venv/bin/python benchmarks/<script>.py`` has ``benchmarks/`` on
``sys.path``, so ``import _common`` comes first; it puts ``tests/`` on ``sys.path``
once, and the scripted servers and harnesses are then ``support.*`` and
``reliability.*``: the very modules the tests import (one module, one ``Reply``
class), wherever the script is started from.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.data import LOCOMO_ATTRIBUTION, LOCOMO_DEV  # noqa: E402

__all__ = [
    "LOCOMO_ATTRIBUTION",
    "LOCOMO_DEV",
    "ROOT",
    "add_smoke_flag",
    "machine",
    "machine_line",
    "p50_p99",
    "percentile",
]

_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1), interpolated between the closest ranks (q=0.5 is the median); nan if empty."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def p50_p99(seconds: Sequence[float], unit: str = "ms") -> str:
    """``p50 1.23 ms  p99 4.56 ms`` of durations given in seconds."""
    scale = _SCALE[unit]
    return f"p50 {percentile(seconds, 0.5) * scale:6.2f} {unit}  p99 {percentile(seconds, 0.99) * scale:6.2f} {unit}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from ai_memory_sdk import __version__

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        "ai_memory_sdk": __version__,
        "load average (1 min)": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_line() -> str:
    """The machine in one line, for a report's header."""
    m = machine()
    return (
        f"{m['cores']} CPU(s) ({m['cpu']}), Python {m['python']}, SQLite {m['sqlite']}, "
        f"load average {m['load average (1 min)']}"
    )


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    """``--smoke``: the same code path at tiny sizes, in seconds (what tests/test_benchmarks.py runs)."""
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, a few seconds: checks that the script runs, not figures"
    )
