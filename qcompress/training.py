"""Training: any Hugging Face encoder with no head, the classical head or the quantum head (SPEC §4-5).

One training example is (query, one positive, N hard negatives); the loss is cross-entropy over the N + 1 logits
`logit_scale x similarity` with the positive first, where similarity is the fidelity itself for angle models
(the authors' 20 x fidelity) and cosine for vector models. `--in-batch-negatives` adds every other document of
the batch as an extra column (documents judged relevant to the query are masked out).

    positives   documents judged >= the collection's relevance level; one example per (query, positive) pair
    negatives   the dataset's own hard negatives where it ships them (ir_datasets docpairs, TREC DL's judged-0
                passages), topped up or replaced, for an in-memory corpus, by MINED ones:
                the top-ranked documents of the corpus by cosine of the untrained encoder's mean-pooled outputs
                that are not judged relevant (grade > 0) for the query. Mining uses the encoder alone, never the
                random head, so every variant on one encoder trains on the same negatives (a fair comparison).
                Queries with fewer than N negatives are left out (and counted).
    frozen      with --train-layers 0 the pooled encoder outputs are computed once (and cached) and only the
                head trains on them: orders of magnitude faster than running the encoder each step.

Everything is deterministic given the seed: the head is initialised after torch.manual_seed(seed), epoch e
visits the examples in torch.randperm order from a generator seeded with (seed, e), and dropout draws from the
global torch RNG, which checkpoints save. A run interrupted and resumed with `resume=True` ends with exactly the
weights of an uninterrupted run.

Files (OUT is the output folder):
    OUT/                model folder (QCompressModel.save) + train_log.jsonl + train_curve.png, appears only when
                        training has finished (built in a temporary folder beside it, then renamed)
    OUT.ckpt/           while training: step-<N>/ (the latest checkpoint: state.json, weights.safetensors,
                        optimizer.safetensors, rng.safetensors, best.safetensors) and the live train_log.jsonl;
                        removed after success. safetensors + JSON only: nothing is ever unpickled.
    CACHE/negatives/    mined negatives (JSON), keyed by encoder weights, max length, dataset, split, N
    CACHE/<encoder>/    pooled encoder outputs (qcompress.cache.PooledCache), shared with `qcompress evaluate`

Example:
    >>> from qcompress.training import train
    >>> folder = train({"variant": "QBFEC", "output": "models/qbfec", "epochs": 1})    # doctest: +SKIP
    >>> from qcompress import load_model
    >>> load_model(folder).encode(["what is a wing?"]).shape                           # doctest: +SKIP
    torch.Size([1, 128])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.atomic import atomic_dir, atomic_file
from qcompress.errors import InputError

__all__ = [
    "VARIANTS",
    "TrainConfig",
    "TrainingInterrupted",
    "train",
    "resolve_variant",
    "default_dim",
    "mine_negatives",
    "build_examples",
    "Examples",
    "checkpoint_dir",
    "summary",
    "DEFAULT_HEAD_LR",
]

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
# below the untrained head's. Use --eval-split to see it (epoch 0 is the untrained baseline), or 1e-4 there.
DEFAULT_HEAD_LR = 1e-3
ENCODE_BATCH = 64  # texts per encoder batch when pooling outside the training step
VALIDATION_TOP_K = 100  # documents ranked per query for validation NDCG@10
# Arguments that may change between an interrupted run and its --resume: how long to run and how often to save.
RESUMABLE_CHANGES = ("max_steps", "epochs", "save_every")
# Operational arguments: not part of the recipe, not stored in the model folder, free to change on --resume.
OPERATIONAL = ("output", "overwrite", "resume", "stop_after_steps", "cache_dir", "device")

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


@dataclass
class TrainConfig:
    """Every training argument, as plain values. `None` means "from the variant, else the default".

    head/similarity/train_layers/normalize/dim: explicit values win over the variant's. dim defaults to
    in_dim // 3 (the paper's 768 -> 256 ratio; 128 for 384-d MiniLM) for the linear and quantum heads.
    """

    output: str
    encoder: str | None = None  # hub id, local folder, None = offline all-MiniLM-L6-v2
    variant: str | None = None  # BT, QBT, BEC, QBEC, BFEC, QBFEC (case-insensitive)
    head: str | None = None  # none | linear | quantum (default none)
    dim: int | None = None
    similarity: str | None = None  # cosine | fidelity (default: fidelity for quantum, else cosine)
    train_layers: int | None = None  # last N transformer layers train (default 0)
    normalize: bool | None = None  # L2-normalise pooled outputs before the head (default False)
    max_length: int = 256
    trust_remote_code: bool = False
    dataset: str | None = None  # None = bundled cranfield
    trec_dir: str | None = None  # local TREC DL folder for dataset trec-dl-21 (default $QCOMPRESS_TREC_DIR)
    split: str = "train"
    eval_split: str | None = None
    negatives: int = 5
    train_fraction: float = 1.0
    in_batch_negatives: bool = False
    logit_scale: float = 20.0
    optimizer: str = "adam"
    lr: float = 2e-5
    head_lr: float = DEFAULT_HEAD_LR
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    max_steps: int | None = None
    seed: int = 42
    save_every: int | None = None  # also checkpoint every N steps (always at each epoch's end)
    cache_dir: str | None = None  # default $QCOMPRESS_CACHE, else ~/.cache/qcompress
    overwrite: bool = False
    resume: bool = False
    stop_after_steps: int | None = None  # testing aid: act as if Ctrl-C came after N steps of this invocation
    device: str | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or `stop_after_steps`) during training; the state after the last finished step is checkpointed."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted after step {step}")
        self.step, self.checkpoint = step, checkpoint


# -- arguments ---------------------------------------------------------------------------------------------------


def resolve_variant(name: str) -> dict:
    """The settings of one of the paper's six variants (SPEC §4), by case-insensitive name.

    Example:
        >>> resolve_variant("qbfec")
        {'head': 'quantum', 'similarity': 'fidelity', 'train_layers': 0, 'normalize': True}
    """
    key = name.strip().upper()
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)} (case-insensitive)")
    return dict(VARIANTS[key])


def default_dim(in_dim: int) -> int:
    """Output size when --dim is not given: in_dim // 3, the paper's ratio (768 -> 256; 384 -> 128).

    Example:
        >>> default_dim(768), default_dim(384)
        (256, 128)
    """
    return max(1, in_dim // 3)


def _as_config(config: TrainConfig | Mapping) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return dataclasses.replace(config)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown training argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "output" not in config:
        raise ValueError("training needs an output folder: output=...")
    return TrainConfig(**config)


def _check_values(cfg: TrainConfig) -> None:
    if cfg.variant is not None:
        resolve_variant(cfg.variant)
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ValueError(f"--train-fraction must be in (0, 1], got {cfg.train_fraction}")
    for name in ("batch_size", "epochs", "max_length"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    for name in ("max_steps", "save_every", "stop_after_steps"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if cfg.negatives < 0:
        raise ValueError(f"--negatives must be >= 0, got {cfg.negatives}")
    if cfg.negatives == 0 and not cfg.in_batch_negatives:
        raise ValueError("--negatives 0 leaves nothing to contrast the positive with; add --in-batch-negatives")
    if cfg.train_layers is not None and cfg.train_layers < 0:
        raise ValueError(f"--train-layers must be >= 0, got {cfg.train_layers}")
    if cfg.optimizer not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam or adamw")
    for name in ("lr", "head_lr", "logit_scale"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")


def _resolve(cfg: TrainConfig, in_dim: int) -> TrainConfig:
    """Fill head/similarity/train_layers/normalize/dim from the variant and the defaults."""
    from qcompress.model import DEFAULT_SIMILARITY

    base = resolve_variant(cfg.variant) if cfg.variant is not None else {}
    cfg = dataclasses.replace(cfg, variant=cfg.variant.strip().upper() if cfg.variant else None)
    cfg.head = cfg.head if cfg.head is not None else base.get("head", "none")
    cfg.similarity = cfg.similarity or base.get("similarity") or DEFAULT_SIMILARITY.get(cfg.head, "cosine")
    cfg.train_layers = cfg.train_layers if cfg.train_layers is not None else base.get("train_layers", 0)
    cfg.normalize = cfg.normalize if cfg.normalize is not None else base.get("normalize", False)
    if cfg.dim is None and cfg.head != "none":
        cfg.dim = default_dim(in_dim)
    if cfg.head == "none" and cfg.train_layers == 0:
        raise ValueError("nothing to train: --head none with a frozen encoder (--train-layers 0); "
                         "choose a head or train some layers")
    return cfg


def _recipe(cfg: TrainConfig) -> dict:
    """The resolved arguments that define the training run (stored in qcompress.json under "training")."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in OPERATIONAL}


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """--cache-dir, else $QCOMPRESS_CACHE, else ~/.cache/qcompress."""
    from qcompress.cache import CACHE_ENV

    value = str(cache_dir) if cache_dir else os.environ.get(CACHE_ENV, "").strip() or "~/.cache/qcompress"
    return Path(value).expanduser()


