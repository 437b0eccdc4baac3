"""`qcompress train`: train a model folder (qcompress.training)."""

from __future__ import annotations

from typing import Callable, Optional

import typer

from qcompress.cli._common import app, cli_errors, print_json, stderr


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
        "negatives) from the DL21 judgements (see qcompress.data.trecdl).",
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
