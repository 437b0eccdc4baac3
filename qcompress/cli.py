"""The `qcompress` command line: thin wrappers over the library. Its --help text is the documentation.

Exit codes: 0 success, 1 bad input or a failed job (one line on stderr), 2 wrong usage, 130 interrupted.
Progress and messages go to stderr; stdout carries only results (tables, --json, runs, scores).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Compress text embeddings with a quantum-inspired projection head and compare them by fidelity "
    "(arXiv 2501.04591).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflow docstring paragraphs to the terminal; indented examples stay verbatim
)
stdout = Console()
stderr = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line `qcompress: error: ...` on stderr and exit."""
    stderr.print(f"qcompress: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func: Callable) -> Callable:
    """Turn bad-input exceptions into one clear line and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            stderr.print("qcompress: interrupted", highlight=False)
            raise typer.Exit(130)
        except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            fail(message)

    return wrapper


def _version(value: bool) -> None:
    if value:
        from qcompress._version import __version__

        print(f"qcompress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Compress text embeddings with a quantum-inspired head and compare them by fidelity (arXiv 2501.04591).

    Typical use: qcompress train --variant QBEC --output m/ ; qcompress compress corpus.jsonl --model m/ -o c.parquet ;
    qcompress evaluate --model m/ --dataset cranfield
    """


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=False) + "\n")
    sys.stdout.flush()


