"""The long-horizon benchmark (benchmarks/long_horizon.py): its checks pass on a short run and can fail."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import long_horizon as lh


def test_a_short_run_of_both_learners_passes_its_checks_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "lh.png"
    assert lh.main(["--batches", "40", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    for learner in ("offline", "llm"):
        found = re.search(rf"^{learner}: (\d+)/(\d+) standing facts.*; superseded values left: 0$", out, re.M)
        assert found and found.group(1) == found.group(2) and int(found.group(1)) >= 18, out
    assert re.search(
        r"^runs: learn completed 40, learn failed 0, consolidate completed \d+, consolidate failed 0", out, re.M
    )
    assert re.search(r"rest at batch 40 / batch 1: [\d.]+ \(check <= 1.1\)", out), out
    assert "long_horizon: all checks passed (offline, llm; 40 batches)" in out
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_human_block_too_small_for_the_facts_fails_the_check_without_failing_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--learner", "offline", "--batches", "30", "--human-limit", "250", "--png", str(tmp_path / "x.png")]
    assert lh.main(args) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAILED: offline: \d+ standing fact\(s\) missing", out, re.M), out
    assert "learn failed 0" in out and "version" not in out.split("FAILED")[1]  # refused, never over the limit


def _life() -> lh.Life:
    life = lh.Life()
    when = datetime(2020, 1, 6, tzinfo=timezone.utc)
    for batch in range(300):
        life.say(batch, when + timedelta(days=3 * batch))
    return life


def test_the_synthetic_life_knows_what_stands_and_what_was_superseded() -> None:
    life = _life()
    assert life.changes > 10 and life.statements > 100
    assert life.current["Name"] == "Robin Vale" and life.current["Age"] == "31"  # 2022-06-27: after March 3
    for key, old in life.superseded.items():
        assert life.current[key] not in old, key
    assert set(life.polarity.values()) == {"Likes", "Dislikes"}


def test_check_facts_finds_missing_and_superseded_values() -> None:
    life = _life()
    good = "\n".join(
        [f"{k}: {v}" for k, v in life.current.items()]
        + [f"{key}: " + "; ".join(i for i, k in life.polarity.items() if k == key) for key in lh.LIST_KEYS]
    )
    assert lh.check_facts(life, good).missing == [] and lh.check_facts(life, good).stale == []
    key, old = next((k, sorted(v)[0]) for k, v in life.superseded.items() if v)
    item, polarity = next(iter(life.polarity.items()))
    other = "Dislikes" if polarity == "Likes" else "Likes"
    bad = good.replace(f"{key}: {life.current[key]}", f"{key}: {old}") + f"\n{other}: {item}"
    check = lh.check_facts(life, bad)
    assert check.found == check.standing - 1 and check.missing[0].startswith(f"{key}: {life.current[key]}")
    assert check.stale == [f"{key}: {old}", f"{other}: {item}"]


def test_the_careless_model_merges_by_newest_date_on_consolidation() -> None:
    human = "\n".join(
        [
            "Location: Porto (as of 2021-01-02)",
            "Likes: olives (as of 2021-01-01)",
            "Location: Lisbon (as of 2020-05-01)",
            "Location: Porto (as of 2021-01-02)",
            "Dislikes: olives (as of 2021-03-01)",
            "Likes: karaoke (as of 2020-01-01); opera (as of 2020-02-02)",
        ]
    )
    assert lh._merge_human(human) == (
        "Location: Porto (as of 2021-01-02)\nLikes: karaoke (as of 2020-01-01); opera (as of 2020-02-02)\n"
        "Dislikes: olives (as of 2021-03-01)"
    )
    summary = "\n".join(
        f"2020-01-{d:02d}: Ana and Ben talked (6 messages): hello there number {d}" for d in range(1, 20)
    )
    folded = lh._fold_summary(summary, 500)
    assert len(folded) <= 500 and folded.endswith("number 19")
    assert re.match(r"2020-01-01 to 2020-01-\d\d: \d+ earlier conversations\.\n", folded)


def test_the_request_size_check_fails_when_the_fixed_part_grows() -> None:
    def outcome(rests: list[int]) -> lh.Outcome:
        passes = [lh.Pass(i + 1, 1000 + r, 500, 500, 1) for i, r in enumerate(rests)]
        return lh.Outcome(
            "llm",
            len(rests),
            0.0,
            {},
            {},
            {"human": 10_000, "summary": 1_000},
            [],
            [],
            {},
            "",
            "",
            [],
            passes,
            [],
            0,
            None,
        )

    assert lh._request_sizes(outcome([3000, 3010, 3020])) == []
    assert "grew with age" in lh._request_sizes(outcome([3000, 3500, 4000]))[0]
