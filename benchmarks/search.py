"""Exact fidelity search vs a flat inner-product search over the same data, timed in one process.

    python benchmarks/search.py                                   # N = 100k and 1M, n = 128, 100 queries, k = 10
    python benchmarks/search.py --sizes 100000 --data random,clustered,correlated --repeats 5

Methods, each timed as the median of --repeats runs after a warm-up, interleaved so that load from other
processes hits them alike, and printed as a ratio to flat-ip (ratios, not seconds, compare across machines):
  flat-ip      what users compare with: (m, 2n) @ (2n, N) float32 matmul of [cos; sin] features + torch.topk
               (corpus features precomputed, as a vector index holds them; faiss IndexFlatIP when installed)
  index        FidelityIndex(corpus).search: exact top-k by log-fidelity, corpus features cached once
  topk         topk(queries, corpus, k): the same, one-shot (corpus features recomputed block by block)
  index-uint8, topk-uint8: the same on 8-bit codes round(theta/pi*255)
  brute-force  brute_force_topk (chunked pairwise_log_fidelity), timed on the checked queries only
Recall@k and bit-identity (scores and indices) against brute_force_topk on --check queries (all of them up to
200k documents, 10 beyond: brute force takes ~1 s per query per million documents). Peak memory: each method
once in a fresh subprocess, growth of the peak RSS (VmHWM) beyond the loaded data (index methods include
building; ru_maxrss is no use here: Linux carries the parent's peak over into the child).

Data (--data):
  random      angles uniform in [0, pi]: every document far from every query, the worst case for the bounds
  clustered   realistic: correlated gaussian embeddings (64 latent factors mixed into n dims) around N/100
              cluster centres, angles = encode_angles(u); queries are noisy copies of corpus rows, so each
              has near neighbours (its cluster)
  correlated  the same without clusters: each query has one near neighbour (its source row); the rest of its
              top-k lies in the bulk, which is nearly as hard as random
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qcompress.quantum import encode_angles
from qcompress.search import FidelityIndex, _features, brute_force_topk, topk

METHODS = ("flat-ip", "index", "topk", "index-uint8", "topk-uint8")


def make_data(kind: str, size: int, dim: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.rand(m, dim, generator=g) * math.pi, torch.rand(size, dim, generator=g) * math.pi
    latent = 64
    mix = torch.randn(latent, dim, generator=g) / math.sqrt(latent)
    if kind == "clustered":
        centres = torch.randn(max(1, size // 100), latent, generator=g)
        members = torch.randint(0, len(centres), (size,), generator=g)
        z = centres[members] + 0.5 * torch.randn(size, latent, generator=g)
        u = z @ mix + 0.3 * torch.randn(size, dim, generator=g)
    elif kind == "correlated":
        u = torch.randn(size, latent, generator=g) @ mix + 0.5 * torch.randn(size, dim, generator=g)
    else:
        raise SystemExit(f"unknown --data {kind!r}; choose random, clustered or correlated")
    rows = torch.randint(0, size, (m,), generator=g)
    queries = encode_angles(u[rows] + 0.3 * torch.randn(m, dim, generator=g))
    return queries, encode_angles(u)


def quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.double() / math.pi * 255).clamp(0, 255).to(torch.uint8)


def flat_ip(queries: torch.Tensor, features: torch.Tensor, k: int):
    return (_features(queries) @ features.T).topk(k, dim=1)


def faiss_index(features: torch.Tensor):
    try:
        import faiss  # noqa: F401
    except ImportError:
        return None
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(features.numpy())
    return index


def run_method(name: str, queries, corpus, codes, k, prepared):
    """Run one method; `prepared` holds what an index keeps between searches (built outside the timing)."""
    if name == "flat-ip":
        return flat_ip(queries, prepared["features"], k)
    if name == "faiss-ip":
        return prepared["faiss"].search(_features(queries).numpy(), k)
    if name == "index":
        return prepared["index"].search(queries, k)
    if name == "index-uint8":
        return prepared["index-uint8"].search(queries, k)
    if name == "topk":
        return topk(queries, corpus, k)
    if name == "topk-uint8":
        return topk(queries, codes, k, corpus_codes=True)
    raise ValueError(name)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_probe(name: str, folder: str, k: int) -> None:
    """Subprocess: load the data, then report the peak RSS growth (MB) of building + running `name`."""
    queries = torch.from_numpy(np.load(Path(folder) / "queries.npy"))
    corpus = torch.from_numpy(np.load(Path(folder) / "corpus.npy"))
    codes = torch.from_numpy(np.load(Path(folder) / "codes.npy"))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    prepared = {}
    if name == "flat-ip":
        prepared["features"] = FidelityIndex(corpus, candidates=1).features
    elif name == "index":
        prepared["index"] = FidelityIndex(corpus)
    elif name == "index-uint8":
        prepared["index-uint8"] = FidelityIndex(codes, corpus_codes=True)
    run_method(name, queries, corpus, codes, k, prepared)
    print((_status_kb("VmHWM") - before) / 1024)


def peak_memory(methods, queries, corpus, codes, k) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "queries.npy", queries.numpy())
        np.save(Path(folder) / "corpus.npy", corpus.numpy())
        np.save(Path(folder) / "codes.npy", codes.numpy())
        for name in methods:
            done = subprocess.run(
                [sys.executable, __file__, "--memory-probe", name, folder, "--k", str(k)],
                capture_output=True, text=True, check=True,
            )
            out[name] = float(done.stdout.strip().splitlines()[-1])
    return out


def recall_and_identity(result, reference) -> tuple[float, bool]:
    scores, indices = (torch.as_tensor(np.asarray(t)) for t in result)
    ref_scores, ref_indices = reference
    hits = sum(len(set(a) & set(b)) for a, b in zip(indices.tolist(), ref_indices.tolist()))
    identical = torch.equal(indices, ref_indices) and torch.equal(scores.float(), ref_scores)
    return hits / ref_indices.numel(), identical


def bench(kind: str, size: int, args) -> None:
    queries, corpus = make_data(kind, size, args.dim, args.queries)
    codes = quantize(corpus)
    k = args.k
    prepared = {
        "index": FidelityIndex(corpus),
        "index-uint8": FidelityIndex(codes, corpus_codes=True),
    }
    prepared["features"] = prepared["index"].features  # flat-ip searches the very same features
    methods = list(METHODS)
    faiss = faiss_index(prepared["features"])
    if faiss is not None:
        prepared["faiss"] = faiss
        methods.insert(1, "faiss-ip")

    for name in methods:  # warm-up
        run_method(name, queries, corpus, codes, k, prepared)
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name in methods:
            start = time.perf_counter()
            run_method(name, queries, corpus, codes, k, prepared)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    check = args.queries if (args.check is None and size <= 200_000) else min(args.queries, args.check or 10)
    sub = queries[:check]
    start = time.perf_counter()
    reference = brute_force_topk(sub, corpus, k)
    brute_time = time.perf_counter() - start
    reference_codes = brute_force_topk(sub, codes, k, corpus_codes=True)
    quality = {}
    for name in methods:
        result = run_method(name, sub, corpus, codes, k, prepared)
        quality[name] = recall_and_identity(result, reference_codes if name.endswith("uint8") else reference)
    memory = {} if args.no_memory else peak_memory(methods, queries, corpus, codes, k)

    prepared["index"].search(queries, k)
    stats = prepared["index"].last_stats
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nN={size:,} n={args.dim} queries={args.queries} k={k} data={kind} "
          f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load})")
    print(f"  {'method':<12} {'median s':>9} {'/ flat-ip':>9} {'peak MB':>8} {'recall@k':>9}  identical to brute force")
    for name in methods:
        mem = f"{memory[name]:8.0f}" if name in memory else f"{'-':>8}"
        recall, same = quality[name]
        same_text = "(approximate by design)" if name in ("flat-ip", "faiss-ip") else ("yes" if same else "NO")
        ratio = median[name] / median["flat-ip"]
        print(f"  {name:<12} {median[name]:9.3f} {ratio:9.2f} {mem} {recall:9.3f}  {same_text}")
    per_query = brute_time / check / (median["flat-ip"] / args.queries)
    print(f"  brute-force  {brute_time:9.3f} s on {check} of {args.queries} queries: "
          f"{per_query:.0f}x flat-ip per query")
    print(f"  index: {stats['seed_certified']}/{args.queries} queries certified by the seed; "
          f"{stats['refined_pairs']:,} pairs refined ({stats['refined_pairs'] / (args.queries * size):.1%} of all), "
          f"{stats['exact_pairs']:,} scored exactly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated corpus sizes")
    parser.add_argument("--data", default="random,clustered", help="random, clustered, correlated (comma-separated)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", type=int, default=None, help="queries checked against brute force")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    parser.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.k)
        return
    for size in (int(s) for s in args.sizes.split(",")):
        for kind in args.data.split(","):
            bench(kind, size, args)


if __name__ == "__main__":
    main()
