"""Low-bit angle codes trained in the loop (`train --bits`) against post-training Lloyd-Max codes, on Cranfield.

    python benchmarks/lowbit_training.py                                  # 128x4, 256x2, 128x2; seed 42
    python benchmarks/lowbit_training.py --seeds 42 43 44 --variants ptq ste noise
    python benchmarks/lowbit_training.py --configs 128x4 --variants ptq ste --epochs 5    # a quick look

Every head is distilled label-free on the 1,398 Cranfield documents with the settings of recipes/frontier.toml's
distilled rows (frozen offline all-MiniLM-L6-v2, pca mixing, batch 128, 25 epochs, head lr 3e-3, 512 random
columns, teacher temperature 0.05). Variants, per configuration QUBITSxBITS:
    ptq            a head trained on float32 angles, then per-qubit Lloyd-Max levels fitted on the corpus's angles
                   (issue 26's probe: 0.3895 at 128x4, 0.3742 at 128x2 NDCG@10 for the bundled head)
    ste, noise,    `train --bits BITS --quantizer ...`: the documents' side of the loss through the quantizer
    soft           (qcompress.training.quantizer), the levels refitted every epoch and kept in the model folder
    ste-learned    --code-levels learned (fitted once, then trained with the head)
    ste-warmup     --code-warmup 10 (10 epochs on float32 angles first)

Each is scored as search scores codes: the test queries' float32 angles against the corpus's decoded codes,
log-fidelity, full ranking (qcompress.codes.topk). Printed per variant: Cranfield test NDCG@10 (coded corpus),
NDCG@10 of the same head's float32 angles, and two label-free recalls@10 over the test queries: of the float32
angles' top 10 (what coding loses) and of the teacher's top 10 (MiniLM cosine; what the whole pipeline keeps).
Transductive, as the probe: levels, mixing and head are fitted on the very documents ranked. Then a mean (and
standard deviation over seeds) per variant. Pooled encoder outputs are cached (--cache-dir), so only the first run
encodes the corpus.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qcompress.cache import PooledCache, encode, pool_texts, resolve_cache_dir
from qcompress.codes import AngleCodes, topk as codes_topk
from qcompress.data import load_collection
from qcompress.evaluation import evaluate_run
from qcompress.model import load_model
from qcompress.search import topk
from qcompress.training import train

TRAINED = {"ste": {"quantizer": "ste"}, "noise": {"quantizer": "noise"}, "soft": {"quantizer": "soft"},
           "ste-learned": {"quantizer": "ste", "code_levels": "learned"},
           "ste-warmup": {"quantizer": "ste", "code_warmup": 10}}
VARIANTS = ("ptq", *TRAINED)
RANKED = 1000  # documents ranked per query (the whole corpus is 1,398)


class Judge:
    """Cranfield test: the queries (those with judgements), the corpus, and the teacher's top 10 per query."""

    def __init__(self, cache_dir: Path) -> None:
        self.collection = load_collection("cranfield", split="test")
        self.qids = [q for q in self.collection.queries if q in self.collection.qrels]
        self.doc_ids = list(self.collection.corpus)
        self.cache_dir = cache_dir
        self.teacher_top10: torch.Tensor | None = None

    def angles(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """(query angles, corpus angles), float32, through the pooled-output cache."""
        cache = PooledCache(self.cache_dir, model)
        queries = encode(model, [self.collection.queries[q] for q in self.qids], cache=cache, role="query")
        corpus = encode(model, [self.collection.corpus[d] for d in self.doc_ids], cache=cache, role="document")
        if self.teacher_top10 is None:  # the encoder is frozen: every model has the same teacher
            pooled = [F.normalize(pool_texts(model, texts, cache=cache, role=role), dim=-1) for texts, role in (
                ([self.collection.queries[q] for q in self.qids], "query"),
                ([self.collection.corpus[d] for d in self.doc_ids], "document"))]
            self.teacher_top10 = (pooled[0] @ pooled[1].T).topk(10, dim=1).indices
        return queries, corpus

    def ndcg10(self, scores: torch.Tensor, indices: torch.Tensor) -> float:
        run = {q: {self.doc_ids[j]: s for j, s in zip(indices[i].tolist(), scores[i].tolist())}
               for i, q in enumerate(self.qids)}
        mean, _ = evaluate_run(run, self.collection.qrels, self.collection.relevance_level, ["ndcg_cut_10"])
        return mean["ndcg_cut_10"]

    def measure(self, queries: torch.Tensor, corpus: torch.Tensor, codec: AngleCodes) -> dict:
        coded_scores, coded = codes_topk(queries, codec.encode(corpus), codec, RANKED)
        float_scores, floats = topk(queries, corpus, RANKED)
        return {"ndcg10": self.ndcg10(coded_scores, coded), "float_ndcg10": self.ndcg10(float_scores, floats),
                "recall10_float": _overlap(coded[:, :10], floats[:, :10]),
                "recall10_teacher": _overlap(coded[:, :10], self.teacher_top10)}


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of each row of `b` (10 documents) found in the same row of `a`."""
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / b.numel()


def train_head(work: Path, cache_dir: Path, dim: int, seed: int, epochs: int, **codes) -> Path:
    name = "-".join([f"d{dim}", f"s{seed}", f"e{epochs}", *(f"{k}{v}" for k, v in sorted(codes.items()))])
    return train({"output": str(work / name), "loss": "distill", "encoder": "minilm", "head": "quantum", "dim": dim,
                  "dataset": "cranfield", "seed": seed, "epochs": epochs, "cache_dir": str(cache_dir),
                  "device": "cpu", "overwrite": True, **codes})


def run_variant(judge: Judge, work: Path, args, variant: str, dim: int, bits: int, seed: int) -> dict:
    start = time.perf_counter()
    if variant == "ptq":
        folder = work / f"d{dim}-s{seed}-e{args.epochs}"
        if not (folder / "qcompress.json").is_file():  # one float head serves every bit width
            folder = train_head(work, judge.cache_dir, dim, seed, args.epochs)
        model = load_model(folder, device="cpu")
        queries, corpus = judge.angles(model)
        codec = AngleCodes.fit(corpus, bits)
    else:
        folder = train_head(work, judge.cache_dir, dim, seed, args.epochs, bits=bits, **TRAINED[variant])
        model = load_model(folder, device="cpu")
        queries, corpus = judge.angles(model)
        codec = model.codec
    row = {"variant": variant, "qubits": dim, "bits": bits, "bytes": codec.bytes_per_vector, "seed": seed,
           **judge.measure(queries, corpus, codec), "seconds": round(time.perf_counter() - start, 1)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["128x4", "256x2", "128x2"], help="QUBITSxBITS")
    parser.add_argument("--variants", nargs="+", default=["ptq", "ste", "noise"], choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--cache-dir", default=None, help="Pooled outputs (default: $QCOMPRESS_CACHE, else "
                        "~/.cache/qcompress).")
    parser.add_argument("--work", default=None, help="Where the model folders go (default: a temporary folder).")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lowbit-"))
    judge = Judge(resolve_cache_dir(args.cache_dir))
    configs = [tuple(int(x) for x in c.lower().split("x")) for c in args.configs]
    rows = []
    for seed in args.seeds:
        for dim, bits in configs:
            for variant in args.variants:
                row = run_variant(judge, work, args, variant, dim, bits, seed)
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                      flush=True)
    print(f"\nCranfield test ({len(judge.qids)} queries, full ranking), mean over seeds {args.seeds}; "
          f"{args.epochs} epochs", file=sys.stderr)
    print(f"{'qubits x bits':>13} {'bytes':>5} {'variant':<12} {'NDCG@10':>15} {'float NDCG@10':>13} "
          f"{'R@10 float':>10} {'R@10 teacher':>12}", file=sys.stderr)
    for dim, bits in configs:
        for variant in args.variants:
            mine = [r for r in rows if (r["qubits"], r["bits"], r["variant"]) == (dim, bits, variant)]
            ndcg = [r["ndcg10"] for r in mine]
            spread = f" ±{statistics.stdev(ndcg):.4f}" if len(ndcg) > 1 else ""
            print(f"{f'{dim} x {bits}':>13} {mine[0]['bytes']:>5} {variant:<12} "
                  f"{statistics.mean(ndcg):>8.4f}{spread:<7} {statistics.mean(r['float_ndcg10'] for r in mine):>13.4f} "
                  f"{statistics.mean(r['recall10_float'] for r in mine):>10.3f} "
                  f"{statistics.mean(r['recall10_teacher'] for r in mine):>12.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
