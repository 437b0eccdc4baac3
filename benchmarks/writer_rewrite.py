"""What the writer's final rewrite costs: `EmbeddingWriter` (parts, then one Parquet file rewritten from them) vs one
plain pyarrow write of the same rows, in the same process.

    python benchmarks/writer_rewrite.py                        # 200k rows x 128 angles, float32 and uint8
    python benchmarks/writer_rewrite.py --rows 50000 --repeat 1

For each encoding the script builds random angles, then times, best of `--repeat`:
    plain      `pyarrow.parquet.write_table` of the stored rows (float32, or the writer's own uint8 codes), with the
               writer's row groups (`--chunk` rows, compress's default) and options: the least any writer can do
    writer     `EmbeddingWriter` fed a chunk at a time with a digest, as `qcompress compress` feeds it: checks and
               quantizes the values, writes each chunk as an Arrow IPC part (flushed to disk, journalled), then
               `close()` rewrites the parts into the output
    parquet parts  the same rewrite from Parquet parts instead of Arrow IPC ones (pyarrow only, no checks): what the
               writer would cost with Parquet parts, the alternative it does not take
and prints each time, its ratio to `plain`, and whether the writer's output is byte for byte the plain file. The
encoder, which dominates `compress`, is not run: these are the writer's costs alone. Files go to `--dir` (default:
a temporary folder; on tmpfs, fsync costs nothing).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qcompress.formats import EmbeddingWriter
from qcompress.quantization import quantize_angles

META = {"encoder": "bench", "head": "quantum", "similarity": "fidelity"}


def best_of(repeat: int, run) -> tuple[float, ...]:
    """The fastest of `repeat` calls of `run`, which returns its times (total first)."""
    return min(run() for _ in range(repeat))


def timed(run) -> tuple[float]:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start,)


def stored_table(ids: list[str], stored: np.ndarray, schema: pa.Schema) -> pa.Table:
    flat = pa.array(stored.reshape(-1))
    return pa.Table.from_arrays([pa.array(ids), pa.FixedSizeListArray.from_arrays(flat, stored.shape[1])],
                                schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=4096, help="rows per chunk = per row group (compress's default)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(dir=args.dir))
    angles = np.random.default_rng(0).random((args.rows, args.dim), dtype=np.float32) * np.float32(math.pi)
    ids = [f"doc-{i}" for i in range(args.rows)]
    starts = range(0, args.rows, args.chunk)
    print(f"{args.rows:,} rows x {args.dim} angles, chunks of {args.chunk:,} rows, best of {args.repeat}, in {folder}")
    for encoding in ("float32", "uint8"):
        out, plain_out = folder / f"writer-{encoding}.parquet", folder / f"plain-{encoding}.parquet"

        def write_with_writer() -> tuple[float, float]:
            """(total, close) seconds; close() is the rewrite."""
            start = time.perf_counter()
            writer = EmbeddingWriter(out, dim=args.dim, metadata=META, encoding=encoding, row_group_size=args.chunk)
            for s in starts:
                writer.write(ids[s : s + args.chunk], angles[s : s + args.chunk], digest=f"chunk {s}")
            before_close = time.perf_counter()
            writer.close()
            end = time.perf_counter()
            write_with_writer.schema = writer.schema
            return end - start, end - before_close

        write_with_writer()  # warm up (pyarrow's first table imports pandas), and the schema the plain write uses
        stored = quantize_angles(angles) if encoding == "uint8" else angles
        table = stored_table(ids, stored, write_with_writer.schema)
        statistics = ["id", "angles.list.element"]

        def write_through_parquet_parts() -> None:
            parts = [folder / f"part-{s}.parquet" for s in starts]
            for s, part in zip(starts, parts):
                pq.write_table(table.slice(s, args.chunk), part, row_group_size=args.chunk, write_statistics=statistics)
            with pq.ParquetWriter(folder / "from-parts.parquet", table.schema, write_statistics=statistics) as w:
                for part in parts:
                    w.write_table(pq.read_table(part), row_group_size=args.chunk)
            for part in parts:
                part.unlink()

        (plain,) = best_of(args.repeat, lambda: timed(
            lambda: pq.write_table(table, plain_out, row_group_size=args.chunk, write_statistics=statistics)))
        writer, rewrite = best_of(args.repeat, write_with_writer)
        (parquet_parts,) = best_of(args.repeat, lambda: timed(write_through_parquet_parts))
        same = out.read_bytes() == plain_out.read_bytes()
        size = out.stat().st_size / 2**20
        print(f"{encoding:>7} ({size:.0f} MiB): plain {plain:.2f} s | writer {writer:.2f} s = {writer / plain:.2f}x "
              f"plain (of which close(), the rewrite: {rewrite:.2f} s = {rewrite / plain:.2f}x) | through Parquet "
              f"parts: {parquet_parts:.2f} s = {parquet_parts / plain:.2f}x | writer output == plain file: {same}",
              flush=True)
        for path in folder.iterdir():
            path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
