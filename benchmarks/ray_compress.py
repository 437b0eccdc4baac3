"""Documents/s of `compress` on the local engine vs `--engine ray`, Ray's overheads, and torchrun training steps.

    python benchmarks/ray_compress.py                    # Cranfield (1,398 docs), offline MiniLM, head none
    python benchmarks/ray_compress.py --workers 1 2 --train-steps 8

Compress: one process. The local engine runs first (after a warm-up batch), then a local Ray cluster is started
(`ray.init`, timed: "startup"), then `compress_ray` with each --workers count over all CPUs (each actor gets
CPUs // workers torch threads). A Ray job's time includes creating the actors and loading one model per actor;
a 16-document job with the same workers measures that fixed cost alone ("per-job overhead"). Ratios are against
the local run in the same process. The angles of both engines are compared (max |difference|).

Training (--train-steps N > 0): `qcompress train` on Cranfield with MiniLM for N steps of global batch 16, as one
process and as 2 torchrun processes (gloo), for QBFEC (frozen encoder: head only) and QBEC (last 4 layers
train). Reports wall time of the whole command and the median examples/s of the steps, from `--json`.
The load average is printed: on a shared machine other jobs slow both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def compress_benchmark(args) -> None:
    import ray
    import torch

    from qcompress.compress import compress
    from qcompress.data import bundled_path
    from qcompress.formats import read_embeddings, read_texts
    from qcompress.model import build_model
    from qcompress.model import ModelSpec
    from qcompress.ray_engine import compress_ray

    records = read_texts(args.input or bundled_path("cranfield") / "corpus.jsonl")
    model = build_model("minilm", head="none", similarity=args.similarity, max_length=256, device="cpu")
    spec = ModelSpec(encoder="minilm", similarity=args.similarity, max_length=256)
    cpus = os.cpu_count() or 1
    print(f"{len(records)} documents, MiniLM, head none, {args.similarity}, batch {args.batch_size}, {cpus} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.encode([t for _, t in records[:64]], batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        compress(records, tmp / "local.parquet", model, batch_size=args.batch_size)
        local = time.perf_counter() - start
        rows.append((f"local (1 process x {torch.get_num_threads()} threads)", local, len(records) / local))
        # Control: the same with 1 torch thread. On a machine shared with other jobs, intra-op threads wait for
        # each other's time slices; single-threaded processes (like 2 Ray actors x 1 thread) suffer less.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        compress(records, tmp / "local1.parquet", model, batch_size=args.batch_size)
        local1 = time.perf_counter() - start
        torch.set_num_threads(threads)
        rows.append(("local (1 process x 1 thread)", local1, len(records) / local1))

        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
        startup = time.perf_counter() - start
        reference = read_embeddings(tmp / "local.parquet")
        overheads = {}
        for workers in args.workers:
            small = compress_ray(records[:16], tmp / f"small{workers}", model, spec, num_workers=workers,
                                 batch_size=args.batch_size)
            overheads[workers] = small.seconds["pipeline"]
            result = compress_ray(records, tmp / f"ray{workers}", model, spec, num_workers=workers,
                                  batch_size=args.batch_size)
            seconds = result.seconds["pipeline"] + result.seconds["verify"]
            diff = float((read_embeddings(tmp / f"ray{workers}").values - reference.values).abs().max())
            rows.append((f"ray, {workers} worker(s) x {max(1, cpus // workers)} threads", seconds,
                         len(records) / seconds, diff))
        start = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - start

    print(f"\n{'engine':<36} {'seconds':>8} {'docs/s':>8} {'vs local':>9} {'max |diff|':>11}")
    for row in rows:
        diff = f"{row[3]:.1e}" if len(row) > 3 else "-"
        print(f"{row[0]:<36} {row[1]:>8.2f} {row[2]:>8.1f} {row[2] / rows[0][2]:>8.2f}x {diff:>11}")
    print(f"\nRay startup (ray.init, local cluster): {startup:.1f} s; shutdown {shutdown:.1f} s")
    for workers, seconds in overheads.items():
        print(f"per-job overhead, {workers} worker(s) (16 documents: actors start, load the model, encode, write): "
              f"{seconds:.1f} s")


def train_benchmark(args) -> None:
    print(f"\ntraining: Cranfield, MiniLM, {args.train_steps} steps of global batch 16, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<8} {'processes':>9} {'wall s':>8} {'examples/s':>11} {'final loss':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for variant in ("QBFEC", "QBEC"):
            base = ["train", "--variant", variant, "--dataset", "cranfield", "--cache-dir", str(cache),
                    "--max-steps", str(args.train_steps), "--batch-size", "16", "--json", "--device", "cpu"]
            # Warm the caches (mined negatives, pooled outputs) so that both runs time training alone.
            subprocess.run([sys.executable, "-m", "qcompress", *base, "-o", str(Path(tmp) / f"warm-{variant}"),
                            "--max-steps", "1"], check=True, capture_output=True)
            for nproc in (1, 2):
                out = Path(tmp) / f"{variant}-{nproc}"
                if nproc == 1:
                    command = [sys.executable, "-m", "qcompress", *base, "-o", str(out)]
                else:
                    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={nproc}", "-m", "qcompress", *base, "-o", str(out)]
                env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)))
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    print(done.stderr[-2000:])
                    raise SystemExit(f"{variant} with {nproc} process(es) failed")
                summary = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{variant:<8} {nproc:>9} {wall:>8.1f} {summary['examples_per_s']:>11.1f} "
                      f"{summary['final_loss']:>11.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=None, help="JSONL/TSV texts; default: the bundled Cranfield corpus")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--similarity", default="fidelity", choices=["cosine", "fidelity"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-steps", type=int, default=0, help="also time torchrun training (0: skip)")
    parser.add_argument("--skip-compress", action="store_true")
    args = parser.parse_args()
    if not args.skip_compress:
        compress_benchmark(args)
    if args.train_steps > 0:
        train_benchmark(args)


if __name__ == "__main__":
    main()