def checkpoint_dir(output: str | os.PathLike) -> Path:
    """Where the checkpoints of a run writing `output` live: beside it, `OUT.ckpt`."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def _check_output(cfg: TrainConfig) -> None:
    out, ckpt = Path(cfg.output), checkpoint_dir(cfg.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"--output {out} exists and is not empty; pass --overwrite to replace it")
    if cfg.resume and _latest_checkpoint(ckpt) is None:
        raise ValueError(f"--resume: no checkpoint in {ckpt} to continue from; run without --resume")
    if not cfg.resume and ckpt.exists() and not cfg.overwrite:
        raise FileExistsError(
            f"{ckpt} holds the checkpoint of an interrupted run: pass --resume to continue it, or --overwrite to "
            "start over"
        )


# -- data ----------------------------------------------------------------------------------------------------------


@dataclass
class Examples:
    """Training examples as index tensors: example i is (query ex_query[i], documents ex_docs[i]), the positive
    first, then the negatives. Queries and documents are numbered in `query_ids` / `doc_ids`."""

    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    ex_query: Tensor  # (n,) long
    ex_docs: Tensor  # (n, 1 + negatives) long
    relevant: list[set[str]]  # per query index: doc ids judged relevant (grade > 0), masked as in-batch negatives
    dropped_queries: int = 0  # queries left out for lack of negatives

    def __len__(self) -> int:
        return int(self.ex_query.shape[0])


def pooled_outputs(model, texts: Sequence[str], cache_dir: Path | None, on_batch=None) -> Tensor:
    """Mean-pooled encoder outputs (len(texts), in_dim), read from / added to the pooled cache when given."""
    from qcompress.cache import PooledCache, pool_texts

    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    return pool_texts(model, list(texts), cache=cache, batch_size=ENCODE_BATCH, on_batch=on_batch)


def _relevant(judged: Mapping[str, int]) -> set[str]:
    return {d for d, grade in judged.items() if grade > 0}


def _negatives_key(model, collection, n: int) -> str:
    from qcompress.cache import encoder_key

    h = hashlib.blake2b(digest_size=16)
    name = str(Path(collection.name).resolve()) if Path(collection.name).is_dir() else collection.name
    # The judgements themselves are part of the key: editing a qrels file must not reuse stale negatives.
    qrels = json.dumps(collection.qrels, sort_keys=True)
    parts = (encoder_key(model), name, collection.split, n, collection.relevance_level, len(collection.corpus), qrels)
    for part in parts:
        h.update(repr(part).encode() + b"\0")
    return h.hexdigest()


def mine_negatives(
    model, collection, n: int, *, cache_dir: Path | None = None, progress: Progress | None = None
) -> dict[str, list[str]]:
    """qid -> the top `n` documents (best first) by cosine of the encoder's pooled outputs that are not judged
    relevant to the query (grade > 0), for every judged query. Call it before training: it uses `model`'s
    encoder as it is. The result is cached under CACHE/negatives/ (keyed by encoder weights, max length,
    dataset, split, judgements and n), written atomically.
    """
    from qcompress.similarity import pairwise_scores

    path = None
    if cache_dir is not None:
        path = cache_dir / "negatives" / f"{_negatives_key(model, collection, n)}.json"
        if path.is_file():
            return json.loads(path.read_text())
    progress = progress or (lambda description, total: None)
    items = list(collection.corpus.items())
    doc_ids, texts = [d for d, _ in items], [t for _, t in items]
    qids = list(collection.queries)
    docs = pooled_outputs(model, texts, cache_dir, progress("mining negatives: encoding corpus", len(texts)))
    queries = pooled_outputs(model, [collection.queries[q] for q in qids], cache_dir,
                             progress("mining negatives: encoding queries", len(qids)))
    found: dict[str, list[str]] = {}
    for start in range(0, len(qids), 256):
        block = qids[start : start + 256]
        scores = pairwise_scores(queries[start : start + len(block)], docs, "cosine")
        k = min(len(doc_ids), n + max(len(_relevant(collection.qrels[q])) for q in block))
        top = torch.topk(scores, k, dim=1).indices.tolist()
        for qid, row in zip(block, top):
            relevant = _relevant(collection.qrels[qid])
            found[qid] = [doc_ids[j] for j in row if doc_ids[j] not in relevant][:n]
    if path is not None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(found))
    return found


def _negatives(model, collection, n: int, cache_dir: Path | None, progress: Progress | None):
    """(qid -> negatives, source): the dataset's hard negatives where it has n for a query; otherwise, when the
    corpus is in memory, mined ones (topping up the dataset's). Never mines a lazily read corpus (MS MARCO)."""
    from qcompress.data import positives

    hard = collection.hard_negatives
    if hard is None:
        return mine_negatives(model, collection, n, cache_dir=cache_dir, progress=progress), "mined"
    wanted = [q for q in collection.queries if positives(collection.qrels[q], collection.relevance_level)]
    lacking = [q for q in wanted if len(hard.get(q, ())) < n]
    if not lacking or not isinstance(collection.corpus, dict):
        return hard, "dataset"
    mined = mine_negatives(model, collection, n, cache_dir=cache_dir, progress=progress)
    merged = {}
    for q in wanted:
        own = list(hard.get(q, ()))[:n]
        merged[q] = own + [d for d in mined.get(q, []) if d not in own][: n - len(own)]
    return merged, "dataset+mined"


def build_examples(
    collection, negatives: Mapping[str, Sequence[str]], n: int, *, fraction: float = 1.0, seed: int = 42
) -> Examples:
    """One example per (query, positive) with the query's first `n` negatives.

    Queries need a positive (grade >= relevance level) and `n` negatives; with `fraction` < 1 a seeded random
    max(1, round(fraction * queries)) of those are kept (the data-scarcity study), in collection order.

    Example:
        >>> from types import SimpleNamespace as C
        >>> c = C(queries={"q": "wing"}, qrels={"q": {"d1": 2, "d2": 0}}, corpus={"d1": "a", "d2": "b", "d3": "c"},
        ...       relevance_level=1)
        >>> build_examples(c, {"q": ["d2", "d3"]}, 1).ex_docs.tolist()
        [[0, 1]]
    """
    from qcompress.data import positives

    eligible, dropped = [], 0
    for qid in collection.queries:
        if not positives(collection.qrels.get(qid, {}), collection.relevance_level):
            continue
        if len(negatives.get(qid, [])) < n:
            dropped += 1
            continue
        eligible.append(qid)
    if fraction < 1.0 and eligible:
        keep = max(1, round(fraction * len(eligible)))
        chosen = torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))[:keep]
        eligible = [eligible[i] for i in sorted(chosen.tolist())]
    doc_index: dict[str, int] = {}
    ex_query, ex_docs = [], []
    for qi, qid in enumerate(eligible):
        negs = list(negatives.get(qid, []))[:n]
        for pos in positives(collection.qrels[qid], collection.relevance_level):
            ex_query.append(qi)
            ex_docs.append([doc_index.setdefault(d, len(doc_index)) for d in [pos, *negs]])
    doc_ids = list(doc_index)
    get_many = getattr(collection.corpus, "get_many", None)  # ir_datasets corpora: one docstore call
    texts = get_many(doc_ids) if get_many is not None else {d: collection.corpus[d] for d in doc_ids}
    return Examples(
        query_ids=eligible,
        query_texts=[collection.queries[q] for q in eligible],
        doc_ids=doc_ids,
        doc_texts=[texts[d] for d in doc_ids],
        ex_query=torch.tensor(ex_query, dtype=torch.long),
        ex_docs=torch.tensor(ex_docs, dtype=torch.long).reshape(len(ex_query), n + 1),
        relevant=[_relevant(collection.qrels[q]) for q in eligible],
        dropped_queries=dropped,
    )


