"""Exact fidelity search vs a flat inner-product search over the same data, timed in one process, idle and with
one core busy.

    python benchmarks/search.py                                      # N = 1M, n = 128, 100 queries, k = 10
    python benchmarks/search.py --sizes 100000 --data random --repeats 5 --conditions idle
    python benchmarks/search.py --query-noise 0.7                    # queries farther from their source rows

Methods, each timed as the median of --repeats runs after a warm-up, interleaved so that load from other
processes hits them alike, and printed as a ratio to flat-ip (ratios, not seconds, compare across machines):
  flat-ip          what users compare with: (m, 2n) @ (2n, N) float32 matmul of [cos; sin] features + torch.topk
                   (corpus features precomputed, as a vector index holds them)
  flat-ip-oneshot  the same with the features computed from the stored angles at each search (what a flat
                   search over an angle file costs): the baseline of the one-shot and streaming paths
  faiss-ip         faiss IndexFlatIP over the same features (when faiss is installed)
  index            FidelityIndex(corpus).search: exact top-k by log-fidelity, corpus features cached once
  topk             topk(queries, corpus, k): the same, one-shot (features computed a chunk at a time)
  index-uint8, topk-uint8: the same on 8-bit codes round(theta/pi*255)
  flat-ip-stream   the flat search over that Parquet file, read as search_parquet reads it (checked, ids unique,
                   next batch read ahead), features + matmul + running top-k per batch: the streaming baseline
  parquet          search_parquet over a Parquet file of the float32 angles (the path of `qcompress score`),
                   reading included
The "/ own" column is each exact method's ratio to the flat search doing the same work around it: flat-ip for
the index methods, flat-ip-oneshot for topk, flat-ip-stream for parquet.
Conditions (--conditions): idle (nothing started by the benchmark) and busy (one `python -c "while True: pass"`
process running while the round is timed; the 2-core machine then has one core for the search).
Recall@k and bit-identity (scores and indices) against brute_force_topk on --check queries. Peak memory: each
method once in a fresh subprocess, growth of the peak RSS (VmHWM) beyond the loaded data (index methods include
building).

Data (--data):
  random      angles uniform in [0, pi]: every document far from every query, the worst case for the bounds
  clustered   correlated gaussian embeddings (64 latent factors mixed into n dims) around N/100 cluster centres,
              angles = encode_angles(u); queries are noisy copies of corpus rows (--query-noise in the pre-tanh
              space), so each has near neighbours (its cluster)
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

from qcompress.formats import EmbeddingWriter
from qcompress.formats.embeddings import scan_embeddings
from qcompress.quantum import encode_angles
from qcompress.search import FidelityIndex, brute_force_topk, search_parquet, topk
from qcompress.search.features import angle_features
from qcompress.search.stream import read_ahead

METHODS = ("flat-ip", "flat-ip-oneshot", "flat-ip-stream", "index", "topk", "index-uint8", "topk-uint8", "parquet")
BASELINE = {"index": "flat-ip", "index-uint8": "flat-ip", "topk": "flat-ip-oneshot", "topk-uint8": "flat-ip-oneshot",
            "parquet": "flat-ip-stream"}
BUSY = "while True: pass"


def make_data(kind: str, size: int, dim: int, m: int, seed: int = 0, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.rand(m, dim, generator=g) * math.pi, torch.rand(size, dim, generator=g) * math.pi
    latent = 64
    mix = torch.randn(latent, dim, generator=g) / math.sqrt(latent)
    if kind == "clustered":
        centres = torch.randn(max(1, size // 100), latent, generator=g)
        members = torch.randint(0, len(centres), (size,), generator=g)
        u = torch.empty(size, dim)
        for s in range(0, size, 1 << 20):  # in pieces: no (size, latent) temporaries beyond a million rows
            e = min(size, s + (1 << 20))
            z = centres[members[s:e]] + 0.5 * torch.randn(e - s, latent, generator=g)
            u[s:e] = z @ mix + 0.3 * torch.randn(e - s, dim, generator=g)
    elif kind == "correlated":
        u = torch.empty(size, dim)
        for s in range(0, size, 1 << 20):
            e = min(size, s + (1 << 20))
            u[s:e] = torch.randn(e - s, latent, generator=g) @ mix + 0.5 * torch.randn(e - s, dim, generator=g)
    else:
        raise SystemExit(f"unknown --data {kind!r}; choose random, clustered or correlated")
    rows = torch.randint(0, size, (m,), generator=g)
    queries = encode_angles(u[rows] + noise * torch.randn(m, dim, generator=g))
    return queries, encode_angles(u)


def quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.double() / math.pi * 255).clamp(0, 255).to(torch.uint8)


def flat_ip(queries: torch.Tensor, features: torch.Tensor, k: int):
    return (angle_features(queries) @ features.T).topk(k, dim=1)


def flat_ip_oneshot(queries: torch.Tensor, corpus: torch.Tensor, k: int, step: int = 1 << 15):
    """Features computed from the angles a chunk at a time (bounded memory, like `topk`), then one top-k."""
    qf = angle_features(queries)
    ip = torch.empty(len(queries), len(corpus))
    for s in range(0, len(corpus), step):
        ip[:, s : s + step] = qf @ angle_features(corpus[s : s + step]).T
    return ip.topk(k, dim=1)


def flat_ip_stream(queries: torch.Tensor, path: Path, k: int, batch_rows: int = 1 << 18):
    """The flat search over a Parquet file of angles, read exactly as search_parquet reads it."""
    qf = angle_features(queries)
    best_values, best_rows = torch.empty(len(queries), 0), torch.empty(len(queries), 0, dtype=torch.int64)
    _, batches = scan_embeddings(path, batch_rows=batch_rows, keep_codes=True, unique=True)
    offset = 0
    for batch in read_ahead(batches):
        values, rows = (qf @ angle_features(batch.values).T).topk(min(k, len(batch.values)), dim=1)
        best_values, chosen = torch.cat([best_values, values], 1).topk(k, dim=1)
        best_rows = torch.cat([best_rows, rows + offset], 1).gather(1, chosen)
        offset += len(batch.values)
    return best_values, best_rows


def faiss_index(features: torch.Tensor):
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(features.numpy())
    return index


def run_method(name: str, queries, corpus, codes, k, prepared):
    """Run one method; `prepared` holds what an index keeps between searches (built outside the timing)."""
    if name == "flat-ip":
        return flat_ip(queries, prepared["features"], k)
    if name == "flat-ip-oneshot":
        return flat_ip_oneshot(queries, corpus, k)
    if name == "flat-ip-stream":
        return flat_ip_stream(queries, prepared["parquet"], k)
    if name == "faiss-ip":
        return prepared["faiss"].search(angle_features(queries).numpy(), k)
    if name in ("index", "index-uint8"):
        return prepared[name].search(queries, k)
    if name == "topk":
        return topk(queries, corpus, k)
    if name == "topk-uint8":
        return topk(queries, codes, k, corpus_codes=True)
    if name == "parquet":
        scores, ids = search_parquet(queries, prepared["parquet"], k)
        return scores, torch.tensor([[int(i) for i in row] for row in ids])
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
    prepared = {"parquet": Path(folder) / "corpus.parquet"}
    if name in ("flat-ip", "faiss-ip"):
        prepared["features"] = FidelityIndex(corpus, candidates=1).features
        prepared["faiss"] = faiss_index(prepared["features"]) if name == "faiss-ip" else None
    elif name == "index":
        prepared["index"] = FidelityIndex(corpus)
    elif name == "index-uint8":
        prepared["index-uint8"] = FidelityIndex(codes, corpus_codes=True)
    run_method(name, queries, corpus, codes, k, prepared)
    print((_status_kb("VmHWM") - before) / 1024)


def peak_memory(methods, folder: str, k: int) -> dict[str, float]:
    out = {}
    for name in methods:
        done = subprocess.run([sys.executable, __file__, "--memory-probe", name, folder, "--k", str(k)],
                              capture_output=True, text=True, check=True)
        out[name] = float(done.stdout.strip().splitlines()[-1])
    return out


def recall_and_identity(result, reference) -> tuple[float, bool]:
    scores, indices = (torch.as_tensor(np.asarray(t)) for t in result)
    ref_scores, ref_indices = reference
    hits = sum(len(set(a) & set(b)) for a, b in zip(indices.tolist(), ref_indices.tolist()))
    identical = torch.equal(indices, ref_indices) and torch.equal(scores.float(), ref_scores)
    return hits / ref_indices.numel(), identical


def write_parquet(path: Path, corpus: torch.Tensor) -> Path:
    meta = {"encoder": "synthetic", "head": "none", "similarity": "fidelity"}
    with EmbeddingWriter(path, dim=corpus.shape[1], metadata=meta, row_group_size=1 << 17) as writer:
        for s in range(0, len(corpus), 1 << 17):
            writer.write([str(i) for i in range(s, min(len(corpus), s + (1 << 17)))], corpus[s : s + (1 << 17)])
    return path


def timed_rounds(methods, conditions, repeats, queries, corpus, codes, k, prepared) -> dict:
    """{condition: {method: [seconds, ...]}}: conditions alternate round by round, methods inside a round."""
    times = {c: {name: [] for name in methods} for c in conditions}
    for _ in range(repeats):
        for condition in conditions:
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "busy" else None
            try:
                if busy is not None:
                    time.sleep(0.5)  # let it reach its core
                for name in methods:
                    start = time.perf_counter()
                    run_method(name, queries, corpus, codes, k, prepared)
                    times[condition][name].append(time.perf_counter() - start)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return times


def bench(kind: str, size: int, args, folder: Path) -> None:
    queries, corpus = make_data(kind, size, args.dim, args.queries, noise=args.query_noise)
    codes = quantize(corpus)
    k = args.k
    prepared = {"index": FidelityIndex(corpus), "index-uint8": FidelityIndex(codes, corpus_codes=True),
                "parquet": write_parquet(folder / f"{kind}-{size}.parquet", corpus)}
    prepared["features"] = prepared["index"].features  # flat-ip searches the very same features
    methods = list(METHODS)
    faiss = faiss_index(prepared["features"]) if args.faiss else None
    if faiss is not None:
        prepared["faiss"] = faiss
        methods.insert(2, "faiss-ip")
    for name in methods:  # warm-up
        run_method(name, queries, corpus, codes, k, prepared)
    conditions = args.conditions.split(",")
    times = timed_rounds(methods, conditions, args.repeats, queries, corpus, codes, k, prepared)

    check = min(args.queries, args.check)
    sub = queries[:check]
    reference = brute_force_topk(sub, corpus, k)
    reference_codes = brute_force_topk(sub, codes, k, corpus_codes=True)
    quality = {}
    for name in methods:
        result = run_method(name, sub, corpus, codes, k, prepared)
        quality[name] = recall_and_identity(result, reference_codes if name.endswith("uint8") else reference)
    memory = {}
    if not args.no_memory:
        np.save(folder / "queries.npy", queries.numpy())
        np.save(folder / "corpus.npy", corpus.numpy())
        np.save(folder / "codes.npy", codes.numpy())
        (folder / "corpus.parquet").unlink(missing_ok=True)
        os.link(prepared["parquet"], folder / "corpus.parquet")
        memory = peak_memory(methods, str(folder), k)

    prepared["index"].search(queries, k)
    stats = prepared["index"].last_stats
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nN={size:,} n={args.dim} queries={args.queries} k={k} data={kind} query noise {args.query_noise} "
          f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load} after the runs)")
    header = "".join(f" {c + ' s':>9} {'/ flat':>7} {'/ 1shot':>7} {'/ own':>7}" for c in conditions)
    print(f"  {'method':<16}{header} {'peak MB':>8} {'recall':>7}  identical to brute force")
    for name in methods:
        cells = ""
        for c in conditions:
            median = {n: statistics.median(t) for n, t in times[c].items()}
            cells += (f" {median[name]:9.3f} {median[name] / median['flat-ip']:7.2f}"
                      f" {median[name] / median['flat-ip-oneshot']:7.2f}")
            own = f"{median[name] / median[BASELINE[name]]:7.2f}" if name in BASELINE else f"{'-':>7}"
            cells += f" {own}"
        mem = f"{memory[name]:8.0f}" if name in memory else f"{'-':>8}"
        recall, same = quality[name]
        same_text = "(approximate by design)" if name.startswith(("flat-ip", "faiss")) else ("yes" if same else "NO")
        print(f"  {name:<16}{cells} {mem} {recall:7.3f}  {same_text}")
    print(f"  index: {stats['seed_certified']}/{args.queries} queries certified by the seed; "
          f"{stats['refined_pairs']:,} pairs refined ({stats['refined_pairs'] / (args.queries * size):.1%} of all), "
          f"{stats['exact_pairs']:,} scored exactly")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000", help="comma-separated corpus sizes")
    parser.add_argument("--data", default="random,correlated,clustered", help="random, clustered, correlated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-noise", type=float, default=0.3, help="noise added to the query's source row")
    parser.add_argument("--conditions", default="idle,busy", help="idle and/or busy (one core kept busy)")
    parser.add_argument("--check", type=int, default=10, help="queries checked against brute force")
    parser.add_argument("--faiss", action="store_true", help="also time faiss IndexFlatIP")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    parser.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.k)
        return
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            for kind in args.data.split(","):
                bench(kind, size, args, Path(folder))


if __name__ == "__main__":
    main()
