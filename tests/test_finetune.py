"""The ArcFace head: its loss, its folded form, the open-set split, and its space in use."""

from __future__ import annotations

import hashlib
import json
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


def test_pca_start_projects_on_the_principal_directions_and_centres_the_classes():
    x, label = identity_embeddings()
    config = arcface.HeadConfig(dim=4, init="pca")
    head = arcface.build_head(DIM, config)
    loss_fn = arcface.arcface_loss(IDENTITIES, config)
    arcface.start_from_data(head, loss_fn, x, label, config.init)
    z = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5)
    top = np.linalg.svd(z, full_matrices=False)[2][:4]
    top *= np.sign(top[np.arange(4), np.abs(top).argmax(axis=1)])[:, None]  # the sign rule
    np.testing.assert_allclose(np.abs(arcface.apply(head, x).T @ np.eye(len(x))),
                               np.abs(l2(z @ top.T).T), atol=1e-4)
    centres = l2(np.stack([l2(z @ top.T)[label == c].mean(axis=0) for c in range(IDENTITIES)]))
    np.testing.assert_allclose(loss_fn.W.detach().numpy().T, centres, atol=1e-4)


def l2(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.mark.parametrize(("select", "init"), [(s, "pca") for s in arcface.SELECT]
                         + [("recall@1", "random")])
def test_the_kept_epoch_has_the_best_validation_score_epoch_0_included(select, init):
    x, label = identity_embeddings()
    train, val = label < 40, label >= 40
    config = arcface.HeadConfig(dim=8, epochs=6, patience=6, batch_size=32, lr=0.02,
                                init=init, select=select)
    trained = arcface.train_head(x[train], label[train], x[val], label[val], config)
    history = trained.history
    assert [h["epoch"] for h in history] == list(range(7))
    sign = -1 if select == "overlap" else 1
    ranks = [(sign * h[f"val_{select}"], h["val_mAP"]) for h in history]
    assert trained.best_epoch == max(range(len(ranks)), key=lambda e: (ranks[e], -e))
    kept = arcface.Validation(x[val], label[val], config.seed).scores(trained.head)
    assert kept == {k[4:]: v for k, v in history[trained.best_epoch].items() if k[:4] == "val_"}


def test_any_float_input_trains_and_the_history_is_strict_json():
    x, label = identity_embeddings()
    train, val = label < 40, label >= 40
    config = arcface.HeadConfig(dim=8, epochs=1, patience=1)
    trained = arcface.train_head(x[train].astype(np.float64), label[train],
                                 x[val].astype(np.float16), label[val], config)
    assert trained.history[0]["loss"] is None and trained.history[1]["loss"] > 0

    def no_nan(constant):
        raise AssertionError(f"{constant} is not JSON")

    json.loads(json.dumps(trained.history), parse_constant=no_nan)


@pytest.mark.parametrize("option", [{"init": "rand"}, {"select": "recall"}])
def test_head_options_are_checked(option):
    with pytest.raises(ValueError, match="must be one of"):
        arcface.HeadConfig(**option)


def test_training_must_beat_the_initial_head_to_be_kept():
    x, label = identity_embeddings()
    # validation identities of identical copies: every head retrieves them perfectly, so no
    # epoch beats epoch 0, the initial head, and the earliest of equals is kept
    first = np.unique(label[label >= 40], return_index=True)[1]
    x_val = np.repeat(x[label >= 40][first], 3, axis=0)
    y_val = np.repeat(np.arange(len(first)), 3)
    config = arcface.HeadConfig(dim=8, epochs=3, patience=3, init="pca")
    trained = arcface.train_head(x[label < 40], label[label < 40], x_val, y_val, config)
    assert trained.history[0]["val_recall@1"] == trained.history[-1]["val_recall@1"] == 1
    assert trained.best_epoch == 0


def test_a_head_round_trips_through_its_stored_bytes():
    rng = np.random.default_rng(0)
    head = arcface.Head((rng.standard_normal((3, 5)).astype(np.float32),),
                        (rng.standard_normal(3).astype(np.float32),),
                        {"base": "visual", "model": "m", "nested": {"a": [1, 2]}})
    blob = arcface.head_bytes(head)
    back = arcface.head_from_bytes(blob)
    assert back.record == head.record and len(back.digest) == 16
    assert back.digest == hashlib.sha256(blob).hexdigest()[:16]  # names the stored bytes
    np.testing.assert_array_equal(back.weights[0], head.weights[0])
    np.testing.assert_array_equal(back.biases[0], head.biases[0])
    np.testing.assert_array_equal(back.apply(np.eye(5, dtype=np.float32)),
                                  head.apply(np.eye(5, dtype=np.float32)))


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


def test_the_workspace_stores_a_head_in_arcface_layout(trained):
    root, _, _ = trained
    ws = Workspace.open(root)
    stored = arcface.head_from_bytes(spaces.head_path(ws, "ids").read_bytes())
    loaded = spaces.load_head(ws, "ids")
    assert stored.digest == loaded.digest and stored.record == loaded.record
    for a, b in zip(stored.weights + stored.biases, loaded.weights + loaded.biases, strict=True):
        np.testing.assert_array_equal(a, b)


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