def _no_examples_error(collection, cfg: TrainConfig, examples: Examples) -> InputError:
    reason = (
        f"{examples.dropped_queries} judged queries had fewer than {cfg.negatives} negatives"
        if examples.dropped_queries
        else f"no query has a document judged >= {collection.relevance_level}"
    )
    return InputError(f"no training examples in {collection.name} split {cfg.split!r}: {reason}; "
                      "check the judgements, or lower --negatives")


# -- checkpoints ---------------------------------------------------------------------------------------------------


def _latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def _trainable_state(model) -> dict[str, Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(root: Path, model, optimizer, state: dict, best: dict[str, Tensor] | None) -> Path:
    """Write step-<N>/ atomically, then delete older checkpoints. Tensors as safetensors, the rest as JSON."""
    from safetensors.torch import save_file

    folder = root / f"step-{state['step']:09d}"
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in _trainable_state(model).items()}, str(tmp / "weights.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        meta = dict(state, optimizer_groups=opt["param_groups"], optimizer_scalars=scalars)
        (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")
    for old in root.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_checkpoint(folder: Path, model, optimizer) -> tuple[dict, dict[str, Tensor] | None]:
    """Restore weights, optimizer and RNG state from `folder`; return (state, best weights or None)."""
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "weights.safetensors"))
    params = dict(model.named_parameters())
    if set(weights) != {n for n, p in params.items() if p.requires_grad}:
        raise ValueError(f"{folder}: the checkpoint's trainable parameters do not match this model; "
                         "resume with the arguments of the interrupted run")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    opt_state: dict[int, dict] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    for key, value in state.pop("optimizer_scalars").items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    groups = state.pop("optimizer_groups")
    for group in groups:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))])
    best_path = folder / "best.safetensors"
    return state, (load_file(str(best_path)) if best_path.is_file() else None)


