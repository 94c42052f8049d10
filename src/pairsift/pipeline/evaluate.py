"""``pairsift evaluate``: measure an encoder on an evaluation set the user brings.

Tasks: ``zeroshot`` (class folders), ``retrieval`` (image-caption table or WebDataset),
``fairness`` (labelled images + concept prompts) and ``fidelity`` (generated images + prompts +
reference images). The model is any name :func:`pairsift.models.load_encoder` accepts, a
``run:RUN`` trained by ``pairsift train`` included. ``clip_benchmark`` runs clip_benchmark's own
task on its own datasets, where it is installed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..evaluation import data as evdata
from ..evaluation.fairness import ZERO_POLICIES, retrieval_fairness
from ..evaluation.fidelity import mean_pair_cosine, prompt_cosine, strip_identifier
from ..evaluation.retrieval import retrieval_metrics
from ..evaluation.zeroshot import (
    class_embeddings,
    openai_imagenet_templates,
    read_templates,
    zeroshot_metrics,
)
from ..models import load_encoder
from ..models.base import ImageTextEncoder, encode_images
from .search import load_image

TASKS = ("zeroshot", "retrieval", "fairness", "fidelity")
BATCH = 64
RESULT_FILE = "evaluation-{task}.json"  # in the folder given as ``out``


@dataclass
class EvalResult:
    task: str
    model: str
    data: str
    samples: int
    metrics: dict[str, float]
    details: dict = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        record = {**asdict(self), "created": dt.datetime.now(dt.UTC).isoformat(
            timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        return path


def embed_images(encoder: ImageTextEncoder, images: Sequence[Path | Image.Image], *,
                 space: str = "joint") -> np.ndarray:
    """Image embeddings in ``space`` (``joint``; ``visual``: the image-only space, the joint
    one where the encoder has no other), loaded and embedded a batch at a time."""
    out = []
    for batch in evdata.batches(list(images), BATCH):
        loaded = [load_image(im) for im in batch]
        emb = encode_images(encoder, loaded)
        out.append(emb.visual if space == "visual" and emb.visual is not None else emb.joint)
    if not out:
        raise ConfigError("the evaluation set has no images")
    return np.concatenate(out)


def evaluate(data: str | Path, *, model: str = "default", task: str = "zeroshot",
             device: str = "cpu", out: str | Path | None = None,
             templates: str | Path | None = None, classnames: str | Path | None = None,
             image_column: str | None = None, caption_column: str | None = None,
             attribute: str = "label", prompts: str | Path | None = None, k: int = 1000,
             desired: str = "uniform", zero_policy: str = "berg",
             references: str | Path | None = None, dino_model: str = "default",
             identifier: str | None = None) -> EvalResult:
    """Evaluate ``model`` on ``data`` for ``task``; with ``out``, also write the result as
    JSON (a ``.json`` file, or ``evaluation-TASK.json`` in a folder, e.g. the training run's,
    where ``pairsift compare`` finds it).

    >>> evaluate("eval/classes", model="run:runs/tiny", task="zeroshot")  # doctest: +SKIP
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    data = Path(data)
    if not data.exists():
        raise ConfigError(f"{data} does not exist")
    if task == "fidelity" and references is None:
        raise ConfigError("fidelity needs --references: a folder of the subject's real images")
    encoder = load_encoder(model, device)
    if task == "zeroshot":
        result = _zeroshot(encoder, data, templates, classnames)
    elif task == "retrieval":
        result = _retrieval(encoder, data, image_column, caption_column)
    elif task == "fairness":
        result = _fairness(encoder, data, attribute, image_column, prompts, k, desired,
                           zero_policy)
    else:
        result = _fidelity(encoder, data, Path(references), image_column, dino_model, device,
                           identifier)
    if out is not None:
        out = Path(out)
        result.save(out if out.suffix == ".json" else out / RESULT_FILE.format(task=task))
    return result


