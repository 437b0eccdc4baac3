"""`qcompress compress`: texts -> a Parquet file of angles or vectors (qcompress.compress, qcompress.ray_engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import (
    ENCODER_HELP, HEAD_HELP, MODEL_HELP, SIMILARITY_HELP, app, check_model_options, cli_errors, load_cli_model,
    progress_bars, stderr,
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
    model_dir: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=ENCODER_HELP),
    head: Optional[str] = typer.Option(None, "--head", help=HEAD_HELP),
    similarity: Optional[str] = typer.Option(None, "--similarity", help=SIMILARITY_HELP),
    uint8: bool = typer.Option(
        False, "--uint8",
        help="Store angles as 8-bit codes round(theta/pi*255) (1 byte per qubit instead of 4). Angle models only.",
    ),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted run from the chunks it finished (kept in OUT.partial/); same input and model.",
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
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch (batches go longest-first)."),
    max_length: Optional[int] = typer.Option(
        None, "--max-length", help="Tokens per text (longer texts are truncated). Default: the model's (256)."
    ),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache", envvar="QCOMPRESS_CACHE",
        help="Folder caching pooled encoder outputs per (encoder weights, max length, text), shared with "
        "`evaluate --cache`: texts already there skip the encoder. Default: $QCOMPRESS_CACHE, else no cache. "
        "Local engine only.",
    ),
) -> None:
    """Encode texts into a Parquet file of qubit angles (fidelity models) or vectors (cosine models).

    The whole input is read and checked first (duplicate ids, empty texts, malformed lines: an error naming the
    line, and no output). Texts are then encoded in chunks of 4,096, each written as one row group in input
    order; the file appears at OUT only when complete. Its metadata names the model (encoder, head, dim,
    similarity, a digest of the weights, qcompress version) and the encoding, so `qcompress score` never
    compares files of different models.

    Examples:

        qcompress compress corpus.jsonl --model models/qbec -o corpus.parquet --uint8
        qcompress compress queries.tsv --encoder minilm --head none --similarity fidelity -o q.parquet
    """
    from qcompress.compress import compress
    from qcompress.formats import read_texts
    from qcompress.quantization import check_encoding

    if str(output) == "-":
        raise ValueError("-o -: Parquet cannot be streamed to stdout; give a file path such as -o out.parquet")
    if engine not in ("local", "ray"):
        raise ValueError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        if cache_dir is not None:  # often set for everything through $QCOMPRESS_CACHE: say so, do not fail
            stderr.print(f"note: the pooled-output cache ({cache_dir}) is not used with --engine ray: its workers "
                         "may run on other machines", highlight=False, markup=False, soft_wrap=True)
        return _compress_ray(input_path, output, model_dir, encoder, head, similarity, uint8, resume, batch_size,
                             max_length, trust_remote_code, num_workers, ray_address)
    if num_workers is not None or ray_address is not None:
        raise ValueError("--num-workers and --ray-address go with --engine ray")
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder; give a file path such as {output / 'embeddings.parquet'}")
    check_model_options(encoder, head, similarity)
    records = read_texts(input_path)  # all of it, validated, before any encoding
    model = load_cli_model(model_dir, encoder, head, similarity, max_length, trust_remote_code)
    check_encoding("uint8" if uint8 else "float32", model.output_kind)  # before any progress bar
    cache = None
    if cache_dir is not None:
        from qcompress.cache import PooledCache

        cache = PooledCache(cache_dir, model)
    with progress_bars() as start:
        done = compress(
            records, output, model, batch_size=batch_size, encoding="uint8" if uint8 else "float32",
            resume=resume, cache=cache, on_batch=start("compressing", len(records)),
        )
    kind = "uint8 angle codes" if uint8 else f"float32 {model.output_kind}"
    stderr.print(
        f"wrote {len(records):,} rows of {model.dim} {kind} to {output}"
        + (f" ({len(records) - done:,} from the earlier run)" if done < len(records) else ""),
        highlight=False, markup=False, soft_wrap=True,
    )


def _compress_ray(input_path, output, model_dir, encoder, head, similarity, uint8, resume, batch_size, max_length,
                  trust_remote_code, num_workers, ray_address) -> None:
    """`compress --engine ray` (issue 7): see qcompress.ray_engine."""
    from qcompress.model import ModelSpec
    from qcompress.ray_engine import compress_ray, read_records, require_ray

    require_ray()  # before reading anything: say how to install it
    if resume:
        raise ValueError("--resume is for the local engine; --engine ray writes the whole folder again")
    check_model_options(encoder, head, similarity)
    records = read_records(input_path)  # all of it, validated, before any encoding
    model = load_cli_model(model_dir, encoder, head, similarity, max_length, trust_remote_code)
    spec = ModelSpec(model_dir=model_dir, encoder=encoder, similarity=similarity, max_length=max_length,
                     trust_remote_code=trust_remote_code)
    with progress_bars() as start:
        result = compress_ray(records, output, model, spec, num_workers=num_workers, ray_address=ray_address,
                              batch_size=batch_size, encoding="uint8" if uint8 else "float32",
                              on_rows=start("compressing (ray)", len(records)))
    kind = "uint8 angle codes" if uint8 else f"float32 {model.output_kind}"
    stderr.print(
        f"wrote {result.rows:,} rows of {model.dim} {kind} to {output}/ ({result.files} files, {result.workers} "
        f"worker(s){', 1 GPU each' if result.gpus_per_worker else ''}; Ray startup {result.seconds['startup']:.1f} s, "
        f"pipeline {result.seconds['pipeline']:.1f} s)",
        highlight=False, markup=False, soft_wrap=True,
    )