@app.command("count-params")
@cli_errors
def count_params(
    in_dim: Optional[int] = typer.Option(
        None, "--in-dim", help="Input size (qubits = embedding dimensions). Default: the encoder's hidden size, or 768."
    ),
    out_dims: List[int] = typer.Option(
        [384, 256, 128, 64], "--out-dim", help="Output size; repeat for several rows."
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="Also count this encoder's parameters (hub id or local folder; weights are not loaded)."
    ),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare head sizes: quantum head 12*(k-1)*out vs classical Linear(in, out)+bias, per output size.

    Example: qcompress count-params --in-dim 768 --out-dim 256 --out-dim 128 --json
    """
    from qcompress.heads import classical_head_num_parameters
    from qcompress.quantum import quantum_head_num_parameters

    encoder_params = None
    if encoder is not None:
        from qcompress.encoder import count_encoder_parameters

        encoder_params, hidden = count_encoder_parameters(encoder, trust_remote_code=trust_remote_code)
        in_dim = in_dim or hidden
    in_dim = 768 if in_dim is None else in_dim
    rows = []
    for out_dim in out_dims:
        quantum = quantum_head_num_parameters(in_dim, out_dim)
        classical = classical_head_num_parameters(in_dim, out_dim)
        rows.append(
            {
                "in_dim": in_dim,
                "out_dim": out_dim,
                "quantum_head": quantum,
                "classical_head": classical,
                "ratio": round(classical / quantum, 2) if quantum else None,
                "padded_qubits": -in_dim % out_dim,
            }
        )
    if as_json:
        print_json({"in_dim": in_dim, "encoder": encoder, "encoder_parameters": encoder_params, "rows": rows})
        return
    table = Table(title=f"Head parameters, {in_dim} -> out" + (f" (encoder {encoder})" if encoder else ""))
    for col in ("in -> out", "quantum head", "classical head", "classical / quantum"):
        table.add_column(col, justify="right")
    if encoder_params is not None:
        table.add_column("encoder", justify="right")
    for row in rows:
        cells = [
            f"{row['in_dim']} -> {row['out_dim']}",
            f"{row['quantum_head']:,}",
            f"{row['classical_head']:,}",
            f"{row['ratio']}x" if row["ratio"] is not None else "-",
        ]
        if encoder_params is not None:
            cells.append(f"{encoder_params:,}")
        table.add_row(*cells)
    _print_table(table)


# --- train (issue 3) ---
_TRAIN_LAYERS_HELP = (
    "Train the last N transformer layers of the encoder (0 = frozen: pooled outputs are computed once and only the "
    "head trains, orders of magnitude faster). Refused if the encoder has fewer layers. The variants use 4 "
    "(SPEC §4): the authors' loop unfroze layer[-i] for i in 0..3, i.e. layer 0 plus the last 3 (an "
    "off-by-one, layer[-0] is layer[0]); qcompress trains the last 4, as they intended. Default: the variant's, "
    "else 0."
)


@app.command("train")
@cli_errors
def train_command(
    output: str = typer.Option(
        ..., "-o", "--output",
        help="Model folder to write. It appears only when training has finished; checkpoints go to OUTPUT.ckpt/.",
    ),
    variant: Optional[str] = typer.Option(
        None, "--variant",
        help="One of the paper's six (SPEC §4), case-insensitive: BT, QBT (no head; cosine / fidelity), BEC, QBEC "
        "(linear / quantum head, last 4 layers train), BFEC, QBFEC (frozen encoder; QBFEC also L2-normalises "
        "before the angle encoding, as the authors do). Explicit --head/--dim/--similarity/--train-layers/"
        "--normalize override it.",
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder",
        help="Hugging Face id or local model folder (mean pooling). Default: the offline all-MiniLM-L6-v2.",
    ),
    head: Optional[str] = typer.Option(None, "--head", help="none, linear (Linear + tanh) or quantum. Default: none."),
    dim: Optional[int] = typer.Option(
        None, "--dim",
        help="Output size of the head. Default: the encoder's size // 3, the paper's 768 -> 256 ratio "
        "(128 for 384-d MiniLM).",
    ),
    similarity: Optional[str] = typer.Option(
        None, "--similarity", help="cosine or fidelity. Default: fidelity for the quantum head, else cosine."
    ),
    train_layers: Optional[int] = typer.Option(None, "--train-layers", help=_TRAIN_LAYERS_HELP),
    normalize: Optional[bool] = typer.Option(
        None, "--normalize/--no-normalize", help="L2-normalise pooled outputs before the head. Default: on for QBFEC."
    ),
    max_length: int = typer.Option(256, "--max-length", help="Tokens per text (longer texts are truncated)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset",
        help="'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), "
        "'trec-dl-21' (with --trec-dir) or an ir_datasets id.",
    ),
    trec_dir: Optional[str] = typer.Option(
        None, "--trec-dir", envvar="QCOMPRESS_TREC_DIR",
        help="Local TREC DL folder for --dataset trec-dl-21: (query, grade >= 2 passage, judged-0 passages as hard "
        "negatives) from the DL21 judgements (see qcompress.trecdl).",
    ),
    split: str = typer.Option("train", "--split", help="Qrels split to train on."),
    eval_split: Optional[str] = typer.Option(
        None, "--eval-split",
        help="Validate on this split after every epoch (NDCG@10; full ranking for cranfield and folders, judged-only "
        "for ir_datasets ids) and keep the best epoch's weights.",
    ),
    negatives: int = typer.Option(
        5, "--negatives",
        help="Hard negatives per example: the dataset's own where it has them, otherwise mined: the top-ranked "
        "documents by the untrained encoder's cosine that are not judged relevant (cached).",
    ),
    train_fraction: float = typer.Option(
        1.0, "--train-fraction",
        help="Train on this share of the queries, in (0, 1] (seeded; for data-scarcity studies).",
    ),
    in_batch_negatives: bool = typer.Option(
        False, "--in-batch-negatives",
        help="Also contrast each query with the other examples' documents (those judged relevant to it masked).",
    ),
    logit_scale: float = typer.Option(
        20.0, "--logit-scale", help="Logits = scale x similarity (fidelity itself, or cosine); the authors' 20."
    ),
    optimizer: str = typer.Option(
        "adam", "--optimizer", help="adam (the authors') or adamw (decoupled --weight-decay)."
    ),
    lr: float = typer.Option(2e-5, "--lr", help="Learning rate of the encoder layers (the authors' 2e-5)."),
    head_lr: float = typer.Option(
        1e-3, "--head-lr",
        help="Learning rate of the head. A fresh head barely moves at the encoder's 2e-5; 1e-3 trains it within an "
        "epoch (measured on Cranfield, where 113 training queries then overfit: watch --eval-split, try 1e-4).",
    ),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Weight decay (0: plain Adam, as the authors)."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the training examples (the paper: 5)."),
    batch_size: int = typer.Option(
        16, "--batch-size", help="Examples per step (the paper: 64; 16 keeps CPU steps short)."
    ),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps in all."),
    seed: int = typer.Option(42, "--seed", help="Seed of the head's initialisation, data order and dropout."),
    save_every: Optional[int] = typer.Option(
        None, "--save-every", help="Also checkpoint every N steps (a checkpoint is always written at each epoch's end)."
    ),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted run from OUTPUT.ckpt/. Give the same arguments (only --max-steps, --epochs "
        "and --save-every may change); the result is the same as an uninterrupted run's.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing output folder (and old checkpoints)."
    ),
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir",
        help="Cache of mined negatives and pooled encoder outputs. Default: $QCOMPRESS_CACHE, else ~/.cache/qcompress.",
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... Default: cuda if available."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object on stdout at the end."),
    stop_after_steps: Optional[int] = typer.Option(None, "--stop-after-steps", hidden=True),
) -> None:
    """Train a model: an encoder, mean pooling and a head (none, linear or quantum), for retrieval.

    Each example is (query, a judged-relevant document, N hard negatives); the loss is cross-entropy over
    logit-scale x similarity, as the authors train (SPEC §5). Deterministic given --seed. Ctrl-C saves a
    checkpoint and exits 130; rerun with --resume. The output folder holds the model (qcompress.json with every
    resolved argument under "training", head.safetensors, encoder/ when layers trained), train_log.jsonl and
    train_curve.png.

    Examples:

        qcompress train --variant QBEC -o models/qbec --eval-split test --epochs 5
        qcompress train --variant QBFEC --encoder bert-base-uncased -o models/qbfec --dim 256
        qcompress train --head linear --dim 64 --train-layers 2 --dataset beir/scifact -o models/lin64
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from qcompress.training import TrainingInterrupted, summary, train

    config = dict(
        output=output, encoder=encoder, variant=variant, head=head, dim=dim, similarity=similarity,
        train_layers=train_layers, normalize=normalize, max_length=max_length, trust_remote_code=trust_remote_code,
        dataset=dataset, trec_dir=trec_dir, split=split, eval_split=eval_split, negatives=negatives, train_fraction=train_fraction,
        in_batch_negatives=in_batch_negatives, logit_scale=logit_scale, optimizer=optimizer, lr=lr, head_lr=head_lr,
        weight_decay=weight_decay, epochs=epochs, batch_size=batch_size, max_steps=max_steps, seed=seed,
        save_every=save_every, cache_dir=cache_dir, overwrite=overwrite, resume=resume,
        stop_after_steps=stop_after_steps, device=device,
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=stderr, transient=True,  # bars vanish: an error stays one line
    ) as bars:
        tasks: dict[str, object] = {}

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            tasks[description] = task
            return lambda n: bars.advance(task, n)

        def on_row(row: dict) -> None:
            if row["kind"] == "step" and "training" in tasks:
                bars.update(tasks["training"], description=f"training, loss {row['loss']:.4f}")
            elif row["kind"] == "validation":
                bars.console.print(f"epoch {row['epoch']}: validation NDCG@10 {row['ndcg_cut_10']:.4f} "
                                   f"({row['split']}, {row['protocol']})", highlight=False, markup=False)

        try:
            folder = train(config, progress=start, callback=on_row)
        except TrainingInterrupted as stop:
            where = f"checkpoint of step {stop.step} in {stop.checkpoint}" if stop.checkpoint else "no checkpoint yet"
            bars.stop()
            stderr.print(f"qcompress: interrupted; {where}; rerun the same command with --resume to continue",
                         highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(130)
    from qcompress.distributed import context

    if not context().is_main:  # under torchrun rank 0 reports (and wrote the folder)
        return
    result = summary(folder)
    if as_json:
        print_json(result)
    else:
        best = (f", best epoch {result['best_epoch']} (validation NDCG@10 {result['best_ndcg_cut_10']:.4f})"
                if result["best_epoch"] is not None else "")
        stderr.print(f"wrote {folder}: {result['steps']} steps, final loss {result['final_loss']:.4f}{best}",
                     highlight=False, markup=False, soft_wrap=True)


# --- compress (issue 4) ---
# Shared by compress, score and evaluate: model options, model loading, progress bars on stderr.
import contextlib  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

_MODEL_HELP = "A model folder written by `qcompress train`."
_ENCODER_HELP = (
    "Instead of --model: an encoder without a trained head (hub id, local folder, or 'minilm' for the offline "
    "all-MiniLM-L6-v2); mean pooling, no normalisation."
)
_HEAD_HELP = "With --encoder: only 'none' (a head must be trained first: `qcompress train`, then --model)."
_SIMILARITY_HELP = (
    "With --encoder: 'cosine' (store and compare the pooled vectors; the paper's BT) or 'fidelity' (store the "
    "encoded qubit angles tanh(u)*pi/2+pi/2 and compare by fidelity; the paper's QBT). Default cosine."
)


def _load_cli_model(
    model_dir: Optional[str],
    encoder: Optional[str],
    head: Optional[str],
    similarity: Optional[str],
    max_length: Optional[int],
    trust_remote_code: bool,
):
    """The model named by --model DIR, or by --encoder NAME --head none --similarity S."""
    from qcompress.model import ModelSpec

    if model_dir is not None and (encoder is not None or head is not None or similarity is not None):
        raise ValueError(
            "--model DIR already names its encoder, head and similarity; drop --encoder/--head/--similarity"
        )
    if model_dir is None and encoder is None:
        raise ValueError("name a model: --model DIR (from `qcompress train`) or --encoder NAME --head none")
    if head not in (None, "none"):
        raise ValueError(
            f"--encoder with --head {head} would use an untrained, random head; train it with `qcompress train` "
            "and pass --model DIR, or use --head none"
        )
    if max_length is not None and max_length <= 0:
        raise ValueError(f"--max-length must be positive, got {max_length}")
    return ModelSpec(model_dir=model_dir, encoder=encoder, similarity=similarity, max_length=max_length,
                     trust_remote_code=trust_remote_code).load()


def _check_model_options(encoder: Optional[str], head: Optional[str], similarity: Optional[str]) -> None:
    if encoder is None and (head is not None or similarity is not None):
        raise ValueError("--head and --similarity go with --encoder NAME (a --model folder names its own)")


@contextlib.contextmanager
def _progress_bars():
    """Yield `start(description, total) -> advance(n)`: one rich progress bar per stage, on stderr."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=stderr, transient=False,
    ) as progress:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        yield start


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
    model_dir: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP),
    head: Optional[str] = typer.Option(None, "--head", help=_HEAD_HELP),
    similarity: Optional[str] = typer.Option(None, "--similarity", help=_SIMILARITY_HELP),
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
    _check_model_options(encoder, head, similarity)
    records = read_texts(input_path)  # all of it, validated, before any encoding
    model = _load_cli_model(model_dir, encoder, head, similarity, max_length, trust_remote_code)
    check_encoding("uint8" if uint8 else "float32", model.output_kind)  # before any progress bar
    cache = None
    if cache_dir is not None:
        from qcompress.cache import PooledCache

        cache = PooledCache(cache_dir, model)
    with _progress_bars() as start:
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
    _check_model_options(encoder, head, similarity)
    records = read_records(input_path)  # all of it, validated, before any encoding
    model = _load_cli_model(model_dir, encoder, head, similarity, max_length, trust_remote_code)
    spec = ModelSpec(model_dir=model_dir, encoder=encoder, similarity=similarity, max_length=max_length,
                     trust_remote_code=trust_remote_code)
    with _progress_bars() as start:
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


# --- score (issue 4) ---
def _score_pairs(pairs: list[tuple[str, str]], model, fidelity: bool, batch_size: int) -> None:
    import numpy as np

    from qcompress.similarity import paired_scores

    if fidelity and model.similarity != "fidelity":
        raise ValueError(f"--fidelity needs an angle model; this one compares by {model.similarity}")
    # Each distinct text is encoded once, however often it appears (one query against many passages).
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    row = {t: i for i, t in enumerate(texts)}
    with _progress_bars() as start:
        emb = model.encode(texts, batch_size=batch_size, on_batch=start("encoding", len(texts)))
    q = emb[[row[a] for a, _ in pairs]]
    p = emb[[row[b] for _, b in pairs]]
    scores = paired_scores(q, p, model.similarity, log=not fidelity) if pairs else q.new_empty(0)
    # str(float32): the shortest text that reads back as the same float32 value.
    sys.stdout.write("".join(str(np.float32(s)) + "\n" for s in scores.tolist()))
    sys.stdout.flush()


@app.command("score")
@cli_errors
def score_command(
    queries: Optional[Path] = typer.Argument(
        None, metavar="[QUERIES]", help="Query embeddings: a Parquet file from `qcompress compress`."
    ),
    corpus: Optional[Path] = typer.Argument(
        None, metavar="[CORPUS]", help="Corpus embeddings: a Parquet file, or a folder of them, from the same model."
    ),
    top_k: int = typer.Option(1000, "--top-k", help="Documents per query in the run."),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", help="TREC run file to write (atomically). Default: stdout."
    ),
    tag: str = typer.Option("qcompress", "--tag", help="Run tag, the last column of the TREC run."),
    pairs: Optional[str] = typer.Option(
        None, "--pairs",
        help="Instead of QUERIES CORPUS: (query, passage) pairs, TSV `query<TAB>passage` or JSONL "
        "(`query`, `passage`), or - for stdin. Prints one score per line, in order. Needs a model.",
    ),
    model_dir: Optional[str] = typer.Option(None, "--model", help=_MODEL_HELP + " With --pairs."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=_ENCODER_HELP + " With --pairs."),
    head: Optional[str] = typer.Option(None, "--head", help=_HEAD_HELP),
    similarity: Optional[str] = typer.Option(None, "--similarity", help=_SIMILARITY_HELP),
    fidelity: bool = typer.Option(
        False, "--fidelity",
        help="With --pairs and an angle model: print the fidelity itself, in [0, 1] (underflows to 0 for "
        "unrelated texts), instead of the log-fidelity.",
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch (with --pairs)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per text (with --pairs)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
) -> None:
    """Rank a corpus for each query (exact top-k) into a TREC run, or score (query, passage) pairs.

    With two Parquet files: for every query, the --top-k documents by log-fidelity (angle models) or cosine
    (vector models), as TREC run lines `qid Q0 docid rank score tag`; scores are log-fidelities (<= 0, higher is
    closer) or cosines. Both files must come from the same model (their metadata is compared); uint8 codes
    compare fine with float32 angles of the same model.

    With --pairs and a model: one score per pair and line, in input order: log-fidelity for fidelity models
    (--fidelity for the fidelity itself), cosine for cosine models.

    Examples:

        qcompress score queries.parquet corpus.parquet --top-k 100 -o run.trec --tag qbec
        printf 'what is lift\\tLift is a force.\\n' | qcompress score --pairs - --model models/qbec
    """
    from qcompress.formats import check_same_model, read_embedding_metadata, read_embeddings, write_run
    from qcompress.search import search_parquet

    _check_model_options(encoder, head, similarity)
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if pairs is not None:
        if queries is not None or corpus is not None:
            raise ValueError("--pairs scores text pairs with a model; it takes no QUERIES CORPUS files")
        from qcompress.formats import read_pairs

        records = read_pairs(pairs)  # all of it, validated, before the model is loaded
        model = _load_cli_model(model_dir, encoder, head, similarity, max_length, trust_remote_code)
        _score_pairs(records, model, fidelity, batch_size)
        return
    if queries is None or corpus is None:
        raise ValueError(
            "give QUERIES and CORPUS Parquet files (from `qcompress compress`), or --pairs FILE --model DIR"
        )
    if model_dir is not None or encoder is not None or fidelity:
        raise ValueError(
            "QUERIES CORPUS are scored with the model named in their metadata; --model/--encoder/--fidelity "
            "go with --pairs"
        )
    if top_k <= 0:
        raise ValueError(f"--top-k must be positive, got {top_k}")
    q = read_embeddings(queries)
    check_same_model(q.metadata, read_embedding_metadata(corpus), what=f"{queries} and {corpus}")
    # The corpus is streamed batch by batch: memory stays bounded for corpora larger than memory.
    scores, doc_ids = search_parquet(q.values, corpus, top_k)
    run = {qid: dict(zip(doc_ids[row], scores[row].tolist())) for row, qid in enumerate(q.ids)}
    write_run(output or "-", run, tag)
    if output:
        stderr.print(f"wrote the top {scores.shape[1]} documents for each of {len(q):,} queries to {output}",
                     highlight=False, markup=False, soft_wrap=True)


# --- evaluate (issue 4) ---
_TREC_DL = {"2019": "msmarco-passage/trec-dl-2019/judged", "2020": "msmarco-passage/trec-dl-2020/judged"}
_PROTOCOL_NOTES = {
    "judged": "judged-only re-ranking: each query's judged documents, as in the paper; not comparable with "
    "full-corpus retrieval or BM25 re-ranking",
    "full": "full-corpus ranking (exact top-k)",
    "pool": "ranking of the whole local passage pool (optimistic against the full MS MARCO corpus; for "
    "relative comparisons only)",
    "rerank": "re-ranking of a first-stage run",
}


def _encoder_label(name: str) -> str:
    from qcompress.encoder import offline_minilm_path, resolve_encoder

    offline = offline_minilm_path()
    if offline is not None and resolve_encoder(name) == str(offline):
        return "all-MiniLM-L6-v2"
    return Path(name.rstrip("/")).name or name


def _tag(label: str) -> str:
    """A model label as a TREC run tag and file-name part: no whitespace or path characters."""
    return re.sub(r"[^\w.+-]", "_", label)


def _print_table(table: Table) -> None:
    """Print a results table whole: piped or redirected, as wide as it needs (rich would cut numbers at 80
    columns); on a terminal, at the terminal's width."""
    from rich.measure import Measurement

    if stdout.is_terminal:
        stdout.print(table)
        return
    needed = Measurement.get(stdout, stdout.options.update(max_width=10_000), table).maximum
    Console(width=max(needed, stdout.width)).print(table)  # a console's width caps print(width=...)


def _run_path(path: Path, tag: str, several: bool) -> Path:
    # One model: exactly --run-out; several: one file each, the model's tag before the suffix.
    return path.with_name(f"{path.stem}.{tag}{path.suffix}") if several else path


@app.command("evaluate")
@cli_errors
def evaluate_command(
    model_dirs: List[str] = typer.Option(
        [], "--model",
        help="A model folder from `qcompress train`; repeat to compare several (p-values against the first).",
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help=_ENCODER_HELP + " Placed first (the baseline) when combined with --model."
    ),
    head: Optional[str] = typer.Option(None, "--head", help=_HEAD_HELP),
    similarity: Optional[str] = typer.Option(None, "--similarity", help=_SIMILARITY_HELP),
    trec: Optional[str] = typer.Option(
        None, "--trec",
        help="2019 or 2020: the judged queries of TREC DL passage. From the local folder --trec-dir (or "
        "$QCOMPRESS_TREC_DIR; its passage pool need not hold every judged passage, see qcompress.trecdl) where "
        "one is given, else ir_datasets msmarco-passage/trec-dl-YEAR/judged (needs the MS MARCO corpus). "
        "Default protocol: rerank with --trec-dir (its BM25 top 100), judged with ir_datasets.",
    ),
    trec_dir: Optional[Path] = typer.Option(
        None, "--trec-dir", envvar="QCOMPRESS_TREC_DIR",
        help="Local TREC DL folder (qrels, queries, passage pool, BM25 runs) used by --trec.",
    ),
    dataset: Optional[str] = typer.Option(
        None, "--dataset",
        help="'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or "
        "an ir_datasets id. Default protocol: full for cranfield and folders, judged for ir_datasets ids.",
    ),
    split: str = typer.Option(
        "test", "--split", help="Qrels split of a BEIR folder or cranfield (ignored for ir_datasets ids)."
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol",
        help="judged: re-rank each query's judged documents (the paper's protocol; NOT comparable with full "
        "ranking). full: rank the whole corpus. pool: rank the whole passage pool of a local TREC DL folder "
        "(optimistic against the full MS MARCO corpus: for relative comparisons). rerank: re-rank a "
        "--first-stage run's top --top-k per query (default first stage: the collection's own, e.g. the local "
        "TREC DL BM25 run).",
    ),
    first_stage: Optional[Path] = typer.Option(
        None, "--first-stage",
        help="TREC run whose candidates are re-ranked (e.g. BM25 top-1000); implies --protocol rerank.",
    ),
    top_k: int = typer.Option(
        1000, "--top-k", help="full: documents kept per query; rerank: first-stage candidates per query."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per text. Default: the model's (256)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    per_query: bool = typer.Option(False, "--per-query", help="Also print every query's values."),
    run_out: Optional[Path] = typer.Option(
        None, "--run-out",
        help="Write each model's TREC run; with several models FILE gets the model's tag before its suffix.",
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache", envvar="QCOMPRESS_CACHE",
        help="Folder caching pooled encoder outputs per (encoder weights, max length, text): a repeated evaluation "
        "with the same encoder skips the encoder. Default: $QCOMPRESS_CACHE, else no cache.",
    ),
    permutations: int = typer.Option(10000, "--permutations", help="Permutations of the paired randomization test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomization test."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
) -> None:
    """Rank a test collection with one or more models and report NDCG@10, RR@10, R@100, R@1000 and MAP.

    Metrics come from pytrec_eval over every judged query of the split: a query with nothing ranked scores 0
    (and is counted), never silently dropped. RR, recall and MAP count grades >= the collection's relevance
    level as relevant (2 for TREC DL); NDCG uses the graded labels. Every output names its protocol.

    Several models give one comparison table (head parameters, bytes per stored vector, metrics) with a
    two-sided paired randomization test (and a paired t-test) on per-query NDCG@10 against the first model.

    Examples:

        qcompress evaluate --encoder minilm --head none --similarity fidelity --dataset cranfield
        qcompress evaluate --model models/bec --model models/qbec --trec 2019 --json
        qcompress evaluate --model models/qbec --trec 2020 --protocol rerank --first-stage bm25.trec
    """
    from qcompress.data import load_collection
    from qcompress.evaluation import METRICS, check_protocol, evaluate, paired_randomization_test, paired_t_test
    from qcompress.formats import read_run, write_run
    from qcompress.trecdl import EVALUATION_SETS

    _check_model_options(encoder, head, similarity)
    if not model_dirs and encoder is None:
        raise ValueError("name a model: --model DIR (repeatable) or --encoder NAME --head none")
    if trec is not None and dataset is not None:
        raise ValueError("--trec and --dataset both name the collection; give one")
    if trec is not None and trec not in _TREC_DL:
        raise ValueError(f"--trec {trec}: choose 2019 or 2020")
    if first_stage is not None and protocol is None:
        protocol = "rerank"
    if trec is not None:
        dataset_id = f"trec-dl-{trec}" if trec_dir is not None else _TREC_DL[trec]
    else:
        dataset_id = dataset or "cranfield"
    local_trec = dataset_id in EVALUATION_SETS
    if protocol is None:
        local = dataset_id == "cranfield" or Path(dataset_id).is_dir()
        protocol = "rerank" if local_trec else "full" if local else "judged"
    if protocol == "pool" and not local_trec:
        raise ValueError("--protocol pool ranks the passage pool of a local TREC DL folder (--trec YEAR --trec-dir "
                         "DIR); use --protocol full to rank a whole corpus")
    if protocol != "rerank":  # rerank's first stage is checked once the collection (which may ship one) is loaded
        check_protocol(protocol, first_stage)
    for name, value in (("--top-k", top_k), ("--batch-size", batch_size), ("--permutations", permutations)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")

    collection = load_collection(dataset_id, split, trec_dir=trec_dir)
    first = read_run(first_stage) if first_stage is not None else None
    first_stage_name = str(first_stage) if first_stage is not None else None
    if protocol == "rerank" and first is None:
        if collection.first_stage is None:
            raise ValueError(
                f"--protocol rerank needs --first-stage RUN (a TREC run file, e.g. BM25 top-1000); "
                f"{collection.name} ships no first-stage run"
            )
        first, first_stage_name = collection.first_stage, f"{collection.name} first stage (shipped)"
    cache_root = cache_dir if cache_dir is not None and str(cache_dir).strip() else None

    specs: list[tuple[Optional[str], Optional[str]]] = ([(None, encoder)] if encoder is not None else [])
    specs += [(d, None) for d in model_dirs]
    rows: list[dict] = []
    results = []
    labels: set[str] = set()
    with _progress_bars() as start:
        for model_dir, enc in specs:
            model = _load_cli_model(model_dir, enc, head if enc else None, similarity if enc else None,
                                    max_length, trust_remote_code)
            if model_dir is not None:
                label = Path(model_dir.rstrip("/")).name or model_dir
            else:
                label = f"{_encoder_label(enc)}:{model.similarity}"
            base, n = label, 2
            while label in labels or _tag(label) in {_tag(x) for x in labels}:  # tags name the run files
                label, n = f"{base}#{n}", n + 1
            labels.add(label)
            cache = None
            if cache_root is not None:
                from qcompress.cache import PooledCache

                cache = PooledCache(cache_root, model)
            result = evaluate(
                model, collection, protocol, first_stage=first, top_k=top_k, batch_size=batch_size, cache=cache,
                progress=lambda what, total, label=label: start(f"{label}: {what}", total),
            )
            head_params = sum(p.numel() for p in model.head.parameters()) if model.head is not None else 0
            rows.append({
                "label": label,
                "tag": _tag(label),
                "model": model.describe(),
                "head_parameters": head_params,
                "bytes_per_vector": {
                    "float32": 4 * model.dim,
                    "uint8": model.dim if model.output_kind == "angles" else None,
                },
                "empty_queries": len(result.empty_queries),
            })
            results.append(result)
            del model

    n_queries = len(collection.qrels)
    if run_out is not None:
        for row, result in zip(rows, results):
            path = _run_path(run_out, row["tag"], len(rows) > 1)
            write_run(path, result.run, row["tag"])
            row["run_out"] = str(path)
    significance = {}
    qids = list(collection.qrels)
    base_ndcg = [results[0].per_query[q]["ndcg_cut_10"] for q in qids]
    for row, result in zip(rows[1:], results[1:]):
        ndcg = [result.per_query[q]["ndcg_cut_10"] for q in qids]
        t, t_p = paired_t_test(ndcg, base_ndcg)
        significance[row["label"]] = {
            "against": rows[0]["label"],
            "metric": "ndcg_cut_10",
            "difference": result.metrics["ndcg_cut_10"] - results[0].metrics["ndcg_cut_10"],
            "randomization_p": paired_randomization_test(ndcg, base_ndcg, n=permutations, seed=seed),
            "permutations": permutations,
            "seed": seed,
            "t": t if math.isfinite(t) else None,  # JSON has no inf/NaN: None where the test is undefined
            "t_test_p": t_p if math.isfinite(t_p) else None,
        }
    if protocol == "judged" and results[0].judged_without_text:
        total = sum(len(docs) for docs in collection.qrels.values())
        stderr.print(
            f"note: {results[0].judged_without_text:,} of {total:,} judgements name documents without text in "
            f"{collection.name}; they cannot be ranked (NDCG's ideal ranking still counts them)",
            highlight=False, markup=False, soft_wrap=True,
        )
    for row in rows:
        if row["empty_queries"]:
            stderr.print(f"{row['label']}: {row['empty_queries']} of {n_queries} judged queries had no candidates "
                         "and score 0", highlight=False, markup=False, soft_wrap=True)

    if as_json:
        out: dict = {
            "dataset": collection.name,
            "split": collection.split,
            "protocol": protocol,
            "queries": n_queries,
            "relevance_level": collection.relevance_level,
            "top_k": top_k if protocol != "judged" else None,
            "first_stage": first_stage_name,
            "judged_without_text": results[0].judged_without_text if protocol == "judged" else None,
            "models": rows,
            "metrics": {row["label"]: result.metrics for row, result in zip(rows, results)},
        }
        if significance:
            out["significance"] = significance
        if len(rows) == 1:
            out.update(results[0].metrics)  # flat metric keys, e.g. "ndcg_cut_10", for one model
        if per_query:
            out["per_query"] = {row["label"]: result.per_query for row, result in zip(rows, results)}
        print_json(out)
        return

    table = Table(
        title=f"{collection.name} ({collection.split}), protocol {protocol}: {n_queries} queries",
        caption=_PROTOCOL_NOTES[protocol]
        + (f" ({first_stage_name}, top {top_k} per query)" if protocol == "rerank" else "")
        + (f"; {results[0].judged_without_text:,} judgements without text could not be ranked"
           if protocol == "judged" and results[0].judged_without_text else "")
        + f"; relevance level {collection.relevance_level}"
        + (f"; p: paired randomization test on NDCG@10 vs {rows[0]['label']} ({permutations} permutations)"
           if significance else ""),
    )
    table.add_column("model")
    for col in ("head", "dim", "head params", "bytes/vector", *METRICS.values()):
        table.add_column(col, justify="right")
    if significance:
        table.add_column("p", justify="right")
    for row, result in zip(rows, results):
        size = row["bytes_per_vector"]
        cells = [
            row["label"], row["model"]["head"], str(row["model"]["dim"]), f"{row['head_parameters']:,}",
            f"{size['float32']:,}" + (f" (u8 {size['uint8']:,})" if size["uint8"] else ""),
            *(f"{result.metrics[m]:.4f}" for m in METRICS),
        ]
        if significance:
            sig = significance.get(row["label"])
            cells.append(f"{sig['randomization_p']:.4f}" if sig else "-")
        table.add_row(*cells)
    _print_table(table)
    if per_query:
        detail = Table(title=f"Per query, protocol {protocol}")
        detail.add_column("query")
        metrics = list(METRICS) if len(rows) == 1 else ["ndcg_cut_10"]
        for row in rows:
            for m in metrics:
                detail.add_column(METRICS[m] if len(rows) == 1 else f"{row['label']} NDCG@10", justify="right")
        for q in qids:
            detail.add_row(q, *(f"{r.per_query[q][m]:.4f}" for r in results for m in metrics))
        _print_table(detail)


if __name__ == "__main__":  # pragma: no cover
    app()
