"""Scores for answers that are label sets: exact match, label precision / recall / F1, per category.

A telecom answer is a ``|``-joined set of labels (``业务简介_111|9.9|开通方式_98``):
order does not matter and a partly right answer earns partial credit, so
precision, recall and F1 are computed per answer over label sets and averaged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATOR = "|"


def normalize(text: str | None) -> str:
    """Whitespace-insensitive form of an answer: strip, collapse inner runs of spaces."""
    return " ".join(str(text or "").split())


def labels(text: str | None) -> set[str]:
    return {part for part in (normalize(p) for p in normalize(text).split(SEPARATOR)) if part}


def category(reference: str) -> str:
    """The category of a telecom answer: its first label up to the last ``_`` (``取消方式_68`` -> ``取消方式``)."""
    parts = normalize(reference).split(SEPARATOR)
    first = parts[0].strip() if parts else ""
    head, sep, _ = first.rpartition("_")
    return head if sep else first or "(none)"


@dataclass(frozen=True)
class Score:
    exact: bool
    precision: float
    recall: float
    f1: float


def score(prediction: str | None, reference: str) -> Score:
    predicted, expected = labels(prediction), labels(reference)
    exact = predicted == expected
    if not predicted or not expected:
        # An empty answer earns nothing; an empty reference is matched only by an empty answer.
        value = 1.0 if predicted == expected else 0.0
        return Score(exact, value, value, value)
    hits = len(predicted & expected)
    precision, recall = hits / len(predicted), hits / len(expected)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return Score(exact, precision, recall, f1)


def summarize(pairs: Iterable[tuple[str | None, str, str | None]]) -> dict:
    """Averages over (prediction, reference, category or None) triples, and accuracy per category."""
    totals = {"exact_match": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    per_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    count = 0
    for prediction, reference, cat in pairs:
        s = score(prediction, reference)
        count += 1
        totals["exact_match"] += s.exact
        totals["precision"] += s.precision
        totals["recall"] += s.recall
        totals["f1"] += s.f1
        bucket = per_category[cat or category(reference)]
        bucket[0] += s.exact
        bucket[1] += 1
    result = {k: round(v / count, 4) if count else 0.0 for k, v in totals.items()}
    result["samples"] = count
    result["per_category"] = {
        name: {"accuracy": round(hit / n, 4), "samples": n} for name, (hit, n) in sorted(per_category.items())
    }
    return result