def _zeroshot(encoder: ImageTextEncoder, root: Path, templates: str | Path | None,
              classnames: str | Path | None) -> EvalResult:
    dataset = evdata.class_folders(root, Path(classnames) if classnames else None)
    chosen = (read_templates(Path(templates).read_text()) if templates
              else openai_imagenet_templates())
    classes = class_embeddings(encoder, dataset.classnames, chosen)
    metrics = zeroshot_metrics(embed_images(encoder, dataset.images), classes, dataset.targets)
    return EvalResult("zeroshot", encoder.name, str(root), len(dataset.images), metrics,
                      {"classes": len(dataset.classnames), "templates": len(chosen)})


def _retrieval(encoder: ImageTextEncoder, path: Path, image_column: str | None,
               caption_column: str | None) -> EvalResult:
    dataset = evdata.caption_set(path, image_column, caption_column)
    metrics = retrieval_metrics(embed_images(encoder, dataset.images),
                                encoder.encode_texts(dataset.captions), dataset.text_image)
    return EvalResult("retrieval", encoder.name, str(path), len(dataset.images), metrics,
                      {"captions": len(dataset.captions)})


def _fairness(encoder: ImageTextEncoder, path: Path, attribute: str, image_column: str | None,
              prompts: str | Path | None, k: int, desired: str,
              zero_policy: str) -> EvalResult:
    if zero_policy not in ZERO_POLICIES:
        raise ConfigError(f"zero policy must be one of {ZERO_POLICIES}")
    dataset = evdata.labelled_images(path, attribute, image_column)
    pairs = evdata.concept_prompts(Path(prompts) if prompts else None)
    k = min(k, len(dataset.images))
    try:
        result = retrieval_fairness(
            embed_images(encoder, dataset.images), dataset.labels,
            encoder.encode_texts([p for p, _ in pairs]), k=k, desired=desired,
            n_labels=len(dataset.names), zero_policy=zero_policy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return EvalResult("fairness", encoder.name, str(path), len(dataset.images),
                      result.metrics(), {"attribute": attribute, "labels": dataset.names,
                                         "prompts": len(pairs), "k": k, "desired": desired,
                                         "zero_policy": zero_policy})


def _fidelity(encoder: ImageTextEncoder, path: Path, references: Path,
              image_column: str | None, dino_model: str, device: str,
              identifier: str | None) -> EvalResult:
    dataset = evdata.generated_images(path, references, image_column)
    generated = embed_images(encoder, dataset.images)
    prompts = [strip_identifier(p, identifier) for p in dataset.prompts]
    dino = load_encoder(dino_model, device)
    metrics = {
        _self_supervised_metric(dino_model): mean_pair_cosine(
            embed_images(dino, dataset.images, space="visual"),
            embed_images(dino, dataset.references, space="visual")),
        "clip_i": mean_pair_cosine(generated, embed_images(encoder, dataset.references)),
        "clip_t": prompt_cosine(generated, encoder.encode_texts(prompts)),
    }
    return EvalResult("fidelity", encoder.name, str(path), len(dataset.images), metrics,
                      {"references": len(dataset.references), "dino_model": dino_model})


def _self_supervised_metric(name: str) -> str:
    """``dino`` for a DINO model; otherwise the metric is named after the space it used, so
    a proxy is never reported as DINO."""
    return "dino" if "dino" in name.lower() else f"visual_i[{name}]"


def clip_benchmark(task: str, *, model: str, pretrained: str, dataset_root: str | Path,
                   out: str | Path, extra: Sequence[str] = ()) -> Path:
    """Run ``clip_benchmark eval`` for ``task`` (its dataset name, e.g. ``cifar10``); the
    datasets are clip_benchmark's, read from ``dataset_root``. Returns its JSON output."""
    executable = shutil.which("clip_benchmark")
    if executable is None:
        raise ConfigError("pairsift clip-benchmark needs clip_benchmark: pip install "
                          "clip_benchmark (and its datasets under --dataset-root)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    output = out / f"clip_benchmark_{task}.json"
    subprocess.run([executable, "eval", "--dataset", task, "--model", model, "--pretrained",
                    pretrained, "--dataset_root", str(dataset_root), "--output", str(output),
                    *extra], check=True)
    return output
