"""What checking cached and indexed content costs on read (issue 27): each read with its check vs the same read
without it, in the same process.

    python benchmarks/integrity_checks.py                   # 100k cached rows of 384 floats, 20k prefix states
    python benchmarks/integrity_checks.py --rows 20000 --repeat 3

Times, best of `--repeat`:
    pooled cache   `PooledCache.get` of every entry (fresh cache objects: the shard is indexed and memory-mapped
                   each time) with each row's CRC-32 checked, vs the same with the check replaced by reading the
                   stored checksums (what `get` cost before)
    frozen prefix  reading `--states` (tokens x 384) hidden-state files with their digest checked
                   (`qcompress.frozen_prefix._read_state`) vs safetensors' `load_file` alone
    index ids      the digest of an index's ids.arrow (`--rows` ids) that opening an index computes, against
                   reading the ids (what opening did before)
Files go to `--dir` (default: a temporary folder). Nothing is encoded: the cache is filled with random rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file

import qcompress.cache as cache_module
from qcompress.cache import PooledCache, text_key
from qcompress.frozen_prefix import _read_state, state_digest
from qcompress.integrity import file_digest


class Encoderless:
    """Just what PooledCache reads of a model: its encoder's weights (for the key), tokenizer, settings, width."""

    def __init__(self, width: int) -> None:
        self.encoder, self.in_dim, self.max_length = torch.nn.Linear(1, 1), width, 256
        self.tokenizer = []
        self.config = type("Config", (), {"pooling": "mean"})()


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def pooled_cache(folder: Path, rows: int, width: int, repeat: int) -> tuple[float, float]:
    model = Encoderless(width)
    keys = [text_key(f"text {i}") for i in range(rows)]
    cache = PooledCache(folder, model)
    for start in range(0, rows, 4096):  # shards of compress's chunk size
        cache.add(keys[start : start + 4096], torch.rand(len(keys[start : start + 4096]), width))
    checked = best_of(repeat, lambda: PooledCache(folder, model).get(keys))
    real = cache_module.entry_checks
    read_stored = {}

    def stored_checks(key_rows, values):  # the stored checksums themselves: the comparison always passes
        return read_stored["checks"]

    def unchecked_get():
        fresh = PooledCache(folder, model)
        original = fresh._read

        def read(shard, rows_):
            read_stored["checks"] = np.asarray(fresh._pooled(shard)[1][rows_])
            return original(shard, rows_)

        fresh._read = read
        return fresh.get(keys)

    cache_module.entry_checks = stored_checks
    try:
        unchecked = best_of(repeat, unchecked_get)
    finally:
        cache_module.entry_checks = real
    return checked, unchecked


def prefix_states(folder: Path, states: int, tokens: int, width: int, repeat: int) -> tuple[float, float]:
    paths = []
    for i in range(states):
        state = torch.rand(tokens, width)
        paths.append(folder / f"state-{i}.safetensors")
        save_file({"hidden": state}, str(paths[-1]), metadata={"digest": state_digest(state)})
    checked = best_of(repeat, lambda: [_read_state(p) for p in paths])
    plain = best_of(repeat, lambda: [load_file(str(p))["hidden"] for p in paths])
    return checked, plain


def index_ids(folder: Path, rows: int, repeat: int) -> tuple[float, float]:
    schema = pa.schema([pa.field("id", pa.string(), nullable=False)])
    path = folder / "ids.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([f"doc-{i:08d}" for i in range(rows)])], schema=schema))
    read = best_of(repeat, lambda: pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("id").combine_chunks())
    digest = best_of(repeat, lambda: file_digest(path))
    return digest, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--states", type=int, default=20_000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    for name, sub in (("cache", "c"), ("prefix", "p"), ("ids", "i")):
        (root / sub).mkdir()
    checked, unchecked = pooled_cache(root / "c", args.rows, args.width, args.repeat)
    print(f"pooled cache, {args.rows:,} rows x {args.width}: get {checked:.3f} s checked vs {unchecked:.3f} s "
          f"unchecked ({checked / unchecked:.2f}x, +{(checked - unchecked) / args.rows * 1e6:.2f} us a row)")
    checked, plain = prefix_states(root / "p", args.states, args.tokens, args.width, args.repeat)
    print(f"frozen prefix, {args.states:,} files of {args.tokens} x {args.width}: {checked:.3f} s checked vs "
          f"{plain:.3f} s load_file ({checked / plain:.2f}x, +{(checked - plain) / args.states * 1e6:.1f} us a file)")
    digest, read = index_ids(root / "i", args.rows, args.repeat)
    print(f"index ids, {args.rows:,} ids: digest {digest:.3f} s, reading them {read:.3f} s "
          f"({digest / read:.2f}x the read)")


if __name__ == "__main__":
    main()
