"""Shared fixtures: the real image files in tests/data and a small embedded workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Files from other projects' test suites; tests/data/README.md gives origin, licence, expectations.
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return TEST_DATA


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The synthetic folder corpus (photos + captions + ground truth), built once."""
    from pairsift.synth import make_corpus

    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, layout="folder")
    return root


@pytest.fixture(scope="session")
def embedded_workspace(tmp_path_factory, demo_corpus) -> Path:
    """The demo corpus ingested and embedded with the real default model, built once."""
    from pairsift import embed, ingest

    ws = tmp_path_factory.mktemp("ws") / "ws"
    ingest(demo_corpus / "images", ws, captions=demo_corpus / "captions.csv", name="demo",
           chunk_size=16, progress=False)
    embed(ws, progress=False)
    return ws


@pytest.fixture
def workspace_copy(embedded_workspace, tmp_path) -> Path:
    """A private copy of the embedded workspace that a test may change."""
    target = tmp_path / "ws"
    shutil.copytree(embedded_workspace, target)
    return target
