"""Image-only timm encoders (DINO, DINOv2) by name. No weights offline: every model here has
random weights, which only exercise the code paths (the real architecture, its transform, the
visual-only workspace), never a figure."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import skimage
import torch
from PIL import Image

import pairsift
from pairsift.errors import ConfigError, WorkspaceError
from pairsift.models import default_dedup_eps, has_text, load_encoder, model_slug
from pairsift.models.timm_visual import TimmEncoder
from pairsift.workspace import Workspace

DINO = "timm:vit_small_patch16_224.dino"
DINOV2 = "timm:vit_small_patch14_dinov2.lvd142m"


@pytest.fixture(scope="module")
def random_dino() -> TimmEncoder:
    return TimmEncoder(DINO.removeprefix("timm:"), pretrained=False)


def _unit(x) -> None:
    assert torch.allclose(torch.linalg.norm(torch.from_numpy(x), dim=1), torch.ones(len(x)),
                          atol=1e-5)


def test_timm_names_are_image_only_models_with_their_own_slug():
    assert model_slug(DINO) == "timm-vit_small_patch16_224.dino"
    assert model_slug(DINOV2) == "timm-vit_small_patch14_dinov2.lvd142m"
    assert not has_text(DINO) and has_text("default")
    with pytest.raises(ConfigError, match="unknown timm model"):
        load_encoder("timm:not_a_model.dino")  # fails before any download
    with pytest.raises(ConfigError, match="unknown timm model"):
        pairsift.embed("no-workspace-needed", model="timm:not_a_model.dino", progress=False)
    with pytest.raises(ConfigError, match="--keep-fraction"):
        default_dedup_eps(DINO)


def test_dino_random_weights_code_path(random_dino: TimmEncoder):
    assert random_dino.name == f"{DINO}/random-init"
    assert (random_dino.dim, random_dino.visual_dim) == (None, 384)
    images = [skimage.data.chelsea(), skimage.data.coffee()]
    pixels = torch.stack([random_dino.preprocess(Image.fromarray(a)) for a in images])
    assert pixels.shape == (2, 3, 224, 224)
    out = random_dino.embed_pixels(pixels)
    assert out.joint is None and out.visual.shape == (2, 384)
    _unit(out.visual)
    with pytest.raises(ConfigError, match="image-only"):
        random_dino.encode_texts(["a cat"])


def test_dinov2_random_weights_code_path():
    encoder = TimmEncoder(DINOV2.removeprefix("timm:"), pretrained=False)
    pixels = encoder.preprocess(Image.fromarray(skimage.data.chelsea()).convert("L"))
    assert pixels.shape == (3, 518, 518)  # DINOv2's own input size, from its config
    out = encoder.embed_pixels(pixels[None])
    assert out.joint is None and out.visual.shape == (1, 384)


def test_visual_only_workspace_with_dino_random_weights(workspace_copy, demo_corpus,
                                                        random_dino, monkeypatch):
    """embed stores only the visual space; index, image search, cluster, dedup and finetune
    use it; what needs text says the model has none."""
    for module in ("pairsift.stages.embed", "pairsift.retrieval.searcher"):
        monkeypatch.setattr(f"{module}.load_encoder", lambda *a, **k: random_dino)
    ws_root = workspace_copy
    pairsift.embed(ws_root, model=DINO, progress=False)
    ws = Workspace.open(ws_root)
    slug = model_slug(DINO)
    assert ws.models()[slug] == {"name": DINO, "dim": None, "visual_dim": 384}
    assert sorted(p.name for p in (ws.root / "embeddings" / slug).iterdir()) == ["visual"]
    assert [b.space for b in pairsift.index(ws_root, progress=False).spaces] == ["visual"]
    query = next((demo_corpus / "images").glob("*.jpg"))
    hits = pairsift.search(ws_root, image=query, k=2)
    assert hits[0].key == query.stem and hits[0].score == pytest.approx(1, abs=1e-3)
    with pytest.raises(ConfigError, match="image-only"):
        pairsift.search(ws_root, "a cat")
    with pytest.raises(WorkspaceError, match="visual-only"):
        pairsift.score(ws_root, progress=False)
    assert pairsift.cluster(ws_root, k=3, progress=False).space == "visual"
    with pytest.raises(ConfigError, match="no default SemDeDup eps"):
        pairsift.dedup_semantic(ws_root, progress=False)
    assert pairsift.dedup_semantic(ws_root, keep_fraction=0.9, progress=False).dropped > 0
    truth = pq.read_table(demo_corpus / "truth.parquet", columns=["key", "group"])
    labels = ws_root.parent / "groups.parquet"
    pq.write_table(truth.filter(pc.is_valid(truth.column("group"))), labels)
    tuned = pairsift.finetune(ws_root, labels=labels, label_column="group", holdout=0.5,
                              epochs=2, dim=32, name="dino", threads=1, progress=False)
    assert tuned.space == "visual+arcface:dino"
    pairsift.index(ws_root, space=tuned.space, progress=False)
    hits = pairsift.search(ws_root, image=query, k=2, space=tuned.space)
    assert hits[0].key == query.stem and hits[0].score == pytest.approx(1, abs=1e-2)
    labelled = next(k for k in truth.column("key").to_pylist()
                    if (demo_corpus / "images" / f"{k}.jpg").exists() and truth.filter(
                        pc.equal(truth.column("key"), k)).column("group")[0].is_valid)
    voted = pairsift.classify(ws_root, [demo_corpus / "images" / f"{labelled}.jpg"],
                              labels=labels, label_column="group", space=tuned.space, k=1)
    group = truth.filter(pc.equal(truth.column("key"), labelled)).column("group")[0].as_py()
    assert voted[0].majority == group  # its own stored copy is its nearest labelled sample
    fitted = pairsift.calibrate(ws_root, groups=labels, group_column="group",
                                space=tuned.space)
    assert fitted.space == tuned.space and fitted.path.exists()
