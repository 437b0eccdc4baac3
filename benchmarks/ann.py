"""Approximate fidelity search (IVF over [cos; sin] features + exact re-ranking) vs exact search, in one process.

    python benchmarks/ann.py                                   # 10M x 128 clustered, uint8 codes, 100 queries
    python benchmarks/ann.py --size 1000000 --nprobe 4,8,16,32 --rerank 100,300

Data: the clustered synthetic corpus of benchmarks/search.py (64 latent factors mixed into n dims, N/100 cluster
centres, angles = encode_angles(u)), generated a million rows at a time and kept only as 8-bit codes; queries
are corpus rows plus --query-noise in the pre-tanh space. The corpus is written to a Parquet file with the
library's writer, indexed with `qcompress.search.approximate.build_index` (the path of `qcompress index build`), then:
  exact   FidelityIndex(codes, corpus_codes=True, cache_features=False).search: the exact top-k from the codes
          in memory (features recomputed a chunk at a time: the cached features would be 2n floats a row)
  ivf     ApproximateIndex.search at each --nprobe and --rerank (candidates re-ranked exactly), median of --repeats
Prints each ivf run's recall@k against exact and its speed as a ratio (exact seconds / ivf seconds), the build
time, and the process's peak memory (VmHWM) against --memory-limit-gib.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from qcompress.formats import EmbeddingWriter
from qcompress.quantization import decode_codes
from qcompress.quantum import encode_angles
from qcompress.search import FidelityIndex
from qcompress.search.approximate import ApproximateIndex, build_index, recall_at_k

PIECE = 1 << 20


def clustered_codes(size: int, dim: int, m: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries (m, dim) float angles, corpus (size, dim) uint8 codes), generated PIECE rows at a time."""
    g = torch.Generator().manual_seed(seed)
    latent = 64
    mix = torch.randn(latent, dim, generator=g) / math.sqrt(latent)
    centres = torch.randn(max(1, size // 100), latent, generator=g)
    sources = torch.randint(0, size, (m,), generator=g)
    codes = torch.empty(size, dim, dtype=torch.uint8)
    queries = torch.empty(m, dim)
    for start in range(0, size, PIECE):
        end = min(size, start + PIECE)
        members = torch.randint(0, len(centres), (end - start,), generator=g)
        z = centres[members] + 0.5 * torch.randn(end - start, latent, generator=g)
        u = z @ mix + 0.3 * torch.randn(end - start, dim, generator=g)
        codes[start:end] = torch.round(encode_angles(u).double() / math.pi * 255).clamp(0, 255).to(torch.uint8)
        mine = ((sources >= start) & (sources < end)).nonzero().flatten()
        queries[mine] = encode_angles(u[sources[mine] - start] + noise * torch.randn(len(mine), dim, generator=g))
    return queries, codes


def peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--query-noise", type=float, default=0.3)
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default: about sqrt(size))")
    parser.add_argument("--nprobe", default="8,16,32,64")
    parser.add_argument("--rerank", default="100", help="candidates re-ranked exactly (comma-separated values)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit-gib", type=float, default=24.0)
    parser.add_argument("--folder", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        folder = Path(folder)
        t0 = time.perf_counter()
        queries, codes = clustered_codes(args.size, args.dim, args.queries, args.query_noise)
        meta = {"encoder": "synthetic", "head": "none", "similarity": "fidelity"}
        corpus = folder / "corpus.parquet"
        with EmbeddingWriter(corpus, dim=args.dim, metadata=meta, encoding="uint8", row_group_size=1 << 16) as w:
            for start in range(0, args.size, 1 << 16):
                part = codes[start : start + (1 << 16)]
                w.write([str(i) for i in range(start, start + len(part))], decode_codes(part))
        print(f"data: {args.size:,} x {args.dim} uint8 codes, written to Parquet in {time.perf_counter() - t0:.0f} s "
              f"(peak memory so far {peak_gib():.1f} GiB)",
              flush=True)
        info = build_index(corpus, folder / "corpus.index", nlist=args.nlist)
        print(f"index build: nlist {info.nlist}, k-means {info.train_seconds:.0f} s, adding {info.add_seconds:.0f} s "
              f"(peak memory so far {peak_gib():.1f} GiB)",
              flush=True)
        index = ApproximateIndex(folder / "corpus.index")

        exact_index = FidelityIndex(codes, corpus_codes=True, cache_features=False)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            truth = exact_index.search(queries, args.k)[1]
            times.append(time.perf_counter() - start)
        exact = statistics.median(times)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nN={args.size:,} n={args.dim} queries={args.queries} k={args.k} clustered, query noise "
              f"{args.query_noise} (torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, load average {load})")
        print(f"  exact    {exact:8.3f} s   1.00x   recall 1.000   (peak memory so far {peak_gib():.1f} GiB)")
        for nprobe in (int(x) for x in args.nprobe.split(",")):
            for rerank in (int(x) for x in args.rerank.split(",")):
                index.search_rows(queries, args.k, nprobe=nprobe, rerank=rerank)  # warm-up
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    _, found = index.search_rows(queries, args.k, nprobe=nprobe, rerank=rerank)
                    times.append(time.perf_counter() - start)
                took = statistics.median(times)
                print(f"  ivf nprobe {nprobe:<4} rerank {rerank:<4} {took:8.3f} s {exact / took:7.1f}x faster   "
                      f"recall@{args.k} {recall_at_k(found, truth):.4f}", flush=True)
        peak = peak_gib()
        print(f"  peak memory {peak:.1f} GiB ({'within' if peak <= args.memory_limit_gib else 'OVER'} "
              f"{args.memory_limit_gib:g} GiB)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
