"""Training speed through the frozen prefix: examples/s of `qcompress.training.train` with the frozen layers run
once per text (frozen_prefix "memory", the default) against the whole encoder every step ("off"), same process.

    python benchmarks/train_speed.py                            # MiniLM L = 1, 2; all-mpnet-base-v2 L = 1, 4
    python benchmarks/train_speed.py --mpnet /tmp/mpnet --batch-size 16 --max-length 256
    python benchmarks/train_speed.py --busy                     # the same with one core kept busy meanwhile

all-mpnet-base-v2 comes from `bash ../shared/data/get-mpnet.sh /tmp/mpnet` (--mpnet, else $QCOMPRESS_MPNET,
else /tmp/mpnet); without it those rows are skipped. Data: Cranfield's training queries, one judged-relevant
document each and 5 seeded random unjudged documents as negatives (speed depends on text lengths, not on which
documents are negatives), two epochs. Per (encoder, L) it prints the median examples/s of the steps:
    off     the whole encoder forward every step (first step left out: warm-up)
    cold    frozen prefix, first epoch: each text's frozen layers run once, on that text alone, then the top L
    warm    frozen prefix, second epoch: every text seen before, a step runs only the top L layers
and the ratios cold/off and warm/off. Step times exclude checkpoints (rows of the training log). Ratios, not
examples/s, are what to compare across machines.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from qcompress.data import Collection, load_collection, positives
from qcompress.encoder import offline_minilm_path
from qcompress.training import train


def collection(queries: int, negatives: int, seed: int = 0) -> Collection:
    """Cranfield's first `queries` training queries, each with its first positive and seeded random negatives."""
    full = load_collection("cranfield", "train")
    rng, doc_ids = random.Random(seed), sorted(full.corpus)
    chosen = [q for q in full.queries if positives(full.qrels[q])][:queries]
    qrels, hard = {}, {}
    for q in chosen:
        qrels[q] = {positives(full.qrels[q])[0]: 1}
        judged = set(full.qrels[q])
        hard[q] = [d for d in rng.sample(doc_ids, negatives + len(judged)) if d not in judged][:negatives]
    return Collection("cranfield-speed", full.corpus, {q: full.queries[q] for q in chosen}, qrels, "train",
                      hard_negatives=hard)


def step_rates(encoder: str, layers: int, mode: str, data: Collection, args, folder: Path) -> list[tuple[int, float]]:
    """(epoch, examples/s) of every step of a two-epoch run."""
    rows = []
    train({"output": str(folder / f"{Path(encoder).name}-{layers}-{mode}"), "encoder": encoder, "head": "quantum",
           "train_layers": layers, "frozen_prefix": mode, "negatives": args.negatives, "batch_size": args.batch_size,
           "max_length": args.max_length, "epochs": 2, "cache_dir": str(folder / "cache"), "device": "cpu"},
          collection=data, callback=lambda row: rows.append(row) if row["kind"] == "step" else None)
    return [(r["epoch"], r["examples_per_s"]) for r in rows]


def measure(name: str, encoder: str, layers: int, data: Collection, args, folder: Path) -> None:
    off = [rate for _, rate in step_rates(encoder, layers, "off", data, args, folder)][1:]
    prefix = step_rates(encoder, layers, "memory", data, args, folder)
    cold = statistics.median(rate for epoch, rate in prefix if epoch == 1)
    warm = statistics.median(rate for epoch, rate in prefix if epoch == 2)
    base = statistics.median(off)
    print(f"{name:<18} L={layers:<2} off {base:7.2f}  cold {cold:7.2f}  warm {warm:7.2f} examples/s   "
          f"cold/off {cold / base:5.2f}x  warm/off {warm / base:5.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpnet", default=os.environ.get("QCOMPRESS_MPNET", "/tmp/mpnet"))
    parser.add_argument("--queries", type=int, default=24, help="training examples per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process meanwhile")
    args = parser.parse_args()
    encoders = [("all-MiniLM-L6-v2", str(offline_minilm_path() or "minilm"), (1, 2))]
    if (Path(args.mpnet) / "config.json").is_file():
        encoders.append(("all-mpnet-base-v2", args.mpnet, (1, 4)))
    else:
        print(f"all-mpnet-base-v2: skipped, {args.mpnet} does not hold it (bash ../shared/data/get-mpnet.sh DIR)")
    data = collection(args.queries, args.negatives)
    print(f"{len(data.queries)} examples x 2 epochs, batch {args.batch_size}, {args.negatives} negatives, max length "
          f"{args.max_length}, {torch.get_num_threads()} thread(s), one core busy: {'yes' if args.busy else 'no'}")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, encoder, layer_counts in encoders:
                for layers in layer_counts:
                    measure(name, encoder, layers, data, args, Path(tmp))
    finally:
        if busy is not None:
            busy.kill()


if __name__ == "__main__":
    main()
