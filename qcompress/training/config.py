"""The arguments of a training run: `TrainConfig` (each field with its documentation, from which `qcompress train`
derives its options), the paper's six variants, and the checks and defaults that turn arguments into the run's
recipe (the resolved arguments stored in the model folder under "training").
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from qcompress.defaults import DEFAULT_MAX_LENGTH, MIXINGS, POOLINGS
from qcompress.errors import InputError
from qcompress.heads import get_head
from qcompress.similarity import get_similarity

__all__ = ["VARIANTS", "DEFAULT_HEAD_LR", "FROZEN_PREFIX", "LOSSES", "PSEUDO_QUERIES", "DISTILL_MIXING", "QUANTIZERS",
           "CODE_LEVELS", "TrainConfig",
           "ArgumentError", "resolve_variant", "default_dim", "as_config", "check_values", "resolve", "recipe_of", "Progress"]

# SPEC §4. "Last 4 layers" is what the authors meant; their loop trained layer 0 plus the last 3 (see --help).
VARIANTS: dict[str, dict] = {
    "BT": {"head": "none", "similarity": "cosine", "train_layers": 4, "normalize": False},
    "QBT": {"head": "none", "similarity": "fidelity", "train_layers": 4, "normalize": False},
    "BEC": {"head": "linear", "similarity": "cosine", "train_layers": 4, "normalize": False},
    "QBEC": {"head": "quantum", "similarity": "fidelity", "train_layers": 4, "normalize": False},
    "BFEC": {"head": "linear", "similarity": "cosine", "train_layers": 0, "normalize": False},
    # The authors' frozen quantum variant L2-normalises the pooled embedding before the tanh encoding.
    "QBFEC": {"head": "quantum", "similarity": "fidelity", "train_layers": 0, "normalize": True},
}
# Measured on Cranfield train with frozen MiniLM (3 epochs of 54 steps, batch 16): at 2e-5, the authors' single
# rate, a fresh head barely moves (QBFEC loss 2.07 -> 2.05); 1e-3 trains both heads within an epoch (QBFEC
# 2.06 -> 1.85, BFEC 3.0 -> 0.6). With Cranfield's 113 training queries that is overfitting: test NDCG@10 drops
# below the untrained head's. Use eval_split to see it (epoch 0 is the untrained baseline), or 1e-4 there.
DEFAULT_HEAD_LR = 1e-3
# Arguments that may change between an interrupted run and its resume: how long to run and how often to save.
RESUMABLE_CHANGES = ("max_steps", "epochs", "save_every")
# Operational arguments: not part of the recipe, not stored in the model folder, free to change on resume.
OPERATIONAL = ("output", "overwrite", "resume", "cache_dir", "device", "store_encoder")

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


def _arg(default: Any, help: str, *flags: str, **option: Any) -> Any:
    """A TrainConfig field and its documentation: `help` is its --help text, `flags` its option names (default
    --field-name), `option` further typer.Option settings (envvar)."""
    return dataclasses.field(default=default, metadata={"help": help, "flags": flags, "option": option})


_TRAIN_LAYERS_HELP = (
    "Train the last N transformer layers of the encoder (0 = frozen: pooled outputs are computed once and only the "
    "head trains, orders of magnitude faster). Refused if the encoder has fewer layers. The variants use 4 "
    "(SPEC §4): the authors' loop unfroze layer[-i] for i in 0..3, i.e. layer 0 plus the last 3 (an "
    "off-by-one, layer[-0] is layer[0]); qcompress trains the last 4, as they intended. Default: the variant's, "
    "else 0."
)

LOSSES = ("contrastive", "distill")
PSEUDO_QUERIES = ("documents", "spans")  # qcompress.training.distill
# The mixing a distilled quantum head gets unless --mixing says otherwise: the best measured (recipes/frontier.toml).
DISTILL_MIXING = "pca"
# Defaults that depend on the loss: the contrastive ones keep CPU steps short; the distillation ones are the best
# measured on Cranfield (recipes/frontier.toml).
LOSS_DEFAULTS = {"contrastive": {"batch_size": 16, "epochs": 1, "head_lr": DEFAULT_HEAD_LR},
                 "distill": {"batch_size": 128, "epochs": 25, "head_lr": 3e-3}}
FROZEN_PREFIX = ("memory", "disk", "off")
QUANTIZERS = ("ste", "noise", "soft")  # qcompress.training.quantizer
CODE_LEVELS = ("refit", "learned")
# --bits: the settings of the quantizer, when not given (measured: benchmarks/lowbit_training.py).
CODE_DEFAULTS = {"quantizer": "ste", "code_levels": "refit", "code_warmup": 0}
_FROZEN_PREFIX_HELP = (
    "With --train-layers L between 0 and the encoder's layers: memory (the default) runs the frozen layers once "
    "per text and keeps the hidden states entering the trained layers in memory (up to 2 GiB; beyond, they are "
    "computed again), so that a step runs only the L trained layers; disk also keeps them in CACHE/prefix/ for "
    "later runs; off runs the whole encoder every step. The same loss either way (to float round-off): the "
    "frozen layers never use dropout. Used where replay matches a full pass (checked before training; not with "
    "left padding)."
)


@dataclass
class TrainConfig:
    """Every training argument, as plain values. `None` means "from the variant, else the default".

    head/similarity/train_layers/normalize/dim: explicit values win over the variant's. Each field's metadata holds
    its documentation ("help") and its command-line flags ("flags"): `qcompress train` is built from them.

    Example:
        >>> resolve(TrainConfig(output="models/qbfec", variant="QBFEC"), in_dim=384).batch_size
        16
        >>> [f.metadata["help"] for f in dataclasses.fields(TrainConfig) if f.name == "split"]
        ['Qrels split to train on.']
    """

    output: str = _arg(
        dataclasses.MISSING,
        "Model folder to write. It appears only when training has finished; checkpoints go to OUTPUT.ckpt/.",
        "-o", "--output",
    )
    variant: str | None = _arg(
        None,
        "One of the paper's six (SPEC §4), case-insensitive: BT, QBT (no head; cosine / fidelity), BEC, QBEC "
        "(linear / quantum head, last 4 layers train), BFEC, QBFEC (frozen encoder; QBFEC also L2-normalises "
        "before the angle encoding, as the authors do). Explicit --head, --dim, --similarity, --train-layers and "
        "--normalize override it.",
    )
    encoder: str | None = _arg(
        None,
        "Hugging Face id or local model folder; its sentence-transformers configuration (pooling, normalisation, "
        "prompts) is used unless overridden. Default: the offline all-MiniLM-L6-v2.",
    )
    pooling: str | None = _arg(
        None,
        f"How token vectors become one vector: {', '.join(POOLINGS)}. Default: the encoder's own (its "
        "sentence-transformers Pooling module), else mean.",
    )
    query_prompt: str | None = _arg(
        None,
        "Text put before every query (e.g. 'query: ' for e5). Default: the encoder's own 'query' prompt "
        "(config_sentence_transformers.json), else none; '' for none.",
    )
    document_prompt: str | None = _arg(
        None,
        "Text put before every document (e.g. 'passage: '). Default: the encoder's own 'document' (or 'passage') "
        "prompt, else none; '' for none.",
    )
    head: str | None = _arg(None, "none, linear (Linear + tanh) or quantum. Default: none.")
    dim: int | None = _arg(
        None,
        "Output size of the head. Default: the encoder's size // 3, the paper's 768 -> 256 ratio "
        "(128 for 384-d MiniLM).",
    )
    similarity: str | None = _arg(None, "cosine or fidelity. Default: fidelity for the quantum head, else cosine.")
    mixing: str | None = _arg(
        None,
        "Input mixing before a quantum head, fitted on the training documents' pooled outputs (no labels): none (the "
        "paper's), permute (centre, order dimensions by variance), hadamard (centre, seeded randomized Hadamard "
        f"rotation), pca (centre, rotate onto the principal axes). Default: {DISTILL_MIXING} with --loss distill, "
        "else none.",
    )
    loss: str = _arg(
        "contrastive",
        "contrastive: cross-entropy over (query, positive, hard negatives) from the dataset's judgements (SPEC §5). "
        "distill: label-free, any texts (--dataset: a JSONL/TSV file, a BEIR folder's corpus, cranfield): the head "
        "learns to keep the encoder's own cosine similarities (listwise KL over random documents; see "
        "qcompress.training.distill).",
    )
    distill_temperature: float = _arg(0.05, "--loss distill: temperature of the teacher's softmax over cosines.")
    distill_columns: int = _arg(512, "--loss distill: random documents each pseudo-query is scored against per step.")
    pseudo_queries: str = _arg(
        "documents",
        "--loss distill: what stands for a query: documents (each document itself) or spans (a seeded random span "
        "of 4-16 words of it).",
    )
    bits: int | None = _arg(
        None,
        "Train for low-bit angle codes of B bits per qubit (1..8; a fidelity model, any --dim): the documents' side "
        "of the loss goes through the quantizer and the queries' side stays float32, as search scores them. The "
        "levels (per qubit, Lloyd-Max on the training documents' angles under the head, refitted every epoch) go "
        "into the model folder (codes.safetensors; bits in qcompress.json), which then compresses to B-bit codes "
        "by default.",
    )
    quantizer: str | None = _arg(
        None,
        "--bits: how the gradient passes the rounding: ste (straight-through: the forward pass codes), noise "
        "(uniform noise of the angle's cell width), soft (softmax over the levels, annealed to hard rounding). "
        "Default: ste.",
    )
    code_levels: str | None = _arg(
        None, "--bits: refit (Lloyd-Max at every epoch's start and at the end) or learned (fitted once, then "
        "trained with the head). Default: refit.")
    code_warmup: int | None = _arg(None, "--bits: epochs trained on float angles before the quantizer starts. "
                                   "Default: 0.")
    train_layers: int | None = _arg(None, _TRAIN_LAYERS_HELP)
    frozen_prefix: str = _arg("memory", _FROZEN_PREFIX_HELP)
    normalize: bool | None = _arg(
        None,
        "L2-normalise pooled outputs before the head. Default: the variant's (on for QBFEC, off for the others, as "
        "the paper trains them), else the encoder's own configuration (a Normalize module), else off.",
        "--normalize/--no-normalize",
    )
    max_length: int | None = _arg(
        None,
        f"Tokens per text (longer texts are truncated). Refused above the encoder's position limit. Default: "
        f"{DEFAULT_MAX_LENGTH}, or the encoder's limit where it is lower.",
    )
    trust_remote_code: bool = _arg(False, "Allow code shipped with the encoder.")
    dataset: str | None = _arg(
        None,
        "'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), "
        "'trec-dl-21' (with --trec-dir) or an ir_datasets id.",
    )
    trec_dir: str | None = _arg(
        None,
        "Local TREC DL folder for --dataset trec-dl-21: (query, grade >= 2 passage, judged-0 passages as hard "
        "negatives) from the DL21 judgements (see qcompress.data.trecdl).",
        envvar="QCOMPRESS_TREC_DIR",
    )
    split: str = _arg("train", "Qrels split to train on.")
    eval_split: str | None = _arg(
        None,
        "Validate on this split after every epoch (NDCG@10; full ranking for cranfield and folders, judged-only "
        "for ir_datasets ids) and keep the best epoch's weights.",
    )
    negatives: int = _arg(
        5,
        "Hard negatives per example: the dataset's own where it has them, otherwise mined: the top-ranked "
        "documents by the untrained encoder's cosine that are not judged relevant (cached).",
    )
    train_fraction: float = _arg(
        1.0, "Train on this share of the queries, in (0, 1] (seeded; for data-scarcity studies)."
    )
    in_batch_negatives: bool = _arg(
        False, "Also contrast each query with the other examples' documents (those judged relevant to it masked)."
    )
    logit_scale: float = _arg(20.0, "Logits = scale x similarity (fidelity itself, or cosine); the authors' 20.")
    optimizer: str = _arg("adam", "adam (the authors') or adamw (decoupled --weight-decay).")
    lr: float = _arg(2e-5, "Learning rate of the encoder layers (the authors' 2e-5).")
    head_lr: float | None = _arg(
        None,
        "Learning rate of the head. Default: 1e-3 (contrastive: a fresh head barely moves at the encoder's 2e-5; 1e-3 "
        "trains it within an epoch, and on Cranfield's 113 training queries then overfits: watch --eval-split, try "
        "1e-4); 3e-3 with --loss distill.",
    )
    weight_decay: float = _arg(0.0, "Weight decay (0: plain Adam, as the authors).")
    epochs: int | None = _arg(
        None, "Passes over the training examples (the paper: 5). Default: 1; 25 with --loss distill (the documents "
        "are the examples).")
    batch_size: int | None = _arg(
        None, "Examples per step (the paper: 64). Default: 16, which keeps CPU steps short; 128 pseudo-queries with "
        "--loss distill.")
    max_steps: int | None = _arg(None, "Stop after this many steps in all.")
    seed: int = _arg(42, "Seed of the head's initialisation, data order and dropout.")
    save_every: int | None = _arg(
        None, "Also checkpoint every N steps (a checkpoint is always written at each epoch's end)."
    )
    resume: bool = _arg(
        False,
        "Continue an interrupted run from OUTPUT.ckpt/. Give the same arguments (only --max-steps, --epochs "
        "and --save-every may change); the result is the same as an uninterrupted run's.",
    )
    overwrite: bool = _arg(False, "Replace an existing output folder (and old checkpoints).")
    cache_dir: str | None = _arg(
        None,
        "Cache of mined negatives and pooled encoder outputs. Default: $QCOMPRESS_CACHE, else ~/.cache/qcompress.",
    )
    device: str | None = _arg(None, "cpu, cuda, cuda:1, ... Default: cuda if available.")
    store_encoder: bool = _arg(
        True,
        "Copy the encoder into the model folder (a complete sentence-transformers model). --no-store-encoder, for a "
        "frozen encoder with a Hub id: a head-only folder (head and mixing weights) that names the encoder by Hub "
        "id and revision (qcompress loads it; sentence-transformers needs the full folder).",
        "--store-encoder/--no-store-encoder",
    )


class ArgumentError(InputError):
    """A bad training argument. The message names arguments as {placeholders}: `str()` shows the parameter names
    (train_fraction), `render(name_of)` shows them the way a front end names them (the CLI: --train-fraction).

    Example:
        >>> err = ArgumentError("{train_fraction} must be in (0, 1], got {got}", got=1.5)
        >>> str(err)
        'train_fraction must be in (0, 1], got 1.5'
        >>> err.render(lambda name: "--" + name.replace("_", "-"))
        '--train-fraction must be in (0, 1], got 1.5'
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template, self.values = template, values
        super().__init__(self.render(str))

    def render(self, name_of: Callable[[str], str]) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name and name not in self.values}
        return self.template.format(**{name: name_of(name) for name in names}, **self.values)


