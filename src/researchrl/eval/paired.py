"""Paired bootstrap intervals: is one evaluation point better than another on the same held-out questions?

Both points answered the same questions, so the difference is taken question by question and the questions are
resampled with replacement (the paired bootstrap, percentile interval). Several seeds of a recipe are paired the
same way: each question's difference is first averaged over the seeds, so a question counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

RESAMPLES = 10_000
METRICS = ("f1", "reward")


def interval(differences: list[float], level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean of paired differences and its percentile bootstrap interval over the pairs."""
    if not differences:
        raise ValueError("no paired questions to compare")
    values = np.asarray(differences, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": round(float(values.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "n": len(values), "level": level}


def per_question(records: Iterable[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """One metric of each evaluated question, by question id, from trajectory records (`records.trajectory_record`)."""
    return {str(r["question_id"]): float(r[metric]) for r in records if r.get(metric) is not None}


def averaged(per_seed: list[dict[str, float]]) -> list[float]:
    """Each question's value averaged over the seeds, for the questions every seed has (in id order)."""
    shared = sorted(set.intersection(*(set(values) for values in per_seed)))
    return [sum(values[q] for values in per_seed) / len(per_seed) for q in shared]


def compare(later: list[list[Mapping[str, Any]]], earlier: list[list[Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """`later` minus `earlier` per metric, each a list of record sets (one per seed), paired on the questions every
    set answered; returns {metric: interval}."""
    if len(later) != len(earlier) or not later:
        raise ValueError("compare needs one earlier record set per later one")
    result = {}
    for metric in METRICS:
        pairs = [(per_question(a, metric), per_question(b, metric)) for a, b in zip(later, earlier)]
        result[metric] = interval(averaged([{q: a[q] - b[q] for q in a.keys() & b.keys()} for a, b in pairs]))
    return result
