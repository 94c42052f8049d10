"""Evaluation metrics against published test vectors and hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairsift.evaluation.fairness import (
    desired_distribution,
    max_skew,
    min_skew,
    ndkl,
    retrieval_fairness,
)
from pairsift.evaluation.fidelity import mean_pair_cosine, prompt_cosine, strip_identifier
from pairsift.evaluation.retrieval import retrieval_metrics
from pairsift.evaluation.zeroshot import (
    class_embeddings,
    mean_per_class_recall,
    read_templates,
    topk_accuracy,
    zeroshot_metrics,
)

HALF = np.array([0.5, 0.5])


def unit(*rows):
    x = np.asarray(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# NDKL, MaxSkew@k and MinSkew@k for desired shares [0.5, 0.5] (computed with numpy from the
# formulas of Geyik et al. 2019).
def test_ndkl_test_vectors():
    assert ndkl(np.array([0, 0, 1, 1]), HALF) == pytest.approx(0.452369, abs=1e-6)
    assert ndkl(np.array([0, 1, 0, 1]), HALF) == pytest.approx(0.281645, abs=1e-6)


def test_skew_test_vectors():
    labels = np.array([0, 0, 1, 1])
    assert max_skew(labels[:2], HALF) == pytest.approx(math.log(2))
    assert min_skew(labels[:2], HALF) == pytest.approx(0.0)  # absent label counted as 1/k
    assert min_skew(labels[:2], HALF, "epsilon") < -20  # the other policy: near -infinity
    assert max_skew(labels[:3], HALF) == pytest.approx(0.287682, abs=1e-6)
    assert min_skew(labels[:3], HALF) == pytest.approx(-0.405465, abs=1e-6)


def test_desired_distributions():
    labels = np.array([0, 0, 0, 2])
    assert desired_distribution(labels, 3, "uniform") == pytest.approx([0.5, 0, 0.5])
    assert desired_distribution(labels, 3, "dataset") == pytest.approx([0.75, 0, 0.25])
    with pytest.raises(ValueError, match="desired share is 0"):
        desired_distribution(labels, 3, [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="summing to 1"):
        desired_distribution(labels, 3, [0.5, 0.6, 0.0])


def test_retrieval_fairness_ranks_images_per_prompt_and_averages():
    # four images on a line; prompt 0 ranks them 0,1,2,3 and prompt 1 ranks them 3,2,1,0
    images = unit([1, 0.1], [1, 0.4], [0.4, 1], [0.1, 1])
    prompts = unit([1, 0], [0, 1])
    result = retrieval_fairness(images, np.array([0, 0, 1, 1]), prompts, k=2)
    # both rankings are [a, a, b, b]: MaxSkew@2 = ln 2, NDKL = 0.452369 for each prompt
    assert result.max_skew == pytest.approx(math.log(2))
    assert result.ndkl == pytest.approx(0.452369, abs=1e-6)
    assert result.per_prompt.shape == (2, 3)
    with pytest.raises(ValueError, match="k must be"):
        retrieval_fairness(images, np.array([0, 0, 1, 1]), prompts, k=5)


def test_recall_at_k_with_several_captions_per_image():
    images = np.eye(3)
    # captions 0,1 describe image 0; 2 image 1; 3,4 image 2 (rankings worked out by hand)
    texts = unit([1, 0, 0], [0.2, 1, 0.5], [0, 1, 0], [1, 0, 0.3], [0, 0.9, 0.4])
    m = retrieval_metrics(images, texts, [0, 0, 1, 2, 2], ks=(1, 2))
    # caption -> image: captions 0 and 2 find their image first; 3 and 4 second; 1 third
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert m["image_retrieval_recall@2"] == pytest.approx(4 / 5)
    # image -> caption: image 0 ranks caption 0 first, image 1 caption 2 first; image 2 ranks
    # caption 1 (not its own) first, then caption 4 (its own)
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == pytest.approx(1.0)
    assert m["datacomp_retrieval"] == pytest.approx(0.5 * (2 / 5 + 2 / 3))


def test_recall_is_computed_in_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    images, texts = unit(*rng.normal(size=(50, 8))), unit(*rng.normal(size=(120, 8)))
    owners = rng.integers(0, 50, 120)
    whole = retrieval_metrics(images, texts, owners)
    monkeypatch.setattr("pairsift.evaluation.retrieval.BLOCK", 7)
    assert retrieval_metrics(images, texts, owners) == whole


def test_mean_per_class_recall_with_unbalanced_classes():
    targets = np.array([0, 0, 0, 0, 1])
    predictions = np.zeros(5, dtype=int)  # always the big class
    assert mean_per_class_recall(predictions, targets) == pytest.approx(0.5)  # (1 + 0) / 2
    images = unit(*[[1, 0.1]] * 5)
    m = zeroshot_metrics(images, np.eye(2), targets)
    assert m == pytest.approx({"acc1": 0.8, "acc5": 1.0, "mean_per_class_recall": 0.5})


def test_topk_accuracy():
    logits = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8]])
    assert topk_accuracy(logits, np.array([1, 2]), 1) == 0.5
    assert topk_accuracy(logits, np.array([1, 1]), 2) == 1.0


class _TextTable:
    """An encoder whose text embeddings are looked up in a table."""

    def __init__(self, table):
        self.table = table

    def encode_texts(self, texts):
        return unit(*(self.table[t] for t in texts))


def test_class_embedding_is_the_normalised_mean_over_templates():
    encoder = _TextTable({"a cat": [1, 0], "art of cat": [0, 1], "a dog": [1, 1],
                          "art of dog": [1, 1]})
    emb = class_embeddings(encoder, ["cat", "dog"], ["a {}".format, "art of {}".format])
    assert emb == pytest.approx(unit([1, 1], [1, 1]))


def test_template_file():
    templates = read_templates("a photo of a {}.\n\nart of the {c}\n")
    assert [t("dog") for t in templates] == ["a photo of a dog.", "art of the dog"]


def test_fidelity_means_over_all_pairs():
    rng = np.random.default_rng(1)
    a, b = unit(*rng.normal(size=(5, 6))), unit(*rng.normal(size=(7, 6)))
    brute = np.mean([x @ y for x in a for y in b])
    assert mean_pair_cosine(a, b) == pytest.approx(brute)
    assert prompt_cosine(a, a) == pytest.approx(1.0)
    assert strip_identifier("a sks dog on the beach", "sks") == "a dog on the beach"
