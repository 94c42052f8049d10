"""DataComp's image-based filter: pool k-means, centroids marked by a reference set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import pairsift
from pairsift import Workspace
from pairsift.errors import ConfigError
from pairsift.models import model_slug
from pairsift.stages.cluster import KMeansModel
from pairsift.stages.imagebased import marked_clusters
from pairsift.synth.tiled import MODEL, tiled_workspace
from tests.workspaces import fake_run

CLASSES, PER_CLASS, DIM, NOISE = 6, 100, 16, 0.05


def class_vectors(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """Unit vectors around the class's axis (classes are orthogonal directions)."""
    x = np.eye(DIM, dtype=np.float32)[classes] + NOISE * rng.standard_normal(
        (len(classes), DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A generated workspace whose image embeddings come from 6 known classes, clustered as
    DataComp clusters (L2 k-means, 20 iterations, seed 0)."""
    root = tmp_path_factory.mktemp("pool") / "ws"
    ws = tiled_workspace(root, CLASSES * PER_CLASS, part_size=200, dim=DIM)
    rng = np.random.default_rng(0)
    classes = rng.permutation(np.repeat(np.arange(CLASSES), PER_CLASS))
    for i, part in enumerate(ws.part_ids()):
        image = class_vectors(rng, classes[i * 200:(i + 1) * 200])
        ws.write_embeddings(model_slug(MODEL), {"image": image, "text": image}, part)
    pairsift.cluster(root, k=60, spherical=False, niter=20, seed=0, progress=False)
    return root, classes


def reference_file(tmp_path: Path, classes: list[int], n: int = 100) -> Path:
    path = tmp_path / "reference.npy"
    np.save(path, class_vectors(np.random.default_rng(1), np.repeat(classes, n)))
    return path


def verdicts(root: Path, stage: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drop flags, reasons and the evidence per row, over the parts in order."""
    ws = Workspace.open(root)
    tables = [ws.part_decisions(p, stage, ["verdict", "reason", "evidence"])
              for p in ws.part_ids()]
    table = pa.concat_tables(tables)
    return (np.array(table.column("verdict").to_pylist()) == "drop",
            np.array(table.column("reason").to_pylist()), table.column("evidence").to_pylist())


@pytest.mark.parametrize("assign", ["dot", "l2"])
def test_keeps_the_reference_classes(pool, tmp_path, assign):
    root, classes = pool
    summary = pairsift.filter_image_based(root, reference=reference_file(tmp_path, [0, 1]),
                                          assign=assign, caption_filter=False,
                                          progress=False)
    drop, reason, evidence = verdicts(root, "filter-image-based")
    wanted = np.isin(classes, [0, 1])
    np.testing.assert_array_equal(~drop, wanted)
    assert set(reason[drop]) == {"cluster_not_marked"}
    assert all('"cluster":' in e for e in np.array(evidence)[drop])
    assert summary.kept == 2 * PER_CLASS and summary.references == 2 * 100


def test_nearest_centroid_by_dot_product_differs_from_l2():
    """L2-trained centroids are not unit vectors: the largest dot product (DataComp's code)
    and the smallest distance pick different centroids for the same point."""
    model = KMeansModel(np.array([[2.0, 0.0], [0.5, 0.5]], np.float32), spherical=False)
    point = np.array([[0.6, 0.8]], np.float32)  # x·c = 1.2 vs 0.7; |x-c|² = 2.6 vs 0.1
    np.testing.assert_array_equal(marked_clusters(model, point, "dot"), [0])
    np.testing.assert_array_equal(marked_clusters(model, point, "l2"), [1])
    assert model.assign(point)[0][0] == 1  # L2 k-means' own rule


def test_intersect_with_clip_score(pool, tmp_path):
    root, classes = pool
    ws = Workspace.open(root)
    half = {}
    for _, rows in ws.iter_parts(["uid"]):
        half |= {u: {"clip_score": 0.1} for u in rows.column("uid").to_pylist()[::2]}
    fake_run(ws, "filter-clip-score", {"threshold": 0.3}, drops=lambda p, rows: half,
             reason="clip_score_below")
    pairsift.filter_image_based(root, reference=reference_file(tmp_path, [2]),
                                caption_filter=False, intersect_clip_score=True,
                                progress=False)
    drop, reason, _ = verdicts(root, "filter-image-based")
    clip_dropped = np.zeros(len(classes), bool)
    clip_dropped[::2] = True  # every part has an even size, so every other row overall
    np.testing.assert_array_equal(~drop, (classes == 2) & ~clip_dropped)
    assert set(reason[clip_dropped]) == {"clip_score_below"}
    assert set(reason[~clip_dropped & (classes != 2)]) == {"cluster_not_marked"}


def test_caption_filter_reads_the_language_signals(pool, tmp_path):
    """DataComp's image-based caption rule: English, more than one token, more than 5
    characters; checked before cluster membership."""
    root, classes = pool
    ws = Workspace.open(root)
    kinds = np.arange(len(classes)) % 3  # 0: good English, 1: French, 2: "a cat"
    signal = {0: ("en", 2, 6), 1: ("fr", 6, 40), 2: ("en", 2, 5)}

    def signals(part: int, rows: pa.Table) -> dict:
        start = 200 * part
        chosen = [signal[k] for k in kinds[start:start + rows.num_rows]]
        return {"language": [c[0] for c in chosen],
                "language_score": np.full(len(chosen), 0.9, np.float32),
                "n_words": np.array([c[1] for c in chosen], np.int32),
                "n_chars": np.array([c[2] for c in chosen], np.int32)}

    fake_run(ws, "language", {"lid_model": "lid.176.ftz"}, signals=signals,
             inputs={"lid_model": "lid.176.ftz"})
    pairsift.filter_image_based(root, reference=reference_file(tmp_path, [3]),
                                progress=False)
    drop, reason, _ = verdicts(root, "filter-image-based")
    np.testing.assert_array_equal(~drop, (classes == 3) & (kinds == 0))
    assert set(reason[kinds == 1]) == {"wrong_language"}
    assert set(reason[kinds == 2]) == {"caption_few_chars"}


def test_reference_folder_is_embedded_with_the_workspace_model(workspace_copy, demo_corpus,
                                                               tmp_path):
    """A folder of images is embedded with the model the pool was embedded with: with some
    of the pool's own images as the reference, their samples' clusters are marked and kept
    (an unreadable file in the folder is left out and counted)."""
    ws = Workspace.open(workspace_copy)
    keys = pa.concat_tables([ws.read_part(p, ["key"]) for p in ws.part_ids()])
    chosen = keys.column("key").to_pylist()[::20]  # ingested, so readable
    folder = tmp_path / "reference"
    folder.mkdir()
    for key in chosen:  # a folder sample's key is its file name without the extension
        image = next((demo_corpus / "images").glob(f"{key}.*"))
        shutil.copy(image, folder / image.name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    pairsift.cluster(workspace_copy, k=6, spherical=False, niter=20, seed=0, progress=False)
    summary = pairsift.filter_image_based(workspace_copy, reference=folder,
                                          caption_filter=False, progress=False)
    assert summary.references == 3 and summary.unreadable_references == 1
    drop, _, _ = verdicts(workspace_copy, "filter-image-based")
    chosen_rows = np.isin(keys.column("key").to_pylist(), chosen)
    assert chosen_rows.sum() == 3 and not drop[chosen_rows].any()
    assert drop.any()  # fewer clusters marked than there are


def test_reference_of_another_dimension_is_refused(pool, tmp_path):
    root, _ = pool
    np.save(tmp_path / "wide.npy", np.ones((3, DIM + 1), np.float32))
    with pytest.raises(ConfigError, match="dimensions"):
        pairsift.filter_image_based(root, reference=tmp_path / "wide.npy",
                                    caption_filter=False, progress=False)


@pytest.mark.parametrize("options", [{}, {"reference": "/no/such/folder"},
                                     {"reference": ".", "assign": "cosine"}])
def test_bad_options_are_refused(pool, options):
    with pytest.raises(ConfigError):
        pairsift.filter_image_based(pool[0], progress=False, **options)
