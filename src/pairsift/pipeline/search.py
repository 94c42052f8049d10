"""Search commands: index, search, classify, calibrate, serve (workspace I/O + ``retrieval/``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from .. import spaces
from ..engine.local import progress_bar
from ..errors import ConfigError
from ..io.images import decode_image
from ..io.tables import read_table
from ..models import model_slug
from ..retrieval import calibration as cal
from ..retrieval.build import (
    DEFAULT_MEMORY_BUDGET,
    IndexStore,
    SpaceBuild,
    WorkspaceVectors,
    build_space,
    parse_bytes,
)
from ..retrieval.knn import majority_vote, weighted_vote
from ..retrieval.search import tune_store
from ..retrieval.searcher import Hit, Searcher
from ..workspace import Workspace, WorkspaceError

ImageInput = str | Path | bytes | Image.Image
Labels = str | Path | Mapping[str, str]


def _model(ws: Workspace, model: str | None) -> tuple[str, str]:
    """The model name (default: the last embedded) and its slug, checked to be embedded."""
    name = model or ws.current_model()
    slug = model_slug(name)
    if slug not in ws.models():
        raise WorkspaceError(f"{ws.root} has no embeddings for model {name!r}: run "
                             f"`pairsift embed --model {name}` first")
    return name, slug


def _spaces(ws: Workspace, slug: str) -> list[str]:
    """Images' spaces: joint (text queries) where the model has a text tower and, where it
    has one, visual (images)."""
    record = ws.models()[slug]
    return (["image"] if record.get("dim") else []) + (
        ["visual"] if record.get("visual_dim") else [])


def _image_space(space: str | None) -> str | None:
    """``space`` checked to be a space images can be searched in (not text's)."""
    if space is not None and spaces.parse(space)[0] not in spaces.IMAGE_SPACES:
        raise ConfigError(f"{space!r} holds caption embeddings; images are searched in "
                          f"{', '.join(spaces.IMAGE_SPACES)} or a head's space")
    return space


@dataclass
class IndexSummary:
    model: str
    spaces: list[SpaceBuild]


def index(workspace: str | Path, *, model: str | None = None,
          memory_budget: int | str = DEFAULT_MEMORY_BUDGET, rebuild: bool = False,
          space: str | None = None, progress: bool = True) -> IndexSummary:
    """Index every embedded image space (or only ``space``, e.g. a trained head's
    ``visual+arcface:NAME``); parts already indexed are skipped.

    >>> from pairsift import index  # doctest: +SKIP
    >>> index("ws", memory_budget="512MiB")  # doctest: +SKIP
    """
    ws = Workspace.open(workspace)
    name, slug = _model(ws, model)
    builds = []
    for each in [_image_space(space)] if space else _spaces(ws, slug):
        store = IndexStore(ws, slug, each)
        with progress_bar(f"index {each}", ws.num_samples(), enabled=progress) as advance:
            built = build_space(store, memory_budget=parse_bytes(memory_budget),
                                rebuild=rebuild, advance=advance)
        if built.factory != "Flat" and (built.parts_added or built.nprobe is None):
            meta = tune_store(store)
            built.nprobe, built.recall_at_10 = meta["nprobe"], meta["recall_at_10"]
        builds.append(built)
    return IndexSummary(name, builds)


def load_image(image: ImageInput) -> Image.Image:
    """A query image from a path, bytes or a PIL image, decoded defensively."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return decode_image(data).image


def search(workspace: str | Path, text: str | None = None, *, image: ImageInput | None = None,
           k: int = 10, verdict: str = "all", reason: str | None = None,
           model: str | None = None, device: str = "cpu",
           space: str | None = None) -> list[Hit]:
    """Top-k samples for a text (joint space) or an image (visual space, or ``space``: a
    trained head's applies the head to the query), best first.

    ``verdict`` is ``all``, ``kept`` or ``dropped``; ``reason`` keeps samples dropped for it.
    Hits carry a calibrated ``confidence`` when ``pairsift calibrate`` has run for the space.

    >>> from pairsift import search  # doctest: +SKIP
    >>> search("ws", "a red motorcycle", k=5, verdict="kept")[0].uid  # doctest: +SKIP
    """
    if (text is None) == (image is None):
        raise ConfigError("give exactly one of a text query and an image")
    if text is not None and space is not None:
        raise ConfigError(f"a text query searches the joint space 'image'; {space!r} is for "
                          "image queries (--image)")
    searcher = Searcher(workspace, model=model, device=device, space=_image_space(space))
    if text is not None:
        return searcher.search_text(text, k, verdict, reason)
    return searcher.search_image(load_image(image), k, verdict, reason)


def labels_by_uid(ws: Workspace, labels: Labels, label_column: str,
                  key_column: str = "key") -> dict[str, str]:
    """uid -> label from a mapping (keyed by uid) or a table (CSV, TSV, JSONL, Parquet) that
    names samples by ``key_column``: ``uid``, or ``key`` (every sample with that key)."""
    if isinstance(labels, Mapping):
        return {str(u): str(v) for u, v in labels.items() if v is not None}
    table = read_table(Path(labels))
    for column in (key_column, label_column):
        if column not in table.column_names:
            raise ConfigError(f"{labels}: no column {column!r}; columns are {table.column_names}")
    table = table.filter(pc.is_valid(table.column(label_column)))
    names = _uids_by_name(ws, key_column)
    return {uid: str(label)
            for name, label in zip(table.column(key_column).to_pylist(),
                                   table.column(label_column).to_pylist(), strict=True)
            for uid in names.get(str(name), [])}


def _uids_by_name(ws: Workspace, key_column: str) -> dict[str, list[str]]:
    """Name -> uids, where a name is a uid (``key_column="uid"``) or a source key (a key may
    name samples of several sources)."""
    if key_column not in ("uid", "key"):
        raise ConfigError(f"samples are named by 'uid' or 'key', not {key_column!r}")
    out: dict[str, list[str]] = {}
    for _, part in ws.iter_parts(["uid", key_column] if key_column == "key" else ["uid"]):
        for uid, name in zip(part.column("uid").to_pylist(),
                             part.column(key_column).to_pylist(), strict=True):
            out.setdefault(name, []).append(uid)
    return out


@dataclass
class Classification:
    image: str
    majority: str | None
    weighted: str | None
    majority_votes: dict[str, float]
    weighted_votes: dict[str, float]
    neighbours: list[dict]  # uid, score, label


def classify(workspace: str | Path, images: Sequence[ImageInput], *, labels: Labels,
             label_column: str = "label", key_column: str = "key", k: int = 10,
             model: str | None = None, device: str = "cpu",
             space: str | None = None) -> list[Classification]:
    """Label each image by its k nearest labelled samples (majority and weighted votes).

    Only labelled samples are searched (an index filter), so all k neighbours vote.

    >>> from pairsift import classify  # doctest: +SKIP
    >>> classify("ws", ["new.jpg"], labels="truth.parquet", label_column="photo")  # doctest: +SKIP
    """
    searcher = Searcher(workspace, model=model, device=device, space=_image_space(space))
    by_uid = labels_by_uid(searcher.ws, labels, label_column, key_column)
    space = searcher.image_space
    uids = searcher.space(space).loaded.ids.column("uid").combine_chunks()
    allowed = pc.is_in(uids, value_set=pa.array(list(by_uid), pa.string())).to_numpy(False)
    if not allowed.any():
        raise ConfigError("no indexed sample has a label: check --key-column and --label-column")
    out = []
    for image in images:
        hits = searcher.search(space, searcher.image_vector(load_image(image)), k,
                               allowed=allowed)
        names, scores = [by_uid[h.uid] for h in hits], [h.score for h in hits]
        majority, majority_votes = majority_vote(names, scores)
        weighted, weighted_votes = weighted_vote(names, scores)
        out.append(Classification(
            "<image>" if isinstance(image, bytes | Image.Image) else str(image), majority,
            weighted, majority_votes, weighted_votes,
            [{"uid": h.uid, "score": h.score, "label": n} for h, n in zip(hits, names,
                                                                          strict=True)]))
    return out


@dataclass
class CalibrationSummary:
    space: str
    method: str  # the model used (Platt when too few same pairs)
    requested: str
    note: str | None
    pairs: int
    positives: int
    prior: float
    heldout: cal.Evaluation
    path: Path
    diagram: Path


def calibrate(workspace: str | Path, *, groups: Labels | None = None,
              pairs: str | Path | None = None, group_column: str = "group",
              key_column: str = "key", space: str | None = None, method: str = "kde",
              prior: float | None = None, holdout: float = 0.3, seed: int = 0,
              model: str | None = None) -> CalibrationSummary:
    """Fit score -> P(same) on labelled pairs and save it beside the index of ``space``.

    ``groups``: a table (or uid -> group mapping) of known duplicate groups; pairs inside a
    group are "same", pairs across groups "different"; samples without a group are left out.
    ``pairs``: a table with columns ``a``, ``b`` (values of ``key_column``) and ``same``.
    ``prior`` defaults to the share of same pairs among all labelled pairs. ``holdout`` of the
    pairs (stratified) is kept out of the fit to report ECE, Brier and a reliability diagram.

    >>> from pairsift import calibrate  # doctest: +SKIP
    >>> calibrate("ws", groups="corpus/truth.parquet").heldout.ece  # doctest: +SKIP
    """
    if (groups is None) == (pairs is None):
        raise ConfigError("give exactly one of groups and pairs")
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be strictly between 0 and 1, got {holdout}")
    ws = Workspace.open(workspace)
    _, slug = _model(ws, model)
    space = _image_space(space) or _spaces(ws, slug)[-1]
    store = IndexStore(ws, slug, space)
    rng = np.random.default_rng(seed)
    if groups is not None:
        scores, same, population = _group_scores(store, labels_by_uid(
            ws, groups, group_column, key_column), rng)
        source = f"groups: {groups if not isinstance(groups, Mapping) else 'mapping'}"
    else:
        scores, same = _pair_scores(store, Path(pairs), key_column)
        population, source = float(same.mean()), f"pairs: {pairs}"
    held = cal.stratified_holdout(same, holdout, rng)
    fitted = cal.fit(scores[~held], same[~held], method=method,
                     prior=population if prior is None else prior)
    evaluation = cal.evaluate(fitted, scores[held], same[held])
    cal.save(store.calibration_path, fitted,
             {"space": space, "source": source, "holdout": holdout,
              "heldout": asdict(evaluation)})
    diagram = store.root / "reliability.png"
    cal.plot_reliability(evaluation, diagram, f"{slug} / {space}: {fitted.method}")
    return CalibrationSummary(space, fitted.method, method, fitted.note, len(scores),
                              int(same.sum()), fitted.prior, evaluation,
                              store.calibration_path, diagram)


def _positions(store: IndexStore) -> tuple[dict[str, int], WorkspaceVectors]:
    ids = store.ids()
    return ({u: i for i, u in enumerate(ids.column("uid").to_pylist())},
            WorkspaceVectors(store, ids))


def _group_scores(store: IndexStore, groups: dict[str, str],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Cosine, same-group flag and population rate of same pairs for grouped samples."""
    where, vectors = _positions(store)
    uids = [u for u in groups if u in where]
    if len(uids) < 2:
        raise ConfigError(f"only {len(uids)} indexed samples have a group; need at least two")
    x = vectors(np.array([where[u] for u in uids]))
    i, j, same, population = cal.group_pairs(np.array([groups[u] for u in uids]), rng)
    return np.einsum("nd,nd->n", x[i], x[j]), same, population


def _pair_scores(store: IndexStore, path: Path,
                 key_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and label of each listed pair whose two samples are indexed."""
    table = read_table(path)
    missing = {"a", "b", "same"} - set(table.column_names)
    if missing:
        raise ConfigError(f"{path}: a pairs table needs columns a, b and same; "
                         f"missing {sorted(missing)}")
    where, vectors = _positions(store)
    names = {name: uids[0] for name, uids in _uids_by_name(store.ws, key_column).items()}
    rows = [(names.get(str(a)), names.get(str(b)), str(s).lower() in ("true", "1", "yes"))
            for a, b, s in zip(*(table.column(c).to_pylist() for c in ("a", "b", "same")),
                               strict=True)]
    rows = [(where[a], where[b], s) for a, b, s in rows if a in where and b in where]
    if not rows:
        raise ConfigError(f"{path}: no pair names two indexed samples (by {key_column!r})")
    i, j, same = (np.array(c) for c in zip(*rows, strict=True))
    return np.einsum("nd,nd->n", vectors(i), vectors(j)), same.astype(bool)


def serve(workspace: str | Path, *, host: str = "127.0.0.1", port: int = 8765,
          model: str | None = None, device: str = "cpu") -> None:
    """Run the search web page until interrupted. It listens on loopback only unless ``host``
    says otherwise, and then answers any Host name (the choice to expose it was explicit)."""
    import uvicorn

    from ..server.app import LOOPBACK_HOSTS, create_app

    hosts = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else ("*",)
    uvicorn.run(create_app(workspace, model=model, device=device, allowed_hosts=hosts),
                host=host, port=port)
