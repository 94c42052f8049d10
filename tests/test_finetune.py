"""The ArcFace head: its loss, its folded form, the open-set split, and its space in use."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

import pairsift
from pairsift import spaces
from pairsift.errors import ConfigError
from pairsift.models import model_slug
from pairsift.retrieval import arcface
from pairsift.retrieval.searcher import Searcher
from pairsift.synth.tiled import MODEL, tiled_workspace
from pairsift.workspace import Workspace

IDENTITIES, PER, DIM, NUISANCE = 60, 6, 24, 6
FAST = {"dim": 16, "epochs": 30, "patience": 10, "batch_size": 32, "lr": 0.01, "holdout": 0.4,
        "threads": 1}


def identity_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows whose identity lies in one subspace and whose larger nuisance (the
    "augmentations") lies in another, shared by every identity: raw cosine mostly measures
    the nuisance, and a linear head can learn to ignore it, also for unseen identities."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    signal, noise = basis[:, :DIM - NUISANCE], basis[:, DIM - NUISANCE:]
    centres = rng.standard_normal((IDENTITIES, DIM - NUISANCE)) @ signal.T
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.permutation(np.repeat(np.arange(IDENTITIES), PER))
    x = centres[label] + 1.5 * rng.standard_normal((len(label), NUISANCE)) @ noise.T
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), label


def identity_workspace(root: Path) -> tuple[Path, Path]:
    """A two-part workspace holding those embeddings, and a CSV of key -> identity."""
    x, label = identity_embeddings()
    n = len(label)
    ws = tiled_workspace(root / "ws", n, part_size=n // 2, dim=DIM, clusters=4)
    keys = []
    for part in ws.part_ids():
        rows = ws.read_part(part, ["key"]).column("key").to_pylist()
        start = len(keys)
        ws.write_embeddings(model_slug(MODEL), {"image": x[start:start + len(rows)]}, part)
        keys += rows
    labels = root / "labels.csv"
    pacsv.write_csv(pa.table({"key": keys, "identity": [f"id{i}" for i in label]}), labels)
    return ws.root, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, object]:
    root, labels = identity_workspace(tmp_path_factory.mktemp("arcface"))
    summary = pairsift.finetune(root, labels=labels, label_column="identity", name="ids",
                                progress=False, **FAST)
    return root, labels, summary


# -- the loss and the head ----------------------------------------------------------------------
def test_arcface_loss_matches_its_formula_on_a_hand_made_case():
    s, m = 4.0, 0.5  # a small scale keeps the loss far from 0, where float32 rounds
    config = arcface.HeadConfig(dim=2, margin=m, scale=s)
    loss_fn = arcface.arcface_loss(3, config)
    angles = np.array([0.0, 2.0, 4.0])  # class weights at these angles (any norm)
    with torch.no_grad():
        loss_fn.W.copy_(torch.tensor(np.stack([np.cos(angles), np.sin(angles)]) * 3.0,
                                     dtype=torch.float32))
    embeddings = np.array([[math.cos(0.3), math.sin(0.3)], [2 * math.cos(2.5),
                                                            2 * math.sin(2.5)]])
    labels = np.array([0, 2])
    got = loss_fn(torch.tensor(embeddings, dtype=torch.float32), torch.tensor(labels)).item()

    expected = []
    for e, y in zip(embeddings, labels, strict=True):
        theta = np.arccos(np.cos(np.arctan2(e[1], e[0]) - angles))  # angle to each class
        logits = s * np.cos(theta)
        logits[y] = s * np.cos(theta[y] + m)  # the margin on the true class only
        expected.append(-logits[y] + np.log(np.exp(logits).sum()))
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize("hidden", [None, 8])
def test_folded_head_computes_what_the_torch_head_computes(hidden):
    torch.manual_seed(0)
    head = arcface.build_head(12, arcface.HeadConfig(dim=5, hidden=hidden))
    x = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
    head.train()
    for _ in range(3):  # give BatchNorm running statistics that are not the identity
        head(torch.from_numpy(x * 3 + 1))
    weights, biases = arcface.fold(head)
    folded = arcface.Head(tuple(weights), tuple(biases), {"base": "visual"})
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(folded.apply(x), arcface.apply(head, unit), atol=1e-5)
    assert not folded.apply(np.zeros((2, 12), np.float32)).any()  # no embedding stays none


def test_retrieval_metrics_on_a_hand_made_ranking():
    # 0 and 1 are one identity, 2 and 3 another; 0's nearest is 2 (wrong), then 1
    x = np.array([[1, 0], [0.6, 0.8], [0.9, 0.436], [0, 1]], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = arcface.retrieval_metrics(x, np.array([0, 0, 1, 1]), ks=(1, 2))
    # rankings: 0 -> 2,1,3 (AP 1/2); 1 -> 2,3,0 (AP 1/3); 2 -> 0,1,3 (AP 1/3); 3 -> 1,2,0 (AP 1/2)
    assert m["recall@1"] == 0 and m["recall@2"] == 0.5
    assert m["mAP"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    assert m["queries"] == 4


def test_overlap_coefficient_is_one_for_equal_and_zero_for_separated_scores():
    a = np.linspace(-0.5, 0.5, 1000)
    assert arcface.overlap_coefficient(a, a) == pytest.approx(1.0)
    assert arcface.overlap_coefficient(a - 0.5, a + 1.0) == 0.0


# -- the stage ----------------------------------------------------------------------------------
def test_finetune_improves_heldout_retrieval_and_separates_the_scores(trained):
    _, _, s = trained
    assert s.identities["test"] >= 10 and s.identities["validation"] >= 10
    assert s.after["recall@1"] > s.before["recall@1"] + 0.2
    assert s.after["mAP"] > s.before["mAP"]
    assert s.after["overlap"] < s.before["overlap"]
    assert Path(s.plot).stat().st_size > 0 and Path(s.path).exists()


def test_the_head_never_saw_the_test_identities(trained, tmp_path):
    root, labels, first = trained
    ws = Workspace.open(root)
    split = pa.concat_tables(pq.read_table(ws.signal_path("finetune", ws.current_run(
        "finetune"), p)) for p in ws.part_ids()).column("arcface_split").to_pylist()
    table = pacsv.read_csv(labels)
    identity = np.array(table.column("identity").to_pylist(), object)
    assert set(identity[np.array(split) == "test"]).isdisjoint(
        identity[np.array(split) == "train"])
    test = np.flatnonzero(np.array(split) == "test")
    identity[test] = identity[np.random.default_rng(1).permutation(test)]  # scramble them
    scrambled = tmp_path / "scrambled.csv"
    pacsv.write_csv(table.set_column(1, "identity", pa.array(identity.tolist())), scrambled)
    second = pairsift.finetune(root, labels=scrambled, label_column="identity",
                               name="scrambled", progress=False, **FAST)
    a, b = spaces.load_head(ws, "ids"), spaces.load_head(ws, "scrambled")
    assert second.best_epoch == first.best_epoch
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert second.after["recall@1"] != first.after["recall@1"]  # the test labels did change


def test_head_space_is_usable_by_index_search_cluster_and_dedup(trained):
    root, _, s = trained
    assert s.space == "image+arcface:ids"
    built = pairsift.index(root, space=s.space, progress=False)
    assert built.spaces[0].vectors == IDENTITIES * PER
    ws = Workspace.open(root)
    head = spaces.load_head(ws, "ids")
    query = ws.embeddings(model_slug(MODEL), "image", 0)[:1]
    hits = Searcher(root, space=s.space).search(s.space, head.apply(query), 3)
    assert hits[0].part == 0 and hits[0].row == 0 and hits[0].score == pytest.approx(1, abs=1e-3)
    assert ws.embeddings(model_slug(MODEL), s.space, 0).shape[1] == FAST["dim"]
    clusters = pairsift.cluster(root, space=s.space, k=8, progress=False)
    assert clusters.space == s.space
    ws.refresh()
    assert ws.run_record("cluster")["inputs"]["head"] == head.digest
    with pytest.raises(ConfigError, match="no measured default eps"):
        pairsift.dedup_semantic(root, progress=False)
    with pytest.raises(ConfigError, match="cluster --space image"):
        pairsift.dedup_semantic(root, space="image", keep_fraction=0.9, progress=False)
    dedup = pairsift.dedup_semantic(root, space=s.space, keep_fraction=0.9, progress=False)
    assert dedup.kept == pytest.approx(0.9 * IDENTITIES * PER, abs=2)


def test_retraining_under_a_name_replaces_the_head_and_what_it_derived(trained):
    root, labels, _ = trained
    ws = Workspace.open(root)
    pairsift.finetune(root, labels=labels, label_column="identity", name="swap",
                      progress=False, **FAST)
    old = spaces.load_head(ws, "swap")
    ws.embeddings(model_slug(MODEL), "image+arcface:swap", 0)  # derived once, stored
    old_folder = ws.root / "embeddings" / model_slug(MODEL) / spaces.storage_name(old, "swap")
    assert old_folder.is_dir()
    other = {**FAST, "dim": 8}
    pairsift.finetune(root, labels=labels, label_column="identity", name="swap",
                      progress=False, **other)
    assert spaces.load_head(ws, "swap").dim == 8 and not old_folder.exists()
    # the first configuration again: its finished run must not leave the second's head there
    pairsift.finetune(root, labels=labels, label_column="identity", name="swap",
                      progress=False, **FAST)
    assert spaces.load_head(ws, "swap").dim == FAST["dim"]


def test_finetune_refuses_too_few_identities_and_unknown_spaces(trained, tmp_path):
    root, _, _ = trained
    few = tmp_path / "few.csv"
    keys = Workspace.open(root).read_part(0, ["key"]).column("key").to_pylist()[:12]
    pacsv.write_csv(pa.table({"key": keys, "identity": [f"i{k % 3}" for k in range(12)]}), few)
    with pytest.raises(ConfigError, match="too few"):
        pairsift.finetune(root, labels=few, label_column="identity", name="few",
                          progress=False)
    with pytest.raises(ConfigError, match="unknown embedding space"):
        spaces.parse("visual+other:x")
    with pytest.raises(ConfigError, match="holds caption embeddings"):
        pairsift.index(root, space="text", progress=False)
