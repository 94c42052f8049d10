"""kill -9 in the middle of `pairsift embed`, run it again: same result, finished parts kept
(docs/design.md §3: atomic writes, resume by skipping finished parts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from pairsift import Workspace


def _embed_cmd(ws) -> list[str]:
    # the reference workspace was embedded with the default batch size: batch composition
    # changes float rounding, so the resumed run must use the same one
    return [sys.executable, "-m", "pairsift.cli", "embed", "-w", str(ws), "-q"]


def test_kill_embed_midway_then_resume(embedded_workspace, tmp_path, demo_corpus):
    from pairsift import ingest

    ws_dir = tmp_path / "ws"
    ingest(demo_corpus / "images", ws_dir, captions=demo_corpus / "captions.csv", name="demo",
           chunk_size=16, progress=False)
    ws = Workspace.open(ws_dir)
    parts = ws.part_ids()
    # the image embeddings are written last: they mark a finished part
    first = ws.embedding_path("default", "image", parts[0])
    last = ws.embedding_path("default", "image", parts[-1])

    proc = subprocess.Popen(_embed_cmd(ws_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()[-2000:]
    assert not last.exists(), "the run finished before it could be killed"
    finished = {p: ws.embedding_path("default", "image", p).stat().st_mtime_ns
                for p in parts if ws.embedding_path("default", "image", p).exists()}

    subprocess.run(_embed_cmd(ws_dir), check=True, capture_output=True)

    for part, mtime in finished.items():  # nothing finished was recomputed
        assert ws.embedding_path("default", "image", part).stat().st_mtime_ns == mtime
    reference = Workspace.open(embedded_workspace)
    for part in parts:
        for space in ("image", "text", "visual"):
            np.testing.assert_array_equal(ws.embeddings("default", space, part),
                                          reference.embeddings("default", space, part))
