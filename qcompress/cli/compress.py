"""`qcompress compress`: texts -> a Parquet file of angles or vectors (qcompress.compress, qcompress.ray_engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import app, bar_on_first_use, cli_errors, model_spec, progress_bars, stderr
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, BatchSize, CacheDir, Encoder, Head, MaxLength, ModelDir, Revision, Similarity,
    TrustRemoteCode,
)


@app.command("compress")
@cli_errors
def compress_command(
    input_path: str = typer.Argument(
        ..., metavar="INPUT",
        help="Texts to compress: JSONL (`_id` or `id`, `text`, optional `title`: text = title + ' ' + text), "
        "TSV `id<TAB>text`, or - for stdin.",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output",
        help="Parquet file to write (`id` + `angles` or `vectors`). A file path: Parquet cannot stream to stdout.",
    ),
    model_dir: ModelDir = None,
    revision: Revision = None,
    encoder: Encoder = None,
    head: Head = None,
    similarity: Similarity = None,
    role: str = typer.Option(
        "document", "--role",
        help="document or query: the texts are encoded with the model's prompt for that role (e5: 'passage: ' / "
        "'query: '), recorded in the file's metadata. Compress queries with --role query.",
    ),
    uint8: bool = typer.Option(
        False, "--uint8",
        help="Store angles as 8-bit codes round(theta/pi*255) (1 byte per qubit instead of 4). Angle models only.",
    ),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted run from the chunks it finished (kept in OUT.partial/); same input and model "
        "(each finished chunk's ids and texts are compared by digest).",
    ),
    store_text: bool = typer.Option(
        False, "--store-text", help="Keep each row's text in a `text` column (shown by `qcompress search`)."
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="Write an empty file for an input without records (otherwise an error)."
    ),
    engine: str = typer.Option(
        "local", "--engine",
        help="local (this process) or ray: a Ray Data actor pool (one model per worker, one GPU each when the "
        "cluster has GPUs) writing OUTPUT as a folder of Parquet files (part-<first row>.parquet, input order), "
        "read as one dataset by score/evaluate. Needs `pip install 'qcompress[ray]'`. Also reads Parquet input "
        "(`id` or `_id`, `text`, optional `title`).",
    ),
    num_workers: Optional[int] = typer.Option(
        None, "--num-workers", help="With --engine ray: actors (model copies). Default: one per GPU, else 1."
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address",
        help="With --engine ray: join this Ray cluster (e.g. ray://head:10001 or auto). Default: $RAY_ADDRESS, "
        "else start a local one for this run.",
    ),
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    trust_remote_code: TrustRemoteCode = False,
    cache_dir: CacheDir = None,
) -> None:
    """Encode texts into a Parquet file of qubit angles (fidelity models) or vectors (cosine models).

    The input streams through in chunks of 4,096 records: each chunk is read and checked (duplicate ids, empty
    texts, malformed lines: an error naming the line), encoded and written as one row group in input order, so
    memory does not grow with the corpus. The file appears at OUT only when complete; an interrupted or failed
    run keeps its finished chunks in OUT.partial/ for --resume. A second run writing the same OUT is refused. Its metadata names the model (encoder, head, dim,
    similarity, a digest of the weights, qcompress version) and the encoding, so `qcompress score` never
    compares files of different models. The pooled-output cache is not used with --engine ray.

    Examples:

        qcompress compress corpus.jsonl --model models/qbec -o corpus.parquet --uint8
        qcompress compress queries.tsv --encoder minilm --head none --similarity fidelity -o q.parquet
    """
    if str(output) == "-":
        raise ValueError("-o -: Parquet cannot be streamed to stdout; give a file path such as -o out.parquet")
    if engine not in ("local", "ray"):
        raise ValueError(f"--engine must be local or ray, got {engine!r}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if role not in ("document", "query"):
        raise ValueError(f"--role must be document or query, got {role!r}")
    spec = model_spec(model_dir, encoder, head, similarity, max_length, trust_remote_code, revision)
    encoding = "uint8" if uint8 else "float32"
    if engine == "ray":
        if cache_dir is not None:  # often set for everything through $QCOMPRESS_CACHE: say so, do not fail
            stderr.print(f"note: the pooled-output cache ({cache_dir}) is not used with --engine ray: its workers "
                         "may run on other machines", highlight=False, markup=False, soft_wrap=True)
        if resume:
            raise ValueError("--resume is for the local engine; --engine ray writes the whole folder again")
        if store_text:
            raise ValueError("--store-text is for the local engine")
        return _compress_ray(input_path, output, spec, encoding, batch_size, num_workers, ray_address, role,
                             allow_empty)
    if num_workers is not None or ray_address is not None:
        raise ValueError("--num-workers and --ray-address go with --engine ray")
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder; give a file path such as {output / 'embeddings.parquet'}")
    _compress_local(input_path, output, spec, encoding, batch_size, resume, cache_dir, role, store_text, allow_empty)


def _compress_local(input_path: str, output: Path, spec, encoding: str, batch_size: int, resume: bool,
                    cache_dir: Optional[Path], role: str, store_text: bool, allow_empty: bool) -> None:
    import itertools

    from qcompress.cache import PooledCache
    from qcompress.compress import compress
    from qcompress.formats import iter_texts
    from qcompress.formats.lines import count_lines
    from qcompress.quantization import check_encoding

    records = iter_texts(input_path)  # streamed: each chunk is checked as it is read
    first = list(itertools.islice(records, 1))  # the first batch of lines is read and checked before the model loads
    if not first and not allow_empty:
        raise ValueError(f"{input_path}: no records to compress (empty input); pass --allow-empty to write an "
                         "empty file")
    model = spec.load()
    check_encoding(encoding, model.output_kind)  # before any progress bar
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    with progress_bars() as start:
        done = compress(itertools.chain(first, records), output, model, batch_size=batch_size, encoding=encoding,
                        resume=resume, cache=cache, on_batch=bar_on_first_use(start, "compressing",
                                                                             count_lines(input_path)),
                        store_text=store_text, role=role)
    earlier = f" ({done.resumed:,} from the earlier run)" if done.resumed else ""
    stderr.print(f"wrote {done.rows:,} rows of {model.dim} {_kind(encoding, model)} to {output}{earlier}",
                 highlight=False, markup=False, soft_wrap=True)


def _kind(encoding: str, model) -> str:
    return "uint8 angle codes" if encoding == "uint8" else f"float32 {model.output_kind}"


def _compress_ray(input_path: str, output: Path, spec, encoding: str, batch_size: int,
                  num_workers: Optional[int], ray_address: Optional[str], role: str, allow_empty: bool) -> None:
    """`compress --engine ray`: see qcompress.ray_engine."""
    from qcompress.ray_engine import compress_ray, read_records, require_ray

    require_ray()  # before reading anything: say how to install it
    records = read_records(input_path)  # all of it, validated, before any encoding
    if not records and not allow_empty:
        raise ValueError(f"{input_path}: no records to compress (empty input); pass --allow-empty to write an "
                         "empty folder")
    model = spec.load()
    with progress_bars() as start:
        result = compress_ray(records, output, model, spec, num_workers=num_workers, ray_address=ray_address,
                              batch_size=batch_size, encoding=encoding,
                              on_rows=start("compressing (ray)", len(records)), role=role)
    gpus = ", 1 GPU each" if result.gpus_per_worker else ""
    stderr.print(
        f"wrote {result.rows:,} rows of {model.dim} {_kind(encoding, model)} to {output}/ ({result.files} files, "
        f"{result.workers} worker(s){gpus}; Ray startup {result.seconds['startup']:.1f} s, "
        f"pipeline {result.seconds['pipeline']:.1f} s)",
        highlight=False, markup=False, soft_wrap=True,
    )
