"""`qcompress compress --engine ray`: the same Parquet embeddings as the local path, computed by a Ray Data actor pool.

Pipeline:
    driver      reads and validates the whole input (JSONL/TSV with the local path's rules and error messages, or
                Parquet with `id`/`_id`, `text`, optional `title`), numbers the rows, and hands Ray Data blocks of
                `chunk` rows (`ray.data.from_items`, one item per chunk)
    actors      `map_batches` with a callable class: each actor loads the model once (on a GPU when the cluster
                has GPUs: one GPU per actor), encodes one block per call and writes it as one Parquet file
                `part-<first row, 12 digits>.parquet` (qcompress.formats.EmbeddingWriter: same schema and
                key-value metadata as the local path), and returns (first row, rows, file) to the driver
    driver      checks that the files hold exactly the input's ids, in input order (rows in = rows out), then
                renames the folder into place (qcompress.atomic.atomic_dir): OUT appears only when complete.

Files are named by their first input row, so the folder sorted by name is the input order, and a block retried
after a killed actor rewrites the same file (atomically) instead of adding a duplicate. `read_embeddings`,
`iter_embedding_batches` and `qcompress score`/`evaluate` read the folder as one dataset.

Failures: an actor that dies (killed process, lost node) is restarted up to `MAX_RESTARTS` times and its
unfinished block retried (`max_task_retries`); Ray's own default is to restart forever, which turns a worker that
always crashes into a job that never ends. An exception raised by the model code is not retried (it would raise
again). Either way the job fails with one line, and no OUT is written.

The driver reads the input itself rather than with Ray's readers: validating ids across the whole input (duplicates,
whitespace, empty texts, with file and line numbers) needs one pass anyway, it gives the rows their global order,
and reading is a small share of the time (Cranfield: 10 ms to read, seconds to encode). The input rows travel
through Ray's object store (spilled to disk when larger than memory).

On a multi-node cluster (`--ray-address`), the output folder and a `--model` folder must be on storage that every
node sees at the same path (NFS, a mounted bucket), or the encoder must be a Hugging Face id.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch

from qcompress.atomic import atomic_dir
from qcompress.batching import DEFAULT_BATCH_SIZE
from qcompress.compress import embedding_metadata, model_id
from qcompress.errors import InputError, MissingDependency, require
from qcompress.formats import EmbeddingWriter, read_texts
from qcompress.formats.texts import TextFields
from qcompress.model import ModelSpec
from qcompress.quantization import check_encoding

__all__ = ["INSTALL_HINT", "require_ray", "read_records", "compress_ray", "RayCompressResult"]

INSTALL_HINT = str(MissingDependency("ray", "--engine ray", extra="ray"))
MAX_RESTARTS = 3  # restarts per actor after it dies (Ray's default, -1, restarts forever)
MAX_TASK_RETRIES = 3  # retries of a block whose actor died while encoding it
MAX_CHUNK = 4096  # rows per block = per output file, as the local path's row groups


def require_ray():
    """Import and return `ray` (with ray.data), or raise MissingDependency telling how to install it."""
    ray = require("ray", "--engine ray", extra="ray")
    require("ray.data", "--engine ray", package="ray", extra="ray")
    return ray


# -- input -------------------------------------------------------------------------------------------------------


def read_records(path: str | os.PathLike, fields: TextFields | None = None) -> list[tuple[str, str]]:
    """(id, text) in input order, through `qcompress.formats.read_texts` (JSONL, TSV, CSV, Parquet or stdin; the
    id, text and title fields that `fields` names)."""
    return read_texts(path, fields=fields)


# -- the actor -----------------------------------------------------------------------------------------------------


def _part_name(first_row: int) -> str:
    return f"part-{first_row:012d}.parquet"


class _EncodeActor:
    """One model per actor; each call encodes one block of rows and writes it as one Parquet file."""

    def __init__(self, spec: ModelSpec, out_dir: str, metadata: dict, encoding: str, batch_size: int,
                 threads: int | None, role: str | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        on_gpu = torch.cuda.is_available() and spec.backend == "torch"  # exported backends run on the CPU
        self.model = spec.load("cuda" if on_gpu else "cpu")
        found = model_id(self.model)
        if found != metadata["model_id"]:
            raise InputError(f"this worker loaded a different model (id {found}, the driver's "
                               f"{metadata['model_id']}); the model must be the same files on every node")
        self.out_dir, self.metadata = Path(out_dir), metadata
        self.encoding, self.batch_size, self.role = encoding, batch_size, role

    def __call__(self, batch: dict) -> dict:
        """`batch`: chunks of rows (`first` row number, `ids`, `texts`); one Parquet file per chunk."""
        done: dict[str, list] = {"first": [], "rows": [], "file": []}
        for first, ids, texts in zip(batch["first"], batch["ids"], batch["texts"]):
            ids, texts = [str(x) for x in ids], [str(t) for t in texts]
            values = self.model.encode(texts, role=self.role, batch_size=self.batch_size, convert_to_tensor=True)
            name = _part_name(int(first))
            with EmbeddingWriter(self.out_dir / name, dim=self.model.dim, metadata=self.metadata,
                                 encoding=self.encoding, column=self.model.output_kind,
                                 row_group_size=max(1, len(ids))) as writer:
                writer.write(ids, values)
            done["first"].append(int(first))
            done["rows"].append(len(ids))
            done["file"].append(name)
        return {k: np.array(v) for k, v in done.items()}


# -- the driver ----------------------------------------------------------------------------------------------------


@dataclass
class RayCompressResult:
    rows: int
    files: int
    workers: int
    gpus_per_worker: int
    seconds: dict = field(default_factory=dict)  # startup (ray.init), pipeline (encode + write), verify


def _quiet_ray_data(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # qcompress draws its own progress bar on stderr
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    # Ray Data logs a failed job's traceback; the CLI reports it in one line (the full logs stay in Ray's session
    # folder, /tmp/ray/session_latest/logs on the head node).
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def _first_line(err: BaseException) -> str:
    """The root cause of a (Ray-wrapped) exception, as `Type: first line of its message`."""
    original, seen = err, set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None) or err.__cause__
        if not isinstance(inner, BaseException):
            break
        err = inner
    if type(err).__module__.startswith("ray"):
        # Ray keeps the worker's exception as text: the first non-Ray `SomeError: message` line of the traceback.
        for line in str(original).splitlines():
            match = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)", line)
            if match and not match.group(1).startswith("ray.") and match.group(1) != "UserCodeException":
                return f"{match.group(1)}: {match.group(2).strip()}"
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    name = type(err).__name__.split("(")[0]
    return f"{name}: {text}" if text else name


def compress_ray(
    records: Sequence[tuple[str, str]],
    output: str | os.PathLike,
    model,
    spec: ModelSpec,
    *,
    num_workers: int | None = None,
    ray_address: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    encoding: str = "float32",
    chunk_size: int | None = None,
    on_rows: Callable[[int], None] | None = None,
    role: str | None = "document",
) -> RayCompressResult:
    """Encode `records` with an actor pool and write the Parquet folder `output`; return what ran and how long.

    `model` is the driver's copy (for the metadata, which every worker's copy must match); workers load
    `spec` themselves. Uses the Ray cluster already initialised in this process, else joins `ray_address`, else
    starts a local one (shut down at the end). `num_workers` defaults to the cluster's GPUs, else 1 actor using
    every CPU (torch's own threads; benchmarks/ray_compress.py compares the choices).
    """
    output = _check_output(output)
    if num_workers is not None and num_workers <= 0:
        raise InputError(f"num_workers must be positive, got {num_workers}")
    check_encoding(encoding, model.output_kind)
    metadata = embedding_metadata(model, role)
    ray = require_ray()
    t0 = time.perf_counter()
    started = _init_ray(ray, ray_address)
    seconds = {"startup": time.perf_counter() - t0}
    try:
        _quiet_ray_data(ray)
        pool = _pool_size(ray, num_workers)
        chunk = chunk_size or min(MAX_CHUNK, max(1, math.ceil(len(records) / (4 * pool.workers))))
        with atomic_dir(output, overwrite=output.exists()) as tmp:
            t1 = time.perf_counter()
            if records:
                actor_args = dict(spec=_absolute(spec), out_dir=str(tmp.absolute()), metadata=metadata,
                                  encoding=encoding, batch_size=batch_size, role=role,
                                  threads=None if pool.gpus_per_worker else pool.cpus_per_worker)
                _run_pool(ray, records, chunk, pool, actor_args, output, on_rows)
            else:
                with EmbeddingWriter(tmp / _part_name(0), dim=model.dim, metadata=metadata, encoding=encoding,
                                     column=model.output_kind):
                    pass
            seconds["pipeline"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            files = _verify(tmp, [doc_id for doc_id, _ in records], output)
            seconds["verify"] = time.perf_counter() - t2
    finally:
        if started:
            ray.shutdown()
    return RayCompressResult(rows=len(records), files=files, workers=pool.workers,
                             gpus_per_worker=pool.gpus_per_worker, seconds=seconds)


def _check_output(output: str | os.PathLike) -> Path:
    output = Path(output)
    if str(output) == "-":
        raise InputError("output '-': the ray engine writes a folder of Parquet files; give a folder path")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        what = "a file" if not output.is_dir() else "a folder that is not empty"
        raise FileExistsError(f"{output}: is {what}; the ray engine writes a new folder: remove it or choose another")
    return output


def _init_ray(ray, ray_address: str | None) -> bool:
    """Join or start a Ray cluster unless this process has one; True if this call started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=ray_address, include_dashboard=False, logging_level=logging.ERROR,
                 configure_logging=True, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray cluster"
        raise InputError(f"cannot start or join {where}: {_first_line(err)}") from None
    return True


@dataclass
class _Pool:
    workers: int
    gpus_per_worker: int
    cpus_per_worker: int


def _pool_size(ray, num_workers: int | None) -> _Pool:
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    workers = num_workers or (gpus if gpus else 1)
    gpus_per_worker = 1 if gpus >= workers and gpus > 0 else 0
    return _Pool(workers, gpus_per_worker, 1 if gpus_per_worker else max(1, cpus // workers))


def _run_pool(ray, records: Sequence[tuple[str, str]], chunk: int, pool: _Pool, actor_args: dict, output: Path,
              on_rows: Callable[[int], None] | None) -> None:
    """Encode and write every chunk with the actor pool; a failure becomes one ValueError naming its cause."""
    ids, texts = [doc_id for doc_id, _ in records], [t for _, t in records]
    # One dataset row per chunk of documents, one block per row: each actor call gets whole chunks, so a file
    # holds consecutive input rows. (from_items builds the blocks here; from_arrow would start a remote task per
    # block just to read its metadata.)
    chunks = [{"first": s, "ids": ids[s : s + chunk], "texts": texts[s : s + chunk]}
              for s in range(0, len(records), chunk)]
    with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60)
        warnings.simplefilter("ignore")
        ds = _from_items(ray, chunks).map_batches(
            _EncodeActor, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool.workers),
            num_cpus=pool.cpus_per_worker, num_gpus=pool.gpus_per_worker,
            fn_constructor_kwargs=actor_args, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
        )
    written = 0
    try:
        for done in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = int(np.sum(done["rows"]))
            written += rows
            if on_rows is not None:
                on_rows(rows)
    except Exception as err:  # noqa: BLE001 - Ray wraps worker failures in many types
        # One error line, not an internal error: the cause is usually the model or the cluster, and the worker's
        # traceback is in Ray's logs, not in this process (--debug could not show it).
        raise InputError(
            f"the Ray job failed after {written:,} of {len(records):,} rows ({_first_line(err)}); nothing was "
            f"written to {output} (Ray's logs: /tmp/ray/session_latest/logs)"
        ) from None


def _from_items(ray, items: list):
    """One block per item (`override_num_blocks` since Ray 2.10, `parallelism` before)."""
    try:
        return ray.data.from_items(items, override_num_blocks=len(items))
    except TypeError:
        return ray.data.from_items(items, parallelism=len(items))


def _absolute(spec: ModelSpec) -> ModelSpec:
    """Workers do not share the driver's working directory: local model paths become absolute."""
    return dataclasses.replace(
        spec,
        model_dir=os.path.abspath(spec.model_dir) if spec.model_dir and os.path.isdir(spec.model_dir) else (
            spec.model_dir),  # a Hub id stays an id
        encoder=os.path.abspath(spec.encoder) if spec.encoder and os.path.isdir(spec.encoder) else spec.encoder,
    )


def _verify(folder: Path, ids: list[str], output: Path) -> int:
    """Remove leftovers of killed writers, then check the part files hold exactly `ids` in order; return files."""
    for entry in folder.iterdir():
        if not (entry.is_file() and entry.name.startswith("part-") and entry.suffix == ".parquet"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    files = sorted(folder.glob("part-*.parquet"))
    found: list[str] = []
    for file in files:
        found.extend(pq.read_table(file, columns=["id"]).column("id").to_pylist())
    if found != ids:
        missing = len(set(ids) - set(found))
        raise ValueError(
            f"the Ray job wrote {len(found):,} rows for {len(ids):,} input rows ({missing:,} missing, "
            f"{max(0, len(found) - len(ids) + missing):,} extra or out of order); nothing was written to {output}"
        )
    return len(files)
