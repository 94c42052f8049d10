"""The vector index: choice of index, IVF recall, filters, incremental build, search, kNN."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pairsift import Workspace, embed, filter_clip_score, ingest, score
from pairsift.pipeline.search import calibrate, classify, index, search
from pairsift.retrieval.build import (
    FLAT_MAX_ROWS,
    IndexChoice,
    IndexStore,
    choose_index,
    encode,
    merge,
    parse_bytes,
    train,
)
from pairsift.retrieval.knn import majority_vote, weighted_vote
from pairsift.retrieval.search import exact_search, recall_at_k, search_index, tune_nprobe
from pairsift.retrieval.searcher import Searcher

GiB = 2**30


def variant(path: Path) -> bytes:
    """A new near-duplicate of an image: cropped 8 % a side, shrunk to 60 %, JPEG q70."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    im = im.crop((int(w * .08), int(h * .08), int(w * .92), int(h * .92)))
    out = io.BytesIO()
    im.resize((int(w * .6), int(h * .6))).save(out, "JPEG", quality=70)
    return out.getvalue()


def truth_by_key(corpus: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(corpus / "truth.parquet").to_pylist()}


@pytest.fixture(scope="session")
def searchable_workspace(embedded_workspace, demo_corpus, tmp_path_factory) -> Path:
    """The embedded demo, scored, filtered (top 75 %), indexed and calibrated on its
    known duplicate groups. Read-only for tests."""
    ws = tmp_path_factory.mktemp("searchable") / "ws"
    shutil.copytree(embedded_workspace, ws)
    score(ws)
    filter_clip_score(ws, keep_fraction=0.75)
    index(ws, progress=False)
    calibrate(ws, groups=demo_corpus / "truth.parquet")
    return ws


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres: the structure real embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """faiss's OpenMP threads spin-wait: on a busy 2-core runner one thread is faster."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


# -- index choice ------------------------------------------------------------------------------
def test_small_collections_get_exact_search():
    assert choose_index(FLAT_MAX_ROWS, 512).factory == "Flat"


@pytest.mark.parametrize(("budget", "factory"), [
    (4 * GiB, "IVF1024,Flat"),  # 2.05 GB of float32 fits
    (int(1.5 * GiB), "IVF1024,SQfp16"),  # 1.02 GB of float16 fits, float32 does not
    (600 * 10**6, "IVF1024,SQ8"),  # 512 MB of bytes fits
    (100 * 10**6, "IVF1024,PQ64"),  # 100 bytes a vector: largest divisor of 512 below is 64
])
def test_large_collections_get_the_most_precise_codes_that_fit(budget, factory):
    assert choose_index(1_000_000, 512, budget).factory == factory


@pytest.mark.parametrize(("text", "size"), [
    ("2GiB", 2 * GiB), ("512MB", 512 * 10**6), ("1.5 kib", 1536), ("300", 300), (7, 7)])
def test_memory_budgets_read_as_sizes(text, size):
    assert parse_bytes(text) == size


def test_unreadable_size_is_refused():
    with pytest.raises(ValueError, match="as a size"):
        parse_bytes("lots")


def test_impossible_budget_is_refused():
    with pytest.raises(ValueError, match="memory budget"):
        choose_index(1_000_000, 512, 100_000)


# -- IVF on arrays -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    return clustered(20_000, 64, 200, seed=1), clustered(100, 64, 200, seed=1)


@pytest.mark.parametrize("encoding", ["Flat", "SQ8", "PQ8"])
def test_tuned_ivf_reaches_recall_target_without_scanning_everything(vectors, encoding):
    data, queries = vectors
    index = encode(train(IndexChoice("ivf", encoding, 128), data[::4]), data)
    truth = exact_search(queries, np.array_split(data, 7), 10)[1]
    fetch = None if encoding == "Flat" else (lambda p: data[p])
    nprobe, recall = tune_nprobe(index, queries, truth, fetch=fetch)
    assert recall >= 0.95 and nprobe < 128
    if encoding == "PQ8":  # 8-byte codes alone rank poorly: the exact re-scoring is what helps
        coarse = search_index(index, queries, 10, nprobe=nprobe)[1]
        assert recall_at_k(coarse, truth) < recall


def test_exact_search_in_chunks_equals_brute_force(vectors):
    data, queries = vectors
    scores, positions = exact_search(queries, np.array_split(data, 5), 10)
    brute = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    assert (positions == brute).all()
    assert np.allclose(scores, np.take_along_axis(queries @ data.T, brute, 1), atol=1e-5)


@pytest.mark.parametrize("factory", ["flat", "ivf"])
def test_parts_merged_in_order_equal_one_index(vectors, factory):
    data, queries = vectors
    choice = IndexChoice("flat", "Flat") if factory == "flat" else IndexChoice("ivf", "Flat", 64)
    trained = train(choice, data[:8000])
    whole = encode(trained, data)
    merged = merge(trained, (encode(trained, part) for part in np.array_split(data, 3)))
    assert merged.ntotal == len(data)
    a = search_index(whole, queries, 10, nprobe=8)
    b = search_index(merged, queries, 10, nprobe=8)
    assert (a[1] == b[1]).all()


def test_filter_returns_k_hits_all_allowed_and_exact(vectors):
    data, queries = vectors
    index = encode(train(choose_index(1, 64), data[:0]), data)
    allowed = np.random.default_rng(0).random(len(data)) < 0.02
    scores, positions = search_index(index, queries, 10, allowed=allowed)
    assert allowed[positions].all()
    truth = exact_search(queries, [data[allowed]], 10)[1]
    assert (positions == np.flatnonzero(allowed)[truth]).all()


# -- the workspace index -----------------------------------------------------------------------
def test_every_indexed_row_finds_itself(searchable_workspace):
    ws = Workspace.open(searchable_workspace)
    uids = {p: t.column("uid").to_pylist() for p, t in ws.iter_parts(["uid"])}
    for space in ("image", "visual"):
        loaded = IndexStore(ws, "default", space).load()
        assert loaded.index.ntotal == ws.num_samples() == loaded.ids.num_rows
        rows = zip(*(loaded.ids.column(c).to_pylist() for c in ("uid", "part", "row")),
                   strict=True)
        for position, (uid, part, row) in enumerate(rows):
            assert uids[part][row] == uid
            own = ws.embeddings("default", space, part)[row].astype(np.float32)
            scores, found = search_index(loaded.index, own[None] / np.linalg.norm(own), 3)
            assert position in found[0][scores[0] >= scores[0][0] - 1e-4]  # ties: exact copies


def test_index_adds_only_new_parts(workspace_copy, demo_corpus, tmp_path):
    first = index(workspace_copy, progress=False)
    assert [s.parts_added for s in first.spaces] == [4, 4]  # 51 samples, 16 per part
    again = index(workspace_copy, progress=False)
    assert [(s.parts_added, s.parts_skipped) for s in again.spaces] == [(0, 4), (0, 4)]
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(demo_corpus / "images" / "img_0045.png", extra / "horse.png")
    (extra / "captions.csv").write_text("file,caption\nhorse.png,a horse again\n")
    ingest(extra, workspace_copy, captions=extra / "captions.csv", name="extra", progress=False)
    embed(workspace_copy, progress=False)
    grown = index(workspace_copy, progress=False)
    assert [(s.parts_added, s.vectors) for s in grown.spaces] == [(1, 52), (1, 52)]
    hits = search(workspace_copy, image=demo_corpus / "images" / "img_0045.png", k=3)
    assert "horse" in {h.key for h in hits}


def test_zero_embeddings_are_not_indexed(workspace_copy):
    ws = Workspace.open(workspace_copy)
    path = ws.embedding_path("default", "visual", 0)
    array = np.load(path)
    array[3] = 0  # what embed writes for an image that failed to decode
    np.save(path, array)
    index(workspace_copy, progress=False)
    ids = IndexStore(ws, "default", "visual").ids()
    assert ids.num_rows == ws.num_samples() - 1
    assert ws.read_part(0, ["uid"]).column("uid")[3].as_py() not in ids.column("uid").to_pylist()


def test_lossy_index_rescored_to_exact_scores(workspace_copy):
    index(workspace_copy, progress=False)
    exact = Searcher(workspace_copy).search_text("a red motorcycle", k=5)
    # 51 vectors: 384-d joint ones fit 70 kB as float16, 1280-d visual ones only as bytes
    built = index(workspace_copy, memory_budget=70_000, progress=False).spaces
    assert [b.factory.split(",")[1] for b in built] == ["SQfp16", "SQ8"]
    assert all(b.rebuilt and b.recall_at_10 >= 0.95 for b in built)
    lossy = Searcher(workspace_copy).search_text("a red motorcycle", k=5)
    assert [h.uid for h in lossy] == [h.uid for h in exact]
    assert np.allclose([h.score for h in lossy], [h.score for h in exact], atol=1e-5)


# -- search ------------------------------------------------------------------------------------
def test_text_search_finds_the_described_photo(searchable_workspace, demo_corpus):
    truth = truth_by_key(demo_corpus)
    hits = search(searchable_workspace, "a tabby cat", k=3)
    assert [truth[h.key]["photo"] for h in hits] == ["chelsea"] * 3
    assert hits[0].caption and hits[0].confidence is None  # the text space is not calibrated
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score


def test_image_search_finds_the_duplicate_group_first(searchable_workspace, demo_corpus):
    truth = truth_by_key(demo_corpus)
    for original in ("img_0052", "img_0045", "img_0027"):
        query = variant(demo_corpus / "images" / f"{original}.png")
        hits = search(searchable_workspace, image=query, k=2)
        assert truth[hits[0].key]["group"] == f"{original}.png"
        assert hits[0].confidence > 0.5


def test_verdict_and_reason_filters(searchable_workspace):
    searcher = Searcher(searchable_workspace)
    everything = searcher.search_text("a photo", k=100)
    kept = searcher.search_text("a photo", k=100, verdict="kept")
    dropped = searcher.search_text("a photo", k=100, verdict="dropped")
    assert {h.verdict for h in kept} == {"keep"} and {h.verdict for h in dropped} == {"drop"}
    assert len(kept) + len(dropped) == len(everything) == 51
    assert {h.uid for h in kept} | {h.uid for h in dropped} == {h.uid for h in everything}
    reason = searcher.decisions.all_reasons()[0]
    by_reason = searcher.search_text("a photo", k=100, reason=reason)
    assert by_reason and all(reason in h.reasons for h in by_reason)
    with pytest.raises(ValueError, match="reason"):
        searcher.search_text("a photo", reason="no_such_reason")
    with pytest.raises(ValueError, match="verdict"):
        searcher.search_text("a photo", verdict="maybe")


# -- kNN labels --------------------------------------------------------------------------------
def test_votes_break_ties_by_similarity():
    labels, scores = ["cat", "dog", "dog", "cat"], [0.9, 0.5, 0.4, 0.8]
    assert majority_vote(labels, scores) == ("cat", {"cat": 0.5, "dog": 0.5})
    label, weights = weighted_vote(["cat", "dog", "dog", "dog"], [0.95, 0.3, 0.3, 0.3])
    assert label == "cat" and weights["cat"] == pytest.approx(0.95 / 1.85)
    assert majority_vote([], []) == (None, {})


def test_classify_labels_new_images_by_their_neighbours(searchable_workspace, demo_corpus):
    images = {"chelsea": "img_0048", "rocket": "img_0042", "horse": "img_0045"}
    queries = []
    for name in images.values():
        path = demo_corpus / "images" / f"{name}.png"
        queries.append(variant(path if path.exists() else path.with_suffix(".jpg")))
    out = classify(searchable_workspace, queries, labels=demo_corpus / "truth.parquet",
                   label_column="photo", k=3)
    assert [c.majority for c in out] == list(images)
    assert [c.weighted for c in out] == list(images)
    assert all(len(c.neighbours) == 3 for c in out)