def resolve_variant(name: str) -> dict:
    """The settings of one of the paper's six variants (SPEC §4), by case-insensitive name.

    Example:
        >>> resolve_variant("qbfec")
        {'head': 'quantum', 'similarity': 'fidelity', 'train_layers': 0, 'normalize': True}
    """
    key = name.strip().upper()
    if key not in VARIANTS:
        raise InputError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)} (case-insensitive)")
    return dict(VARIANTS[key])


def default_dim(in_dim: int) -> int:
    """Output size when dim is not given: in_dim // 3, the paper's ratio (768 -> 256; 384 -> 128).

    Example:
        >>> default_dim(768), default_dim(384)
        (256, 128)
    """
    return max(1, in_dim // 3)


def as_config(config: TrainConfig | Mapping) -> TrainConfig:
    """A fresh TrainConfig from a TrainConfig (copied) or a mapping of its fields."""
    if isinstance(config, TrainConfig):
        return dataclasses.replace(config)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"unknown training argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "output" not in config:
        raise InputError("training needs an output folder: output=...")
    return TrainConfig(**config)


def check_values(cfg: TrainConfig) -> None:
    """Refuse values out of range before anything is loaded.

    Example:
        >>> check_values(TrainConfig(output="m", train_fraction=0))
        Traceback (most recent call last):
        ...
        qcompress.training.config.ArgumentError: train_fraction must be in (0, 1], got 0
    """
    if cfg.variant is not None:
        resolve_variant(cfg.variant)
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ArgumentError("{train_fraction} must be in (0, 1], got {got}", got=cfg.train_fraction)
    for name in ("batch_size", "epochs"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise ArgumentError(f"{{{name}}} must be positive, got {{got}}", got=getattr(cfg, name))
    for name in ("max_steps", "save_every", "max_length"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ArgumentError(f"{{{name}}} must be positive, got {{got}}", got=value)
    if cfg.negatives < 0:
        raise ArgumentError("{negatives} must be >= 0, got {got}", got=cfg.negatives)
    if cfg.negatives == 0 and not cfg.in_batch_negatives:
        raise ArgumentError("{negatives} 0 leaves nothing to contrast the positive with; add {in_batch_negatives}")
    if cfg.train_layers is not None and cfg.train_layers < 0:
        raise ArgumentError("{train_layers} must be >= 0, got {got}", got=cfg.train_layers)
    if cfg.pooling is not None and cfg.pooling not in POOLINGS:
        raise ArgumentError("{pooling} must be one of {choices}, got {got}", choices=", ".join(POOLINGS),
                            got=cfg.pooling)
    for name, choices in (("loss", LOSSES), ("pseudo_queries", PSEUDO_QUERIES), ("mixing", MIXINGS)):
        value = getattr(cfg, name)
        if value is not None and value not in choices:
            raise ArgumentError(f"{{{name}}} must be one of {{choices}}, got {{got!r}}", choices=", ".join(choices),
                                got=value)
    if cfg.bits is not None and (isinstance(cfg.bits, bool) or not isinstance(cfg.bits, int)
                                 or not 1 <= cfg.bits <= 8):
        raise ArgumentError("{bits} must be an integer from 1 to 8 (bits per qubit), got {got!r}", got=cfg.bits)
    for name, choices in (("quantizer", QUANTIZERS), ("code_levels", CODE_LEVELS)):
        value = getattr(cfg, name)
        if value is not None and value not in choices:
            raise ArgumentError(f"{{{name}}} must be one of {{choices}}, got {{got!r}}", choices=", ".join(choices),
                                got=value)
    if cfg.code_warmup is not None and cfg.code_warmup < 0:
        raise ArgumentError("{code_warmup} must be >= 0, got {got}", got=cfg.code_warmup)
    if cfg.distill_columns < 0:
        raise ArgumentError("{distill_columns} must be >= 0, got {got}", got=cfg.distill_columns)
    if not cfg.distill_temperature > 0:
        raise ArgumentError("{distill_temperature} must be positive, got {got}", got=cfg.distill_temperature)
    if cfg.frozen_prefix not in FROZEN_PREFIX:
        raise ArgumentError("{frozen_prefix} must be one of {choices}, got {got!r}", choices=", ".join(FROZEN_PREFIX),
                            got=cfg.frozen_prefix)
    if cfg.optimizer not in ("adam", "adamw"):
        raise ArgumentError("{optimizer} must be adam or adamw, got {got!r}", got=cfg.optimizer)
    for name in ("lr", "head_lr", "logit_scale"):
        if getattr(cfg, name) is not None and not getattr(cfg, name) > 0:
            raise ArgumentError(f"{{{name}}} must be positive, got {{got}}", got=getattr(cfg, name))
    if cfg.weight_decay < 0:
        raise ArgumentError("{weight_decay} must be >= 0, got {got}", got=cfg.weight_decay)


def resolve(cfg: TrainConfig, in_dim: int) -> TrainConfig:
    """Fill head/similarity/train_layers/normalize/dim from the variant and the defaults (a new TrainConfig).
    normalize stays None without a variant: the encoder's own configuration decides it when the model is built.

    Example:
        >>> c = resolve(TrainConfig(output="m", variant="qbec"), in_dim=384)
        >>> c.variant, c.head, c.similarity, c.train_layers, c.normalize, c.dim
        ('QBEC', 'quantum', 'fidelity', 4, False, 128)
    """
    base = resolve_variant(cfg.variant) if cfg.variant is not None else {}
    cfg = dataclasses.replace(cfg, variant=cfg.variant.strip().upper() if cfg.variant else None)
    cfg.head = cfg.head if cfg.head is not None else base.get("head", "none")
    head = get_head(cfg.head)  # the head kind (qcompress.heads): its similarity, size and inputs
    cfg.similarity = cfg.similarity or base.get("similarity") or head.default_similarity
    cfg.train_layers = cfg.train_layers if cfg.train_layers is not None else base.get("train_layers", 0)
    cfg.normalize = cfg.normalize if cfg.normalize is not None else base.get("normalize")
    if cfg.dim is None and head.has_dim:
        cfg.dim = default_dim(in_dim)
    if not head.trainable and cfg.train_layers == 0:
        raise ArgumentError(f"nothing to train: {{head}} {cfg.head} with a frozen encoder ({{train_layers}} 0); "
                            "choose a head or train some layers")
    if not cfg.store_encoder and cfg.train_layers:
        raise ArgumentError("{store_encoder} off needs a frozen encoder: trained layers ({train_layers} {got}) live "
                            "only in the model folder", got=cfg.train_layers)
    for name, value in LOSS_DEFAULTS[cfg.loss].items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    if cfg.mixing is None:
        cfg.mixing = DISTILL_MIXING if cfg.loss == "distill" and head.mixes_inputs else "none"
    if cfg.mixing != "none" and not head.mixes_inputs:
        raise ArgumentError("{mixing} mixes the inputs of a quantum head; {head} is {got}", got=cfg.head)
    _resolve_codes(cfg)
    return cfg


def _resolve_codes(cfg: TrainConfig) -> None:
    """The quantizer's settings: defaults with --bits, refused without it or for a model that outputs vectors."""
    from qcompress.similarity.base import ANGLES  # here: it imports torch, which `train --help` does not need

    given = [name for name in CODE_DEFAULTS if getattr(cfg, name) is not None]
    if cfg.bits is None:
        if given:
            raise ArgumentError(f"{{{given[0]}}} sets how training codes the documents; give {{bits}} too")
        return
    if get_similarity(cfg.similarity).output_kind != ANGLES:
        raise ArgumentError("{bits}: codes store qubit angles; {similarity} {got} compares vectors (train a "
                            "fidelity model)", got=cfg.similarity)
    for name, value in CODE_DEFAULTS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)


def recipe_of(cfg: TrainConfig) -> dict:
    """The resolved arguments that define the training run (stored in qcompress.json under "training")."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in OPERATIONAL}