# -- the training step ---------------------------------------------------------------------------------------------


def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    # One generator per (seed, epoch): resuming mid-epoch needs only the epoch number and the position.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _logits(model, cfg: TrainConfig, eq: Tensor, ed: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(logits, target) for queries eq (B, d) and their documents ed (B, 1+N, d), positive first."""
    from qcompress.similarity import paired_scores, pairwise_scores

    B, cols = ed.shape[0], ed.shape[1]
    if not cfg.in_batch_negatives:
        sim = paired_scores(eq[:, None, :], ed, model.similarity, log=False)  # fidelity itself, or cosine
        return cfg.logit_scale * sim, torch.zeros(B, dtype=torch.long, device=eq.device)
    sim = pairwise_scores(eq, ed.reshape(B * cols, -1), model.similarity)  # log-fidelity or cosine
    if model.similarity == "fidelity":
        sim = torch.exp(sim)
    logits = (cfg.logit_scale * sim).masked_fill(mask, float("-inf"))
    return logits, torch.arange(B, device=eq.device) * cols


def _in_batch_mask(examples: Examples, qi: Tensor, di: Tensor) -> Tensor:
    """(B, B*(1+N)) True where a column is another copy of a document judged relevant to the row's query."""
    cols = di.reshape(-1).tolist()
    mask = torch.zeros(len(qi), len(cols), dtype=torch.bool)
    for row, q in enumerate(qi.tolist()):
        relevant = examples.relevant[q]
        for j, d in enumerate(cols):
            if j != row * di.shape[1] and examples.doc_ids[d] in relevant:
                mask[row, j] = True
    return mask


