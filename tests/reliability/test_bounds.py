"""Resource bounds: a 10 MB batch, a 100k-message batch, a block at its limit, 1,000 subjects.

Each scenario runs in a fresh child process (``tests/support/procs/
reliability_bounds.py``) so its peak RSS is its own. The bounds asserted here
are generous ceilings (about 3x what this 2-core machine measured, see
``docs/dev/reliability.md``); what must hold exactly: nothing is truncated,
and a limit that exists is an explicit error.
"""

from __future__ import annotations

import json

import pytest
from support.child import Child


def _scenario(tmp_path, **cfg) -> dict:
    child = Child("reliability_bounds.py", {"path": str(tmp_path / "bounds.db"), **cfg})
    line = child.wait_line("RESULT ", 300)
    child.kill()
    assert line is not None, child.stderr_tail()
    return json.loads(line[len("RESULT ") :])


def _show(capsys, result: dict) -> None:
    with capsys.disabled():
        print(f"\n[reliability] bounds: {json.dumps(result)}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_10_mb_batch_is_stored_and_learned_whole_in_bounded_memory(tmp_path, capsys):
    r = _scenario(tmp_path, scenario="big_batch", n=10, mb=10)  # ten 1 MB messages: each split into parts
    _show(capsys, r)
    assert r["stored_chars"] == 10_000_000 and r["stored_messages"] == 10, "nothing truncated"
    assert r["run"]["status"] == "completed" and r["search_results"] == 10
    assert r["peak_rss_mb"] - r["rss_before_mb"] < 300  # measured: about 50 MB over the baseline
    assert r["total_s"] < 90


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_100k_message_batch_is_stored_and_learned_in_bounded_memory(tmp_path, capsys):
    r = _scenario(tmp_path, scenario="many_messages", n=100_000)
    _show(capsys, r)
    assert r["stored_messages"] == 100_000 and r["stored_chars"] == 5_000_000
    assert r["run"]["status"] == "completed"
    assert r["peak_rss_mb"] - r["rss_before_mb"] < 700  # measured: about 200 MB (1.2 KB per validated message)
    assert r["total_s"] < 150


def test_a_block_at_its_limit_refuses_growth_explicitly(tmp_path, capsys):
    r = _scenario(tmp_path, scenario="block_at_limit")
    _show(capsys, r)
    assert r["over_limit"].startswith("ValueError") and "over the block's limit of 1000000" in r["over_limit"]
    assert r["formatted_chars"] > 1_000_000
    # the learner wants to add a fact to the full block: the fact is refused (counted, and named in the
    # summary), the run completes, the block keeps every fact and is not truncated
    assert r["learn_outcome"] == "completed" and r["value_unchanged"]
    assert r["total_s"] < 30 and r["peak_rss_mb"] - r["rss_before_mb"] < 300


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_thousand_subjects(tmp_path, capsys):
    r = _scenario(tmp_path, scenario="many_subjects", n=1000)
    _show(capsys, r)
    assert r["subjects_learned"] == 1000 and r["search_hits"] == 100
    assert r["total_s"] < 60 and r["peak_rss_mb"] - r["rss_before_mb"] < 200
    assert r["get_user_memory_ms_each"] < 5 and r["search_ms_each"] < 20
