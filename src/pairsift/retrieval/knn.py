"""kNN labels: a new image takes the labels of its nearest labelled neighbours.

This is "retrieval instead of a classifier": adding a class means adding labelled images to the
index, with no training. Two votes are reported: the majority of the k labels, and a vote
weighted by similarity (negative similarities weigh nothing), which lets a few very close
neighbours outvote many distant ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def majority_vote(labels: Sequence[str], scores: Sequence[float]) -> tuple[str | None,
                                                                           dict[str, float]]:
    """The most frequent label (ties: larger summed similarity, then name) and vote shares."""
    if not labels:
        return None, {}
    counts = Counter(labels)
    sums = Counter()
    for label, score in zip(labels, scores, strict=True):
        sums[label] += score
    winner = min(counts, key=lambda lab: (-counts[lab], -sums[lab], lab))
    return winner, {lab: n / len(labels) for lab, n in counts.most_common()}


def weighted_vote(labels: Sequence[str], scores: Sequence[float]) -> tuple[str | None,
                                                                           dict[str, float]]:
    """The label with the largest summed similarity (ties: name) and normalised weights."""
    weights = Counter()
    for label, score in zip(labels, scores, strict=True):
        weights[label] += max(float(score), 0.0)
    total = sum(weights.values())
    if not labels or total == 0:
        return majority_vote(labels, scores)[0], {}
    winner = min(weights, key=lambda lab: (-weights[lab], lab))
    return winner, {lab: w / total for lab, w in weights.most_common()}