def _forward_backward(model, cfg: TrainConfig, examples: Examples, batch: Tensor, pooled) -> tuple[float, float]:
    """Loss of one batch of examples, with gradients accumulated; returns (loss, seconds of head fwd + bwd).

    `pooled` is (query vectors, document vectors) for a frozen encoder, or None to run the encoder. Each
    distinct text of the batch is encoded once (a query with several positives appears several times).
    """
    qi, di = examples.ex_query[batch], examples.ex_docs[batch]
    uq, q_inv = torch.unique(qi, return_inverse=True)
    ud, d_inv = torch.unique(di.reshape(-1), return_inverse=True)
    device = model.device
    if pooled is not None:
        pq, pd = pooled[0][uq.to(device)], pooled[1][ud.to(device)]
    else:
        pq = model.pool([examples.query_texts[i] for i in uq.tolist()])
        pd = model.pool([examples.doc_texts[i] for i in ud.tolist()])
    start = time.perf_counter()
    # The head runs on detached pooled outputs so that its forward + backward can be timed on its own; the
    # encoder's backward then continues from their gradients (the same gradients as one backward pass).
    trains_encoder = pooled is None
    hq, hd = pq.detach().requires_grad_(trains_encoder), pd.detach().requires_grad_(trains_encoder)
    eq = model.project(hq)[q_inv.to(device)]
    ed = model.project(hd)[d_inv.to(device)].reshape(di.shape[0], di.shape[1], -1)
    mask = _in_batch_mask(examples, qi, di).to(device) if cfg.in_batch_negatives else None
    logits, target = _logits(model, cfg, eq, ed, mask)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    head_seconds = time.perf_counter() - start
    if trains_encoder:
        torch.autograd.backward([pq, pd], [hq.grad, hd.grad])
    return loss.item(), head_seconds


# -- validation ----------------------------------------------------------------------------------------------------


