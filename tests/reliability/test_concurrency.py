"""Concurrency: 4 writer processes into one store, with reader processes searching and formatting meanwhile.

Every writer also learns (``background=True``), so four processes compete for
one queue. Required: 0 batches lost, 0 applied twice, 0 errors (no
"database is locked") reaching a caller, passes of one subject never
overlapping and applied in run order, readers never seeing another subject's
data. ``benchmarks/soak.py`` runs the same with 1,000 batches per writer.
"""

from __future__ import annotations

import pytest

from ._harness import concurrency_campaign

BATCHES_PER_WRITER = 250  # benchmarks/soak.py: 1,000


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_writer_processes_and_readers_lose_nothing(tmp_path, capsys):
    report = concurrency_campaign(
        str(tmp_path / "shared.db"), writers=4, batches=BATCHES_PER_WRITER, subjects=8, readers=2
    )
    with capsys.disabled():
        print("\n[reliability] concurrency:", report.figures())
    assert report.problems == []
    assert report.locked_errors == 0
    assert report.lost == 0 and report.duplicated == 0
    assert report.runs == report.completed == 4 * BATCHES_PER_WRITER
    assert all(n > 0 for n in report.reader_ops.values()), "the readers never ran during the writes"
