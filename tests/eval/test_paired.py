"""Paired bootstrap intervals of one evaluation point minus another, on hand-made per-question records."""

from __future__ import annotations

import pytest

from researchrl.eval.paired import compare, interval, per_question


def records(values: dict[str, float]) -> list[dict]:
    return [{"question_id": q, "f1": v, "reward": v} for q, v in values.items()]


def test_a_consistent_gain_has_an_interval_above_zero() -> None:
    diff = interval([0.5, 0.25, 1.0, 0.5, 0.75, 0.25, 0.5, 1.0])
    assert diff["mean"] == pytest.approx(0.59375, abs=1e-4)
    assert 0 < diff["low"] < diff["mean"] < diff["high"] <= 1.0 and diff["n"] == 8 and diff["level"] == 0.95


def test_gains_and_losses_that_cancel_give_an_interval_across_zero() -> None:
    diff = interval([1.0, -1.0] * 20)
    assert diff["mean"] == 0.0 and diff["low"] < 0 < diff["high"]


def test_the_interval_narrows_with_more_questions_and_is_reproducible() -> None:
    few, many = interval([1.0, 0.0] * 5), interval([1.0, 0.0] * 100)
    assert many["high"] - many["low"] < (few["high"] - few["low"]) / 2
    assert interval([1.0, 0.0] * 5) == few  # seeded resampling


def test_compare_pairs_by_question_and_ignores_questions_one_side_lacks() -> None:
    later = records({"a": 1.0, "b": 0.5, "c": 0.0, "only_later": 1.0})
    earlier = records({"c": 0.0, "b": 0.0, "a": 0.0, "only_earlier": 1.0})
    diff = compare([later], [earlier])
    assert diff["f1"]["n"] == 3 and diff["f1"]["mean"] == 0.5 and diff["reward"]["mean"] == 0.5


def test_seeds_are_averaged_per_question_before_resampling() -> None:
    seed0 = (records({"a": 1.0, "b": 0.0}), records({"a": 0.0, "b": 0.0}))
    seed1 = (records({"a": 0.0, "b": 1.0}), records({"a": 0.0, "b": 0.0}))
    diff = compare([seed0[0], seed1[0]], [seed0[1], seed1[1]])
    assert diff["f1"]["n"] == 2 and diff["f1"]["mean"] == 0.5 and diff["f1"]["low"] == diff["f1"]["high"] == 0.5


def test_unscored_records_and_empty_sets_are_refused_plainly() -> None:
    assert per_question([{"question_id": "a", "f1": None}], "f1") == {}
    with pytest.raises(ValueError, match="no paired questions"):
        compare([records({"a": 1.0})], [records({"b": 1.0})])
    with pytest.raises(ValueError, match="one earlier record set"):
        compare([records({"a": 1.0})], [])
