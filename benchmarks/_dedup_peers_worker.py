"""Run imagededup and fastdup on a folder of images; write their similarity edges as JSON.

Run by bench_dedup_peers.py with the peers' own interpreter (benchmarks/_work/peers-venv),
never imported by pairsift: the peers are not project dependencies (fastdup's licence is
non-commercial). Edges carry each tool's own score, so the caller can sweep thresholds:
imagededup's Hamming distance (≤ 20 recorded) and fastdup's cosine similarity (≥ 0.8).

    python _dedup_peers_worker.py IMAGES_DIR WORK_DIR OUT.json   (fastdup prints to stdout)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MAX_HAMMING = 20
MIN_SIMILARITY = 0.8


def imagededup_edges(method: str, images: Path) -> dict:
    from imagededup.methods import DHash, PHash

    start = time.perf_counter()
    hasher = {"phash": PHash, "dhash": DHash}[method](verbose=False)
    encodings = hasher.encode_images(image_dir=str(images))
    found = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=MAX_HAMMING,
                                   scores=True)
    seconds = time.perf_counter() - start
    edges = [[Path(a).stem, Path(b).stem, int(d)] for a, dups in found.items()
             for b, d in dups if a < b]
    return {"seconds": seconds, "edges": edges}


def fastdup_edges(k: int, images: Path, work: Path) -> dict:
    import fastdup

    start = time.perf_counter()
    fd = fastdup.create(work_dir=str(work / f"fastdup_k{k}"), input_dir=str(images))
    fd.run(nearest_neighbors_k=k, threshold=MIN_SIMILARITY, overwrite=True, verbose=False)
    table = fd.similarity()
    seconds = time.perf_counter() - start
    edges = [[Path(a).stem, Path(b).stem, float(s)] for a, b, s in
             zip(table["filename_from"], table["filename_to"], table["distance"], strict=True)]
    return {"seconds": seconds, "edges": edges}


def main() -> None:
    images, work, out_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out = {"imagededup_phash": imagededup_edges("phash", images),
           "imagededup_dhash": imagededup_edges("dhash", images)}
    for k in (2, 10):
        out[f"fastdup_k{k}"] = fastdup_edges(k, images, work)
    out_file.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