def _validate(model, collection, frozen: bool, cache_dir: Path | None, progress: Progress | None) -> tuple[float, str]:
    """NDCG@10 of the model on the eval collection: full ranking for local collections, judged-only re-ranking
    for ir_datasets ids (as `qcompress evaluate` chooses by default). Returns (ndcg@10, protocol)."""
    from qcompress.evaluation import default_protocol, evaluate

    protocol = default_protocol(collection.name)
    cache = None
    if frozen and cache_dir is not None:
        from qcompress.cache import PooledCache

        cache = PooledCache(cache_dir, model)  # the encoder does not change: its pooled outputs are reused
    result = evaluate(model, collection, protocol, top_k=VALIDATION_TOP_K, batch_size=ENCODE_BATCH, cache=cache,
                      progress=(lambda what, total: progress(f"validation: {what}", total)) if progress else None,
                      metrics=("ndcg_cut_10",))
    return float(result.metrics["ndcg_cut_10"]), protocol


# -- training ------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig | Mapping,
    *,
    progress: Progress | None = None,
    callback: Callable[[dict], None] | None = None,
    collection=None,
    eval_collection=None,
) -> Path:
    """Train a model and write its folder at `config.output`; return that path.

    `progress(description, total)` returns an `advance(n)` callback (for progress bars); `callback(row)` sees
    every log row as it is written (a KeyboardInterrupt raised there interrupts like Ctrl-C). `collection` /
    `eval_collection` (qcompress.data.Collection) replace loading `config.dataset`, e.g. in tests.

    Interrupted by Ctrl-C, it saves a checkpoint and raises `TrainingInterrupted`; `resume=True` with the same
    arguments (only max_steps, epochs and save_every may change) continues to exactly the same weights.
    """
    from qcompress import distributed
    from qcompress.data import load_collection, positives
    from qcompress.encoder import count_encoder_parameters, set_trainable_layers
    from qcompress.model import build_model

    cfg = _as_config(config)
    _check_values(cfg)
    # Under torchrun: join the process group; only rank 0 writes files, reports progress and validates.
    if distributed.context().active and cfg.in_batch_negatives:
        raise ValueError("--in-batch-negatives under torchrun would contrast each query with its own process's "
                         "share of the batch only (a different loss than one process computes); train in one process")
    dist_ctx, device = distributed.setup(cfg.device)
    cfg = dataclasses.replace(cfg, device=device)
    if not dist_ctx.is_main:
        progress, callback = None, None
    _check_output(cfg)
    distributed.barrier(dist_ctx)  # every rank has checked the output folder before rank 0 writes beside it
    output, ckpt_root = Path(cfg.output), checkpoint_dir(cfg.output)
    cache_dir = cache_root(cfg.cache_dir)
    if collection is None:
        collection = load_collection(cfg.dataset, cfg.split, trec_dir=cfg.trec_dir)
    if eval_collection is None and cfg.eval_split is not None:
        eval_collection = load_collection(cfg.dataset, cfg.eval_split, trec_dir=cfg.trec_dir)

    _, in_dim = count_encoder_parameters(cfg.encoder, trust_remote_code=cfg.trust_remote_code)
    cfg = _resolve(cfg, in_dim)
    torch.manual_seed(cfg.seed)  # before the head is built: its initialisation is part of the run
    model = build_model(cfg.encoder, head=cfg.head, dim=cfg.dim, similarity=cfg.similarity,
                        max_length=cfg.max_length, normalize=cfg.normalize,
                        trust_remote_code=cfg.trust_remote_code, device=cfg.device)
    set_trainable_layers(model.encoder, cfg.train_layers)
    frozen = cfg.train_layers == 0
    recipe = _recipe(cfg)
    resume_from = _latest_checkpoint(ckpt_root) if cfg.resume else None
    if resume_from is not None:
        saved = json.loads((resume_from / "state.json").read_text())["recipe"]
        changed = sorted(k for k in set(saved) | set(recipe)
                         if k not in RESUMABLE_CHANGES and saved.get(k) != recipe.get(k))
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {recipe.get(k)!r}" for k in changed)
            raise ValueError(f"--resume needs the arguments of the interrupted run; these differ: {detail}")

    if not any(positives(collection.qrels[q], collection.relevance_level) for q in collection.queries):
        raise InputError(f"no training examples in {collection.name} split {cfg.split!r}: no query has a document "
                         f"judged >= {collection.relevance_level}; check the judgements")  # before any encoding
    # Data: negatives are mined with the encoder as loaded, before any training (and before a resume's weights).
    with distributed.main_first(dist_ctx):  # rank 0 fills the caches, the other ranks read them
        negatives, negatives_source = _negatives(model, collection, cfg.negatives, cache_dir, progress)
        examples = build_examples(collection, negatives, cfg.negatives, fraction=cfg.train_fraction, seed=cfg.seed)
        if len(examples) == 0:
            raise _no_examples_error(collection, cfg, examples)
        pooled = None
        if frozen:  # the encoder never changes: pool every training text once, train the head on the vectors
            noop = (lambda d, t: None)
            pooled = tuple(
                pooled_outputs(model, texts, cache_dir, (progress or noop)(f"encoding training {what}", len(texts)))
                .to(model.device)
                for what, texts in (("queries", examples.query_texts), ("documents", examples.doc_texts))
            )

    groups = []
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": cfg.lr})
    if model.head is not None:
        groups.append({"params": list(model.head.parameters()), "lr": cfg.head_lr})
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(groups, weight_decay=cfg.weight_decay)
    trainable = [p for group in groups for p in group["params"]]

    n = len(examples)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    state = {"step": 0, "epoch": 0, "position": 0, "pending_validation": False, "log": [],
             "best_epoch": None, "best_ndcg_cut_10": None, "recipe": recipe}
    best: dict[str, Tensor] | None = None
    if resume_from is not None:
        loaded, best = _load_checkpoint(resume_from, model, optimizer)
        state.update(loaded)
        distributed.load_rng(ckpt_root, state["step"], dist_ctx)
    resumed_step = state["step"]
    log: list[dict] = state["log"]
    distributed.barrier(dist_ctx)  # every rank has read the checkpoint before rank 0 replaces it
    if resume_from is None and dist_ctx.is_main:
        shutil.rmtree(ckpt_root, ignore_errors=True)  # --overwrite: start over (checked by _check_output)
    live_log = ckpt_root / "train_log.jsonl"
    if dist_ctx.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        live_log.write_text("".join(json.dumps(row) + "\n" for row in log))

    def emit(row: dict) -> None:
        log.append(row)
        if dist_ctx.is_main:
            with live_log.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if callback is not None:
            callback(row)

    def checkpoint() -> Path:
        if not dist_ctx.is_main:
            distributed.save_rng(ckpt_root, state["step"], dist_ctx)
            return ckpt_root / f"step-{state['step']:09d}"
        return _save_checkpoint(ckpt_root, model, optimizer, state, best)

    def validate() -> None:
        nonlocal best
        if not dist_ctx.is_main:  # rank 0 validates and keeps the best weights; the others go on
            state["pending_validation"] = False
            return
        ndcg, protocol = _validate(model, eval_collection, frozen, cache_dir, progress)
        epoch = state["epoch"] if state["position"] == 0 else round(state["step"] / steps_per_epoch, 3)
        # Epoch 0 (before any step) is logged as the baseline, never kept as "the best": the run must train.
        if state["step"] > 0 and (state["best_ndcg_cut_10"] is None or ndcg > state["best_ndcg_cut_10"]):
            state["best_ndcg_cut_10"], state["best_epoch"] = ndcg, epoch
            best = _trainable_state(model)
        state["pending_validation"] = False
        emit({"kind": "validation", "step": state["step"], "epoch": epoch, "ndcg_cut_10": ndcg,
              "split": cfg.eval_split, "protocol": protocol})

    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    advance = progress("training", total_steps) if progress else (lambda k: None)
    advance(min(state["step"], total_steps))
    saved_at = None
    updating = False  # True while optimizer.step() changes the weights: an interrupt there cannot be saved
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    model.train()
    try:
        if state["pending_validation"] or (eval_collection is not None and state["step"] == 0 and not log):
            validate()  # an interrupted validation, or the untrained baseline (epoch 0)
        while state["epoch"] < cfg.epochs and (cfg.max_steps is None or state["step"] < cfg.max_steps):
            order = _epoch_order(n, cfg.seed, state["epoch"])
            while state["position"] < n and (cfg.max_steps is None or state["step"] < cfg.max_steps):
                batch = order[state["position"] : state["position"] + cfg.batch_size]
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                local = distributed.shard(batch, dist_ctx)  # the whole batch in one process
                loss, head_seconds = _forward_backward(model, cfg, examples, local, pooled) if len(local) else (0., 0.)
                loss = distributed.reduce_gradients(trainable, len(local), len(batch), loss, dist_ctx)
                updating = True
                optimizer.step()
                state["step"] += 1
                state["position"] += len(batch)
                updating = False
                t3 = time.perf_counter()
                advance(1)
                emit({"kind": "step", "step": state["step"], "epoch": state["epoch"] + 1, "loss": loss,
                      "lr": cfg.lr if encoder_params else None, "head_lr": cfg.head_lr if model.head else None,
                      "examples_per_s": len(batch) / (t3 - t0), "head_share": head_seconds / (t3 - t0),
                      "seconds": t3 - t0})
                if cfg.save_every and state["step"] % cfg.save_every == 0:
                    saved_at = checkpoint()
                if cfg.stop_after_steps is not None and state["step"] - resumed_step >= cfg.stop_after_steps:
                    raise KeyboardInterrupt
            if state["position"] >= n:
                # One dict.update: Ctrl-C lands between bytecodes, never between the epoch and the position.
                state.update(epoch=state["epoch"] + 1, position=0, pending_validation=eval_collection is not None)
                saved_at = checkpoint()
                if state["pending_validation"]:
                    validate()
                    saved_at = checkpoint()
        if eval_collection is not None and state["position"] > 0 and not any(
            r["kind"] == "validation" and r["step"] == state["step"] for r in log
        ):
            validate()  # stopped mid-epoch by --max-steps: still report a validation number
    except KeyboardInterrupt:
        if not updating:
            saved_at = checkpoint()
        else:  # the weights are half-updated: the last complete checkpoint is what a resume continues from
            saved_at = _latest_checkpoint(ckpt_root)
        step = int(saved_at.name.split("-")[1]) if saved_at is not None else 0
        raise TrainingInterrupted(step, saved_at) from None
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])

    if best is not None:  # keep the best validated weights
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in best.items():
                params[name].copy_(value)
    steps = [r for r in log if r["kind"] == "step"]
    model.config = model.config.replace(encoder_trained=not frozen, training=recipe, training_result={
        "steps": state["step"],
        "epochs_completed": state["epoch"],
        "examples": n,
        "queries": len(examples.query_ids),
        "queries_without_enough_negatives": examples.dropped_queries,
        "negatives_source": negatives_source,
        "final_loss": steps[-1]["loss"] if steps else None,
        "best_epoch": state["best_epoch"],
        "best_ndcg_cut_10": state["best_ndcg_cut_10"],
        "baseline_ndcg_cut_10": next((r["ndcg_cut_10"] for r in log if r["kind"] == "validation" and r["step"] == 0),
                                     None),  # the untrained model, for comparison
        "validation_split": cfg.eval_split,
    })
    from qcompress.plots import plot_training

    distributed.barrier(dist_ctx)  # every rank has written its last files under OUT.ckpt/
    if not dist_ctx.is_main:
        distributed.barrier(dist_ctx)  # rank 0 writes the model folder
        return output
    with atomic_dir(output, overwrite=output.exists()) as tmp:
        model.save(tmp)
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))
        plot_training(log, tmp / "train_curve.png", title=_title(cfg))
    shutil.rmtree(ckpt_root, ignore_errors=True)
    distributed.barrier(dist_ctx)
    return output


