"""Workspaces written by pairsift 0.1 (format 1) opened by this one: renamed in place.

Format 1 named stages differently (``clip_score_filter``, ``semdedup``...) and kept one decision
file per stage, in uid order. Format 2 uses the registry's names and one decision file per
part, rows in part order. Parts, embeddings, signals and errors are reused as they are: nothing
is recomputed. Migrated runs record no inputs, so a stage that depends on one treats it as
stale and runs it again when asked to (map stages only for parts they lack).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

RENAMED = {
    "clip_score": "score", "clip_score_filter": "filter-clip-score",
    "exact_dedup": "dedup-exact", "perceptual_dedup": "dedup-perceptual",
    "semdedup": "dedup-semantic", "fairdedup": "dedup-fair", "parrot": "parrot-spot",
    "parrot_relative": "parrot-relative", "parrot_filter": "filter-parrot",
    "text_dominated_filter": "filter-text-dominated", "simple_fix_filter": "filter-simple-fix",
}
OPTIONS_RENAMED = {"top": "keep_fraction", "cotr_threshold": "threshold",
                   "max_text_area": "threshold", "clip_threshold": "threshold",
                   "groups": "subgroups"}


def migrate_v1(root: Path) -> None:
    """Rewrite a format-1 workspace as format 2 (call with the manifest lock held)."""
    from .stage import get_stage
    from .workspace import MANIFEST, atomic_write, write_table

    path = root / MANIFEST
    manifest = json.loads(path.read_text())
    if manifest.get("format") != 1:
        return  # another process migrated it while we waited for the lock
    for old, new in RENAMED.items():
        if (root / "signals" / old).is_dir():
            os.replace(root / "signals" / old, root / "signals" / new)
    parts = sorted(int(p) for p in manifest["parts"])
    for file in sorted((root / "decisions").glob("*.parquet")):
        stage = RENAMED.get(file.stem, file.stem)
        table = pq.read_table(file)
        run = table.column("config_hash")[0].as_py() if table.num_rows else "migrated"
        for part in parts:
            uids = pq.read_table(root / "parts" / f"part-{part:05d}.parquet",
                                 columns=["uid"]).column("uid")
            rows = table.take(pc.index_in(uids, table.column("uid")))
            write_table(root / "decisions" / stage / run / f"part-{part:05d}.parquet",
                        rows.set_column(1, "stage", pc.replace_substring(rows.column("stage"),
                                                                         file.stem, stage)))
        manifest["current"][file.stem] = run
        file.unlink()
    for record in manifest["runs"]:
        record["stage"] = RENAMED.get(record["stage"], record["stage"])
        names = {p.name for p in get_stage(record["stage"]).params} if record["stage"] in (
            *RENAMED.values(), "embed", "hashes", "cluster") else set()
        options = {OPTIONS_RENAMED.get(k, k): v for k, v in record.get("config", {}).items()}
        record["options"] = {k: v for k, v in options.items() if k in names}
        record["inputs"] = {}
        record["status"] = "finished" if record.get("finished") else "running"
    manifest["current"] = {RENAMED.get(s, s): r for s, r in manifest["current"].items()}
    manifest.update(format=2, recipes=[])
    blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))
