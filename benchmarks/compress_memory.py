"""Peak memory of `qcompress compress` as the corpus grows: N short texts vs 10 N, with a tiny random encoder.

    python benchmarks/compress_memory.py                         # 100k vs 1M texts (goal: peak growth <= 1.2x)
    python benchmarks/compress_memory.py --sizes 10000,100000    # a quick run

Each size runs the real command (`python -m qcompress compress INPUT -o OUT --encoder TINY --head none --similarity fidelity`) in a
fresh subprocess, on a TSV file of short synthetic texts ("doc-<i>\\tword word ... <i>", ids unique); the peak
resident memory of that process (its rusage ru_maxrss, from os.wait4) is printed, and the ratio of each size's
peak to the smallest size's. The encoder is a randomly initialised BERT (hidden 32, 1 layer) built from a config,
so the run is offline and the encoder's share of the time is small: what grows with N is the reader, the
duplicate-id check (about 32 bytes + the id per row, `qcompress.formats.ids`) and the writer. Also printed: the
peak of a run on 1,000 texts (the fixed cost: Python, torch, the model), and each peak's growth above it.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the of a and in to is for flow on with at by from wing boundary layer pressure heat what are".split()


def write_texts(path: Path, n: int, seed: int = 0) -> None:
    """n TSV lines of 6-12 random words each, written a block at a time."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, n, 10_000):
            out.write("".join(f"doc-{i}\t{' '.join(rng.choices(WORDS, k=rng.randint(6, 12)))} {i}\n"
                              for i in range(start, min(n, start + 10_000))))


def peak_of_compress(texts: Path, encoder: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `qcompress compress` subprocess."""
    command = [sys.executable, "-m", "qcompress", "compress", str(texts), "-o", str(out), "--encoder", str(encoder),
               "--head", "none", "--similarity", "fidelity", "--max-length", "32", "--batch-size", "256"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    if process.returncode != 0:
        raise SystemExit(f"compress failed (exit {process.returncode}):\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated numbers of texts, smallest first")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_tiny_bert

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = make_tiny_bert(tmp / "tiny-bert", layers=1)
        peaks = {}
        for n in [1000, *sizes]:
            texts = tmp / f"texts-{n}.tsv"
            write_texts(texts, n)
            peak, seconds = peak_of_compress(texts, encoder, tmp / f"out-{n}.parquet")
            peaks[n] = peak
            print(f"{n:>9,} texts ({texts.stat().st_size / 2**20:.0f} MiB TSV): peak RSS {peak:7.1f} MiB, "
                  f"{seconds:6.1f} s ({n / seconds:,.0f} texts/s)", flush=True)
            texts.unlink()
    fixed = peaks.pop(1000)
    base = sizes[0]
    print(f"fixed cost (1,000 texts): {fixed:.1f} MiB")
    for n in sizes[1:]:
        print(f"peak {n:,} / {base:,} texts: {peaks[n] / peaks[base]:.3f}x (goal <= 1.2x); growth above the fixed "
              f"cost {peaks[n] - fixed:.1f} vs {peaks[base] - fixed:.1f} MiB")


if __name__ == "__main__":
    main()
