"""`qcompress compress`: texts -> a Parquet file of angles, low-bit codes or vectors (qcompress.compress,
qcompress.ray_engine), or JSON lines on stdout."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from qcompress.cli._common import (
    bar_on_first_use, cache_folder, check_output_file, codes_note, command, model_spec, note, progress_bars, usage_error,
)
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, Backend, BackendChoice, BatchSize, Bits, CacheDir, Device, Encoder, Float32, Head,
    LegacyCache, MaxLength, ModelDir, NoCache, Revision, Similarity, TrustRemoteCode, chosen_backend, chosen_bits,
    value,
)
from qcompress.errors import InputError

STDOUT = "-"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Role(str, Enum):
    document = "document"
    query = "query"


InputPath = Annotated[str, typer.Argument(
    metavar="INPUT",
    help="Texts to compress: JSONL (`_id` or `id`, `text`, optional `title`: text = title + ' ' + text), CSV with "
    "a header row naming those fields, Parquet with those columns (by suffix: .jsonl, .csv, .parquet), TSV "
    "`id<TAB>text`, or - for stdin (JSONL or TSV).")]
IdField = Annotated[Optional[str], typer.Option(
    "--id-field", help="The JSONL, CSV or Parquet field holding each record's id (e.g. docid). Default: _id, else id.")]
TextField = Annotated[Optional[str], typer.Option(
    "--text-field", help="The field holding each record's text (e.g. contents). Default: text.")]
TitleField = Annotated[Optional[str], typer.Option(
    "--title-field", help="The field holding an optional title, put before the text. Default: title.")]
Output = Annotated[Optional[str], typer.Option(
    "-o", "--output",
    help="Parquet file to write (`id` + `angles`, `codes` or `vectors`), or - for JSON lines on stdout (`{\"id\": ..., "
    "\"angles\": [...]}`, one per text, in input order). Default: INPUT's name with .parquet, beside it.")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output file (else it is refused).")]
RoleOption = Annotated[Role, typer.Option(
    "--role",
    help="document or query: the texts are encoded with the model's prompt for that role (e5: 'passage: ' / "
    "'query: '), recorded in the file's metadata. Compress queries with --role query.")]
Uint8 = Annotated[bool, typer.Option(
    "--uint8",
    help="Store angles as uniform 8-bit codes round(theta/pi*255) (1 byte per qubit instead of 4). Angle models "
    "only.")]
Resume = Annotated[bool, typer.Option(
    "--resume",
    help="Continue an interrupted run from the chunks it finished (kept in OUTPUT.partial/); same input and model "
    "(each finished chunk's ids and texts are compared by digest).")]
StoreText = Annotated[bool, typer.Option(
    "--store-text", help="Keep each row's text in a `text` column (shown by `qcompress search`).")]
AllowEmpty = Annotated[bool, typer.Option(
    "--allow-empty", help="Write an empty file for an input without records (otherwise an error).")]
EngineOption = Annotated[Engine, typer.Option(
    "--engine",
    help="local (this process) or ray: a Ray Data actor pool (one model per worker, one GPU each when the "
    "cluster has GPUs) writing OUTPUT as a folder of Parquet files (`part-<first row>.parquet`, in input order), "
    "read as one dataset by score/evaluate. Needs `pip install 'qcompress-embeddings[ray]'`.")]
NumWorkers = Annotated[Optional[int], typer.Option(
    "--num-workers", min=1, help="With --engine ray: actors (model copies). Default: one per GPU, else 1.")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address",
    help="With --engine ray: join this Ray cluster (e.g. ray://head:10001 or auto). Default: $RAY_ADDRESS, else "
    "start a local one for this run.")]


@command("compress")
def compress_command(
    input_path: InputPath,
    output: Output = None,
    force: Force = False,
    model_dir: ModelDir = None,
    revision: Revision = None,
    encoder: Encoder = None,
    head: Head = None,
    similarity: Similarity = None,
    role: RoleOption = Role.document,
    id_field: IdField = None,
    text_field: TextField = None,
    title_field: TitleField = None,
    bits: Bits = None,
    float32: Float32 = False,
    uint8: Uint8 = False,
    resume: Resume = False,
    store_text: StoreText = False,
    allow_empty: AllowEmpty = False,
    engine: EngineOption = Engine.local,
    num_workers: NumWorkers = None,
    ray_address: RayAddress = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    device: Device = None,
    backend: Backend = BackendChoice.torch,
    trust_remote_code: TrustRemoteCode = False,
    cache_dir: CacheDir = None,
    cache: LegacyCache = None,
    no_cache: NoCache = False,
) -> None:
    """Encode texts into a Parquet file of qubit angles (fidelity models) or vectors (cosine models).

    The input streams through in chunks of 4,096 records: each chunk is read and checked (duplicate ids, empty
    texts, malformed lines: an error naming the line), encoded and written as one row group in input order, so
    memory does not grow with the corpus. The file appears at OUTPUT only when complete, an existing file is
    replaced only with --force, a second run writing the same OUTPUT is refused; an interrupted or failed run
    keeps its finished chunks in OUTPUT.partial/ for --resume. With -o - the whole input is read and checked
    first, then written as JSON lines. The metadata (`qcompress meta show`) names the model and the encoding, so
    `score` never compares files of different models. The pooled-output cache is not used with --engine ray.

    With --bits B (and by default for a model trained with --bits) the file holds a `codes` column of
    ceil(dim*B/8) bytes a row, and its metadata the levels that decode them and where they came from: the
    model's own levels when it was trained with B bits, else levels fitted per qubit (Lloyd-Max) on the first
    4,096 rows of INPUT, encoded before the rest (--resume reuses the interrupted run's levels). `qcompress
    quantize` codes a float32 file the same way without encoding the texts again.

    Examples:

        qcompress compress corpus.jsonl                      # -> corpus.parquet, the default model
        qcompress compress collection.csv --id-field docid --text-field contents -o collection.parquet
        qcompress compress corpus.jsonl --model models/qbec -o corpus-4bit.parquet --bits 4   # 64 B at 128 qubits
        qcompress compress queries.tsv --encoder minilm --head none --similarity fidelity -o - | head -c 300
        qcompress compress corpus.jsonl --backend onnx-int8  # ONNX Runtime, int8: pip install 'qcompress-embeddings[onnx]'
    """
    out = _output_path(input_path, output)
    if out is None and (resume or store_text or engine is not Engine.local):
        usage_error("-o - streams JSON lines; --resume, --store-text and --engine ray write files")
    _check_output(out, output, engine, force)
    bits = chosen_bits(bits, float32, uint8)
    if bits and (out is None or engine is Engine.ray):
        where = "-o -" if out is None else "--engine ray"
        usage_error(f"--bits: codes need a Parquet file written by this process ({where} writes float32 or --uint8); "
                    "compress to float32, then `qcompress quantize` the file")
    spec = model_spec(model_dir, encoder, value(head), value(similarity), max_length, trust_remote_code, revision,
                      backend=chosen_backend(backend, device), export_dir=cache_folder(cache_dir, cache, False))
    encoding, role = "uint8" if uint8 else "float32", value(role)
    fields = _text_fields(id_field, text_field, title_field)
    _check_engine_options(engine, resume, store_text, device, num_workers, ray_address)
    if engine is Engine.ray:
        typed = cache if cache is not None else cache_dir if cache_dir != os.environ.get("QCOMPRESS_CACHE") else None
        return _compress_ray(input_path, out, spec, encoding, bits, batch_size, num_workers, ray_address, typed, role,
                             allow_empty, fields)
    folder = cache_folder(cache_dir, cache, no_cache)
    if out is None:
        return _compress_to_stdout(input_path, spec, encoding, bits, batch_size, device, folder, role, allow_empty,
                                   fields)
    _compress_local(input_path, out, spec, encoding, bits, batch_size, resume, device, folder, role, store_text,
                    allow_empty, fields)


def _check_engine_options(engine, resume: bool, store_text: bool, device, num_workers, ray_address) -> None:
    """Options that belong to one engine only: a usage error when given to the other."""
    if engine is Engine.ray and (resume or store_text or device is not None):
        usage_error("--resume, --store-text and --device are for the local engine; --engine ray writes the whole "
                    "folder again, one GPU per worker where the cluster has them")
    if engine is not Engine.ray and (num_workers is not None or ray_address is not None):
        usage_error("--num-workers and --ray-address go with --engine ray")


def _text_fields(id_field: Optional[str], text_field: Optional[str], title_field: Optional[str]):
    """--id-field, --text-field, --title-field as a `TextFields` (the defaults for those not given)."""
    from qcompress.formats.texts import TextFields

    for flag, name in (("--id-field", id_field), ("--text-field", text_field), ("--title-field", title_field)):
        if name is not None and not name.strip():
            usage_error(f"{flag}: a field name cannot be empty")
    return TextFields.named(id=id_field, text=text_field, title=title_field)


def _check_output(out: Optional[Path], output: Optional[str], engine: Engine, force: bool) -> None:
    """Refuse an output in the way before any work; say where the default output goes."""
    if out is not None and engine is Engine.local:  # the ray engine refuses any output in the way itself
        check_output_file(out, "-o", "embeddings.parquet", force)
    if output is None:
        note(f"writing {out}" + (" (a folder of Parquet files)" if engine is Engine.ray else ""))


def _output_path(input_path: str, output: Optional[str]) -> Optional[Path]:
    """-o, or INPUT's name with .parquet beside it; None for stdout."""
    if output == STDOUT:
        return None
    if output is not None:
        return Path(output)
    if input_path == STDOUT:
        usage_error("reading stdin: name the output, -o FILE.parquet (or -o - for JSON lines)")
    default = Path(input_path).with_suffix(".parquet")
    if default == Path(input_path):
        usage_error(f"{input_path} is already a .parquet file: name the output with -o")
    return default


def _empty_input(input_path: str, what: str) -> InputError:
    return InputError(f"no records to compress (empty input); pass --allow-empty to write {what}", file=input_path)


def _float_only(model, bits: Optional[int], where: str, role: str = "document") -> None:
    """Refuse to write a model's default codes where only float32 or uint8 go (JSON lines, --engine ray)."""
    from qcompress.codes import stored_bits

    if bits is None and stored_bits(model, None, role):
        raise InputError(f"this model stores {stored_bits(model, None)}-bit codes by default, which {where} cannot "
                         "write; pass --float32 (then `qcompress quantize` codes the file)")


def _compress_local(input_path: str, output: Path, spec, encoding: str, bits: Optional[int], batch_size: int,
                    resume: bool, device: Optional[str], cache_dir: Optional[str], role: str, store_text: bool,
                    allow_empty: bool, fields) -> None:
    import itertools

    from qcompress.cache import PooledCache
    from qcompress.codes import stored_bits
    from qcompress.compress import compress
    from qcompress.atomic import written_through
    from qcompress.formats import iter_texts, read_embedding_metadata
    from qcompress.formats.embeddings import codec_of
    from qcompress.formats.lines import count_lines
    from qcompress.quantization import check_encoding

    records = iter_texts(input_path, fields=fields)  # streamed: each chunk is checked as it is read
    first = list(itertools.islice(records, 1))  # the first batch of lines is read and checked before the model loads
    if not first and not allow_empty:
        raise _empty_input(input_path, "an empty file")
    model = spec.load(device)
    check_encoding(encoding, model.output_kind)  # before any progress bar
    stored_bits(model, bits, role)
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    with progress_bars() as start:
        done = compress(itertools.chain(first, records), output, model, batch_size=batch_size, encoding=encoding,
                        bits=bits, resume=resume, cache=cache,
                        on_batch=bar_on_first_use(start, "compressing", count_lines(input_path)),
                        store_text=store_text, role=role)
    earlier = f" ({done.resumed:,} from the earlier run)" if done.resumed else ""
    meta = {} if written_through(output) else read_embedding_metadata(output)  # a pipe cannot be read back
    if codec_of(meta) is not None:
        return codes_note(done.rows, codec_of(meta), meta["codes"].get("levels_source"), output, earlier)
    note(f"wrote {done.rows:,} rows of {model.dim} {_kind(encoding, model)} to {output}{earlier}")


def _compress_to_stdout(input_path: str, spec, encoding: str, bits: Optional[int], batch_size: int,
                        device: Optional[str], cache_dir: Optional[str], role: str, allow_empty: bool,
                        fields) -> None:
    """JSON lines on stdout, chunk by chunk, so that a pipeline sees the first rows before the last is encoded."""
    import numpy as np

    from qcompress.cache import PooledCache, encode
    from qcompress.compress import DEFAULT_CHUNK
    from qcompress.formats import read_texts
    from qcompress.quantization import check_encoding, quantize_angles

    records = read_texts(input_path, fields=fields)  # all of it, checked, before the first line goes out
    if not records and not allow_empty:
        raise _empty_input(input_path, "no lines")
    model = spec.load(device)
    check_encoding(encoding, model.output_kind)
    _float_only(model, bits, "-o - (JSON lines)", role)
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    key = model.output_kind
    with progress_bars() as start:
        advance = start("compressing", len(records))
        for first in range(0, len(records), DEFAULT_CHUNK):
            chunk = records[first : first + DEFAULT_CHUNK]
            values = encode(model, [text for _, text in chunk], batch_size=batch_size, cache=cache, on_batch=advance,
                            role=role)
            if encoding == "uint8":
                rows = [",".join(map(str, row)) for row in quantize_angles(values).numpy().tolist()]
            else:  # str(float32): the shortest text that reads back as the same float32 value
                rows = [",".join(map(str, row)) for row in values.float().numpy().astype(np.float32)]
            sys.stdout.write("".join(f'{{"id": {json.dumps(doc_id, ensure_ascii=False)}, "{key}": [{row}]}}\n'
                                     for (doc_id, _), row in zip(chunk, rows)))
            sys.stdout.flush()
    note(f"wrote {len(records):,} rows of {model.dim} {_kind(encoding, model)} as JSON lines to stdout")


def _kind(encoding: str, model) -> str:
    return "uint8 angle codes" if encoding == "uint8" else f"float32 {model.output_kind}"


def _compress_ray(input_path: str, output: Path, spec, encoding: str, bits: Optional[int], batch_size: int,
                  num_workers: Optional[int], ray_address: Optional[str], cache_dir: Optional[str], role: str,
                  allow_empty: bool, fields) -> None:
    """`compress --engine ray`: see qcompress.ray_engine. `cache_dir`: a cache folder typed on the command line."""
    from qcompress.ray_engine import compress_ray, read_records, require_ray

    require_ray()  # before reading anything: say how to install it
    if cache_dir is not None:
        note(f"note: the pooled-output cache ({cache_dir}) is not used with --engine ray: its workers may run on "
             "other machines")
    records = read_records(input_path, fields)  # all of it, validated, before any encoding
    if not records and not allow_empty:
        raise _empty_input(input_path, "an empty folder")
    model = spec.load()
    _float_only(model, bits, "--engine ray", role)
    with progress_bars() as start:
        result = compress_ray(records, output, model, spec, num_workers=num_workers, ray_address=ray_address,
                              batch_size=batch_size, encoding=encoding,
                              on_rows=start("compressing (ray)", len(records)), role=role)
    gpus = ", 1 GPU each" if result.gpus_per_worker else ""
    note(f"wrote {result.rows:,} rows of {model.dim} {_kind(encoding, model)} to {output}/ ({result.files} files, "
         f"{result.workers} worker(s){gpus}; Ray startup {result.seconds['startup']:.1f} s, "
         f"pipeline {result.seconds['pipeline']:.1f} s)")
