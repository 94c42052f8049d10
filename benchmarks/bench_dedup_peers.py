"""Near-duplicate detection: pairsift's dedup stages against imagededup and fastdup, in one run.

Run by hand (not a test):

    python benchmarks/bench_dedup_peers.py --seed 1            # report seed
    python benchmarks/bench_dedup_peers.py --seed 0 --no-peers # tuning seed, pairsift only

Corpus: :func:`pairsift.synth.dedup.make_dedup_corpus` (hard negatives: different text pages
on plain backgrounds, different skies/seas/snow fields, disjoint quarters of one texture; copies
by 14 transforms). Defaults were chosen on seeds 0 and 2; report others.

Peers run in their own interpreter (``--peers-python``, default benchmarks/_work/peers-venv:
``python -m venv benchmarks/_work/peers-venv && benchmarks/_work/peers-venv/bin/pip install
imagededup fastdup``), never as project dependencies. Each tool gives similarity edges with its
own score; a configuration is a threshold on that score.

Scores, pair level against the truth's groups:

- components: every pair inside one connected component of the predicted edges counts as a
  predicted duplicate pair (what a user gets who merges matches into groups);
- drop → of: pairsift's decisions, each dropped sample paired with the sample it names ("of");
  recall counts the copies dropped as a duplicate of their own group (Σ |group| − 1 to find).

Per transform: the share of copies made by that transform that end in their original's
component. Wall times are each tool's own (pairsift: the stage calls, embedding included once).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow.parquet as pq

import pairsift
from pairsift import Workspace
from pairsift.synth.dedup import DEDUP_TRANSFORMS, make_dedup_corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, machine  # noqa: E402

PEERS_PYTHON = WORK / "peers-venv" / "bin" / "python"
TARGET_PRECISION = 0.99
EPS_SWEEP = (0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
PHASH_SWEEP = (4, 6, 8, 10, 12)
GUARD_PHASH_SWEEP = (12, 16, 20, 64)
HAMMING_SWEEP = (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
SIMILARITY_SWEEP = (0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.9, 0.85, 0.8)
Edges = list[tuple[str, str]]


class Truth:
    """Groups of the corpus and pair-level scoring of predicted edges."""

    def __init__(self, table_path: Path):
        rows = pq.read_table(table_path).to_pylist()
        self.group = {r["key"]: r["group"] for r in rows}
        self.transform = {r["key"]: r["transform"] for r in rows}
        sizes = Counter(self.group.values())
        self.true_pairs = sum(n * (n - 1) // 2 for n in sizes.values())
        self.redundant = sum(n - 1 for n in sizes.values())

    def components(self, edges: Iterable[tuple[str, str]]) -> dict:
        root = _union_find(self.group, edges)
        members: dict[str, Counter] = defaultdict(Counter)
        for key, group in self.group.items():
            members[root(key)][group] += 1
        predicted = sum(_pairs(sum(c.values())) for c in members.values())
        correct = sum(_pairs(n) for c in members.values() for n in c.values())
        found = Counter(t for k, t in self.transform.items()
                        if t is not None and root(k) == root(self.group[k]))
        return {"precision": correct / predicted if predicted else 1.0,
                "recall": correct / self.true_pairs, "pairs": predicted,
                "false_pairs": predicted - correct,
                "per_transform": {t: found[t] / n for t, n in self._copies().items()}}

    def drops(self, pairs: Edges) -> dict:
        correct = sum(self.group[a] == self.group[b] for a, b in pairs)
        return {"precision": correct / len(pairs) if pairs else 1.0,
                "recall": correct / self.redundant, "dropped": len(pairs)}

    def _copies(self) -> Counter:
        return Counter(t for t in self.transform.values() if t is not None)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _union_find(keys: Iterable[str], edges: Iterable[tuple[str, str]]) -> Callable[[str], str]:
    parent = {k: k for k in keys}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in edges:
        parent[root(a)] = root(b)
    return root


# -- pairsift ---------------------------------------------------------------------------------
def timed(fn: Callable, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs, progress=False)
    return out, time.perf_counter() - start


def drop_pairs(ws_dir: Path, stages: Iterable[str]) -> Edges:
    """(dropped key, "of" key) of the current decisions of ``stages``."""
    ws = Workspace.open(ws_dir)
    key = {r["uid"]: r["key"] for _, t in ws.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    out = []
    for stage in stages:
        for d in ws.stage_decisions(stage).to_pylist():
            if d["verdict"] == "drop":
                out.append((key[d["uid"]], key[json.loads(d["evidence"])["of"]]))
    return out


def run_pairsift(corpus, work: Path, truth: Truth) -> list[dict]:
    base = work / "ws-base"
    _, t_ingest = timed(pairsift.ingest, corpus.images, base, captions=corpus.captions)
    _, t_embed = timed(pairsift.embed, base)
    rows = []

    def record(method: str, config: str, stages: list[str], ws: Path, seconds: float) -> None:
        pairs = drop_pairs(ws, stages)
        rows.append({"tool": "pairsift", "method": method, "config": config,
                     "seconds": seconds, "components": truth.components(pairs),
                     "drops": truth.drops(pairs)})

    hashes = _copy(base, work / "ws-hash")
    _, t_exact = timed(pairsift.dedup_exact, hashes)
    record("exact", "default", ["dedup-exact"], hashes, t_exact)
    both = ["dedup-exact", "dedup-perceptual"]
    # The default first: a finished run with the same options is not made current again.
    _, t = timed(pairsift.dedup_perceptual, hashes)
    record("exact+perceptual", "default", both, hashes, t_exact + t)
    _, t = timed(pairsift.dedup_perceptual, hashes, dihedral=False)
    record("exact+perceptual", "no dihedral", both, hashes, t_exact + t)
    for d in PHASH_SWEEP[1:]:
        _, t = timed(pairsift.dedup_perceptual, hashes, max_phash=d, max_dhash=d + 2)
        record("exact+perceptual", f"max_phash={d},max_dhash={d + 2}", both, hashes,
               t_exact + t)

    semantic = _copy(base, work / "ws-sem")
    _, t_cluster = timed(pairsift.cluster, semantic)
    for eps in (None, *EPS_SWEEP):
        _, t = timed(pairsift.dedup_semantic, semantic, eps=eps)
        record("semantic", "default" if eps is None else f"eps={eps}", ["dedup-semantic"],
               semantic, t_embed + t_cluster + t)

    recipe = _copy(base, work / "ws-recipe")
    _, t_hash = timed(pairsift.dedup_exact, recipe)
    _, t_p = timed(pairsift.dedup_perceptual, recipe)
    _, t_cluster = timed(pairsift.cluster, recipe)
    _, t_text = timed(pairsift.text_detect, recipe)
    fixed = t_hash + t_p + t_embed + t_cluster
    stages = ["dedup-exact", "dedup-perceptual", "dedup-semantic"]
    for eps in EPS_SWEEP:
        _, t = timed(pairsift.dedup_semantic, recipe, eps=eps)
        record("exact+perceptual+semantic", f"eps={eps}", stages, recipe, fixed + t)
    for max_phash in GUARD_PHASH_SWEEP:
        for eps in EPS_SWEEP:
            _, t = timed(pairsift.dedup_semantic, recipe, eps=eps, max_phash=max_phash,
                         text_guard=True)
            record("recommended", f"eps={eps},max_phash={max_phash},text_guard", stages,
                   recipe, fixed + t_text + t)
    print(f"pairsift: text-detect {t_text:.1f} s", file=sys.stderr)
    print(f"pairsift: ingest {t_ingest:.1f} s, embed {t_embed:.1f} s", file=sys.stderr)
    return rows


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- peers ------------------------------------------------------------------------------------
def run_peers(corpus, work: Path, truth: Truth, python: Path) -> list[dict]:
    out_file = work / "peer-edges.json"
    worker = Path(__file__).resolve().parent / "_dedup_peers_worker.py"
    subprocess.run([str(python), str(worker), str(corpus.images), str(work), str(out_file)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = json.loads(out_file.read_text())
    rows = []
    for name, result in found.items():
        tool, method = name.split("_", 1)
        hamming = tool == "imagededup"
        for t in HAMMING_SWEEP if hamming else SIMILARITY_SWEEP:
            edges = [(a, b) for a, b, s in result["edges"] if (s <= t if hamming else s >= t)]
            rows.append({"tool": tool, "method": method,
                         "config": f"{'max_distance' if hamming else 'similarity'}={t}",
                         "seconds": result["seconds"], "components": truth.components(edges)})
    return rows


# -- report -----------------------------------------------------------------------------------
def best_at_precision(rows: list[dict], target: float) -> dict[tuple[str, str], dict]:
    """Per (tool, method): the configuration with the highest component recall at
    precision ≥ target."""
    best: dict[tuple[str, str], dict] = {}
    for row in rows:
        c = row["components"]
        key = (row["tool"], row["method"])
        if c["precision"] >= target and (key not in best or
                                         c["recall"] > best[key]["components"]["recall"]):
            best[key] = row
    return best


def markdown(rows: list[dict], truth: Truth) -> str:
    lines = [f"{len(truth.group)} images, {truth.true_pairs} true duplicate pairs, "
             f"{truth.redundant} redundant copies", "",
             "| tool | method | config | components P | components R | false pairs | "
             "drop→of P | drop→of R | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, d = r["components"], r.get("drops")
        drop = f"{d['precision']:.3f} | {d['recall']:.3f}" if d else "— | —"
        lines.append(f"| {r['tool']} | {r['method']} | {r['config']} | {c['precision']:.3f} | "
                     f"{c['recall']:.3f} | {c['false_pairs']} | {drop} | {r['seconds']:.1f} |")
    best = best_at_precision(rows, TARGET_PRECISION)
    lines += ["", f"Best configuration per method at components precision ≥ {TARGET_PRECISION}, "
                  "and its recall per transform:", "",
              "| tool | method | config | P | R | " + " | ".join(DEDUP_TRANSFORMS) + " |",
              "|---|---|---|---|---|" + "---|" * len(DEDUP_TRANSFORMS)]
    for (tool, method), r in sorted(best.items(), key=lambda kv: -kv[1]["components"]["recall"]):
        c = r["components"]
        per = " | ".join(f"{c['per_transform'].get(t, 0):.2f}" for t in DEDUP_TRANSFORMS)
        lines.append(f"| {tool} | {method} | {r['config']} | {c['precision']:.3f} | "
                     f"{c['recall']:.3f} | {per} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = parser.parse_args()
    work = WORK / f"dedup-peers-seed{args.seed}"
    shutil.rmtree(work, ignore_errors=True)
    corpus = make_dedup_corpus(work / "corpus", args.seed, scale=args.scale)
    truth = Truth(corpus.root / "truth.parquet")
    rows = run_pairsift(corpus, work, truth)
    if not args.no_peers:
        rows += run_peers(corpus, work, truth, args.peers_python)
    print(f"seed {args.seed}, scale {args.scale}; {machine()}\n")
    print(markdown(rows, truth))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