def _title(cfg: TrainConfig) -> str:
    name = cfg.variant or f"head {cfg.head}"
    encoder = Path(str(cfg.encoder)).name if cfg.encoder else "all-MiniLM-L6-v2"
    return f"{name} ({cfg.similarity}, dim {cfg.dim}, train layers {cfg.train_layers}) on {encoder}"


def summary(folder: str | os.PathLike) -> dict:
    """The JSON summary of a finished run, from its folder: what `qcompress train --json` prints.

    examples_per_s and head_share are medians over the run's steps (the first step, which warms caches, is left
    out when there are several).
    """
    folder = Path(folder)
    config = json.loads((folder / "qcompress.json").read_text())
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines() if line]
    steps = [r for r in rows if r["kind"] == "step"]
    timed = steps[1:] if len(steps) > 1 else steps

    def median(key: str) -> float | None:
        values = sorted(r[key] for r in timed)
        return values[len(values) // 2] if values else None

    result = config.get("training_result", {})
    return {
        "output": str(folder),
        "steps": result.get("steps"),
        "epochs_completed": result.get("epochs_completed"),
        "examples": result.get("examples"),
        "final_loss": result.get("final_loss"),
        "best_epoch": result.get("best_epoch"),
        "best_ndcg_cut_10": result.get("best_ndcg_cut_10"),
        "baseline_ndcg_cut_10": result.get("baseline_ndcg_cut_10"),
        "examples_per_s": median("examples_per_s"),
        "head_share": median("head_share"),
    }
