"""What the CLI shows while it works: progress bars and a waiting line (tqdm), and plain-text tables.

On a terminal the bars and the waiting line update in place; when stderr is
not a terminal (a pipe, a CI log) there are no bars, and the waiting line is
printed once, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import Settings
from ..memory import Memory

_TICK = 1  # seconds between updates of the waiting line


def live() -> bool:
    """Whether stderr is a terminal: bars and updating lines only then."""
    return sys.stderr.isatty()


def progress(total: int, desc: str, unit: str) -> tqdm[NoReturn]:
    """A progress bar on stderr, silent when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not live(), leave=False)


def learner_text(info: dict[str, str], settings: Settings) -> str:
    """Who learns, and where it is called (``info``: the engine's): what the user waits on when learning hangs."""
    learner = info.get("learner", info["engine"])
    if learner == "llm":
        return f"llm {settings.model} at {settings.llm_base_url or 'the OpenAI API'}"
    return f"the {learner} learner"


def wait_for_runs(mem: Memory, runs: Sequence[str], what: str, timeout: float) -> None:
    """Wait until each run is learned, saying what is awaited; raises what ``wait_for_run`` raises.

    ``timeout`` bounds the wait for each run (``TimeoutError``); a failed run
    raises ``RunFailedError``, whose message carries the learner's error.
    """
    desc = f"{what} with {learner_text(mem._engine.info(), mem.settings)}"
    if not live():
        print(f"{desc}; waiting" + (f" (run {runs[0]})" if len(runs) == 1 else ""), file=sys.stderr, flush=True)
        for run in runs:
            _wait(mem, run, timeout, lambda state: None)
        return
    # What moves (elapsed time, status) comes before the long run id, which a narrow terminal cuts off.
    fmt = (
        "{desc}; waiting {elapsed}{postfix}"
        if len(runs) == 1
        else "{desc}: {n_fmt}/{total_fmt} batches {elapsed}{postfix}"
    )
    with tqdm(total=len(runs), desc=desc, bar_format=fmt, file=sys.stderr, leave=False) as bar, logging_redirect_tqdm():
        for run in runs:
            _wait(mem, run, timeout, bar.set_postfix_str)
            bar.update(1)


def _wait(mem: Memory, run: str, timeout: float, tick: Callable[[str], object]) -> None:
    """Wait for one run, calling ``tick`` with its state (status and id) at the start and every second."""
    deadline = time.monotonic() + timeout
    tick(f"{mem.get_run(run).status} (run {run})")
    while True:
        try:
            mem.wait_for_run(run, timeout=_TICK)
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run} was not learned within {timeout:g} s (--timeout)") from None
            tick(f"{mem.get_run(run).status} (run {run})")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, columns padded to their widest cell; the last column is left ragged."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)
