"""Run a PyTorch network through ONNX Runtime, exported once and kept in the user cache.

On 2 CPU cores ONNX Runtime ran EfficientNet-Lite0 6-10x faster than PyTorch eager
channels-last and MiniLM 2.7x faster, with outputs equal up to float rounding
(benchmarks/bench_embed_speed.py, benchmarks/RESULTS.md). The export takes seconds, so the
graph is stored in :mod:`pairsift.models.cache`, keyed by the weights' hash and the versions
that shape the graph. Callers fall back to PyTorch when this path is off or fails (:func:`enabled`).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

from pairsift.models.cache import cached_bytes

ENV = "PAIRSIFT_ONNX"  # set to 0 to run the default model in PyTorch eager
OPSET = 17
EXPORT_FORMAT = 1  # bump when the exported graphs change for the same weights and versions
EXPORT_PACKAGES = ("torch", "onnx", "onnxruntime")


def enabled(device: str) -> bool:
    """ONNX Runtime is used on CPU unless ``$PAIRSIFT_ONNX`` is ``0`` (or ``false``/``off``)."""
    off = os.environ.get(ENV, "1").strip().lower() in {"0", "false", "off", "no"}
    return torch.device(device).type == "cpu" and not off


def export_key(name: str, weights: str) -> dict[str, Any]:
    """Everything an exported graph depends on: the network, its weights, the toolchain."""
    packages = {}
    for package in EXPORT_PACKAGES:
        try:
            packages[package] = version(package)
        except ImportError:  # onnx is needed only to export; its absence fails the export
            packages[package] = None
    return {"network": name, "weights": weights, "opset": OPSET, "format": EXPORT_FORMAT,
            "packages": packages}


def export(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str],
           outputs: list[str], dynamic: dict[str, dict[int, str]]) -> bytes:
    """``module`` as an ONNX graph (TorchScript exporter: no extra dependency beyond onnx)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # constant-folding and tracer notes, not actionable
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic)
    return buffer.getvalue()


def session(name: str, weights: str, build: Callable[[], bytes]) -> Any:
    """An ONNX Runtime session for the graph ``build()`` exports, read from the cache when it
    is there. Uses as many threads as torch (so ``torch.set_num_threads`` and
    ``OMP_NUM_THREADS`` apply to both backends); idle threads sleep instead of spinning, so
    they leave the cores to the decode threads between batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    graph = cached_bytes(f"onnx-{name}", export_key(name, weights), build)
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
