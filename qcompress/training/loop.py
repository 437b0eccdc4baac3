"""The training loop: `train()` prepares the data, builds the optimizer, runs the epochs (the loss of a batch is
qcompress.training.step's) and writes the model folder.

What runs per step: with train_layers 0 the pooled encoder outputs are computed once (and cached) and only the
head trains on them. With 0 < train_layers < the encoder's layers, the frozen layers below are a fixed function
of the text: the hidden states entering the trained layers are computed once per text (qcompress.frozen_prefix,
unless frozen_prefix is "off") and a step runs only the trained layers, forward and backward. Dropout acts in
the trained layers (and the head) only; the embeddings and frozen layers always run in eval mode, so that both
ways compute the same loss.

Everything is deterministic given the seed: the head is initialised after torch.manual_seed(seed), epoch e
visits the examples in torch.randperm order from a generator seeded with (seed, e), and dropout draws from the
global torch RNG, which checkpoints save. A run interrupted (Ctrl-C at any moment: qcompress.training.interrupts)
and resumed with `resume=True` ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

import qcompress.training.distributed as distributed
from qcompress.atomic import atomic_dir
from qcompress.cache import PooledCache, resolve_cache_dir
from qcompress.data import load_collection, positives
from qcompress.encoder import count_encoder_parameters, set_trainable_layers, transformer_layers
from qcompress.errors import InputError
from qcompress.evaluation import default_protocol, evaluate
from qcompress.frozen_prefix import FrozenPrefix, FrozenPrefixCache
from qcompress.mixing import InputMixing
from qcompress.model import build_model
from qcompress.training.checkpoint import (
    check_output, check_same_data, check_same_recipe, checkpoint_dir, clear_checkpoints, data_digest, output_lock, checkpoint_step, latest_checkpoint, load_checkpoint, rng_state,
    save_checkpoint, set_rng_state, trainable_state,
)
from qcompress.training.config import (
    ArgumentError, Progress, TrainConfig, as_config, check_values, recipe_of, resolve,
)
from qcompress.training.negatives import (
    ENCODE_BATCH, Examples, build_examples, dataset_negatives, no_examples_error, pooled_outputs,
)
from qcompress.training.distill import (
    DistillData, calibrate_log_scale, distill_forward_backward, initial_log_scale, pseudo_queries, read_corpus,
    teacher_vectors,
)
from qcompress.training.interrupts import deferred_interrupts
from qcompress.training.plots import plot_training
from qcompress.training.quantizer import anneal, attach_quantizer, final_codec, start_epoch
from qcompress.training.step import forward_backward

__all__ = ["TrainingInterrupted", "train", "summary"]

VALIDATION_TOP_K = 100  # documents ranked per query for validation NDCG@10
PREFIX_MAX_BYTES = 2 << 30  # frozen-prefix hidden states kept in memory; beyond, recomputed (or read from disk)
REPLAY_CHECK_TEXTS = 8  # queries and documents on which replaying the trained layers is checked before training


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the state after the last finished step is checkpointed."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted after step {step}")
        self.step, self.checkpoint = step, checkpoint


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The order in which epoch `epoch` visits the `n` examples."""
    # One generator per (seed, epoch): resuming mid-epoch needs only the epoch number and the position.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _validate(model, collection, frozen: bool, cache_dir: Path | None, progress: Progress | None) -> tuple[float, str]:
    """NDCG@10 of the model on the eval collection: full ranking for local collections, judged-only re-ranking
    for ir_datasets ids (as `qcompress evaluate` chooses by default). Returns (ndcg@10, protocol)."""
    protocol = default_protocol(collection.name)
    # A frozen encoder does not change: its pooled outputs are reused from the cache.
    cache = PooledCache(cache_dir, model) if frozen and cache_dir is not None else None
    result = evaluate(model, collection, protocol, top_k=VALIDATION_TOP_K, batch_size=ENCODE_BATCH, cache=cache,
                      progress=(lambda what, total: progress(f"validation: {what}", total)) if progress else None,
                      metrics=("ndcg_cut_10",))
    return float(result.metrics["ndcg_cut_10"]), protocol


# -- a run ---------------------------------------------------------------------------------------------------------


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

    Example (a tiny random BERT and four documents, so that it runs in a second):
        >>> import tempfile
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
        >>> from qcompress import load_model
        >>> from qcompress.data import Collection
        >>> tmp = Path(tempfile.mkdtemp())
        >>> words = "[PAD] [UNK] what is a wing lift on the heat in layer flow".split()
        >>> tokens = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        >>> tokens.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokens, pad_token="[PAD]", unk_token="[UNK]")
        >>> _ = tokenizer.save_pretrained(tmp / "bert"), torch.manual_seed(0)
        >>> BertModel(BertConfig(vocab_size=len(words), hidden_size=12, num_hidden_layers=1, num_attention_heads=1,
        ...                      intermediate_size=16)).save_pretrained(tmp / "bert")
        >>> tiny = Collection("tiny", corpus={"d1": "lift on a wing", "d2": "heat in the layer", "d3": "the flow",
        ...                                   "d4": "a layer"}, queries={"q1": "what is lift", "q2": "heat"},
        ...                   qrels={"q1": {"d1": 1}, "q2": {"d2": 1}}, split="train")
        >>> folder = train({"variant": "QBFEC", "encoder": str(tmp / "bert"), "output": str(tmp / "qbfec"),
        ...                 "negatives": 2, "cache_dir": str(tmp / "cache")}, collection=tiny)
        >>> load_model(folder).encode(["what is a wing?"]).shape  # 12 // 3 qubit angles
        (1, 4)
    """
    cfg = as_config(config)
    check_values(cfg)
    # Under torchrun: join the process group; only rank 0 writes files, reports progress and validates.
    if distributed.context().active and cfg.in_batch_negatives:
        raise ArgumentError("{in_batch_negatives} under torchrun would contrast each query with its own process's "
                            "share of the batch only (a different loss than one process computes); train in one "
                            "process")
    ctx, device = distributed.setup(cfg.device)
    cfg = dataclasses.replace(cfg, device=device)
    if not ctx.is_main:
        progress, callback = None, None
    with output_lock(cfg.output, main=ctx.is_main):  # a second run writing the same output is refused
        return _train(cfg, ctx, progress, callback, collection, eval_collection)


def _train(cfg: TrainConfig, ctx: distributed.Context, progress: Progress | None,
           callback: Callable[[dict], None] | None, collection, eval_collection) -> Path:
    """`train`, under the output's lock."""
    check_output(cfg)
    distributed.barrier(ctx)  # every rank has checked the output folder before rank 0 writes beside it
    if collection is None and cfg.loss == "contrastive":
        collection = load_collection(cfg.dataset, cfg.split, trec_dir=cfg.trec_dir)
    if eval_collection is None and cfg.eval_split is not None:
        eval_collection = load_collection(cfg.dataset, cfg.eval_split, trec_dir=cfg.trec_dir)
    records = read_corpus(cfg.dataset, cfg.split, cfg.trec_dir) if cfg.loss == "distill" else None
    digest = _data_digest(collection, records)
    cfg, model = _build_model(cfg)
    recipe = recipe_of(cfg)
    resume_from = latest_checkpoint(checkpoint_dir(cfg.output)) if cfg.resume else None
    if resume_from is not None:
        check_same_recipe(resume_from, recipe)
        check_same_data(resume_from, digest, source=cfg.dataset or "cranfield")
    cache_dir = resolve_cache_dir(cfg.cache_dir)
    data = _prepare_data(model, cfg, collection, records, ctx, cache_dir, progress)
    run = _Run(cfg, recipe, model, data, eval_collection, ctx, cache_dir, progress, callback)
    run.state["data"] = digest
    run.start(resume_from)
    run.run_epochs()
    return _finish(run)


def _data_digest(collection, records: list[tuple[str, str]] | None) -> dict[str, dict]:
    """What the run trains on, digested part by part (qcompress.training.checkpoint.data_digest): the documents to
    distil on, or the collection's documents, queries, judgements and shipped hard negatives."""
    if records is not None:
        return data_digest(documents=records)
    parts = dict(documents=collection.corpus if not isinstance(collection.corpus, dict) else
                 collection.corpus.items(), queries=collection.queries.items(),
                 judgements=((q, d, g) for q, judged in collection.qrels.items() for d, g in judged.items()))
    if isinstance(collection.hard_negatives, dict):
        parts["hard_negatives"] = collection.hard_negatives.items()
    return data_digest(**parts)


def _build_model(cfg: TrainConfig) -> tuple[TrainConfig, object]:
    """Resolve the arguments against the encoder's size and build the model to train (seeded: the head's
    initialisation is part of the run)."""
    _, in_dim = count_encoder_parameters(cfg.encoder, trust_remote_code=cfg.trust_remote_code)
    cfg = resolve(cfg, in_dim)
    torch.manual_seed(cfg.seed)  # before the head is built: its initialisation is part of the run
    model = build_model(cfg.encoder, head=cfg.head, dim=cfg.dim, similarity=cfg.similarity,
                        max_length=cfg.max_length, normalize=cfg.normalize, pooling=cfg.pooling,
                        query_prompt=cfg.query_prompt, document_prompt=cfg.document_prompt, mixing=cfg.mixing,
                        trust_remote_code=cfg.trust_remote_code, device=cfg.device)
    set_trainable_layers(model.encoder, cfg.train_layers)
    if not cfg.store_encoder and not model.config.base_model:
        raise ArgumentError("{store_encoder} off names the encoder by its Hub id, and {encoder} has none (a local "
                            "folder that is not a Hub snapshot)")
    if cfg.loss == "distill":  # the student's similarity scale trains beside the head (not part of the model)
        model.distill_log_scale = initial_log_scale(model.similarity).to(model.device)
    attach_quantizer(model, cfg)  # with --bits: the documents' side of the loss is coded (not part of the model)
    # What was left to the encoder's own configuration is recorded as resolved (the recipe a resume checks).
    mc = model.config
    cfg = dataclasses.replace(cfg, normalize=mc.normalize, pooling=mc.pooling, query_prompt=mc.query_prompt,
                              document_prompt=mc.document_prompt, max_length=mc.max_length)
    return cfg, model


@dataclass
class _Data:
    examples: Examples | None  # contrastive training
    pooled: tuple[Tensor, Tensor] | None  # (queries, documents) pooled once when the encoder is frozen
    negatives_source: str | None  # "mined", "dataset" or "dataset+mined"
    prefix: FrozenPrefix | None = None  # the frozen layers' outputs, when only the top layers run per step
    distill: DistillData | None = None  # label-free training

    def __len__(self) -> int:
        return len(self.distill) if self.distill is not None else len(self.examples)

    def texts(self) -> tuple[list[str], list[str]]:
        source = self.distill if self.distill is not None else self.examples
        return source.query_texts, source.doc_texts


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def _pool_all(model, cache_dir: Path, progress: Progress | None, queries: list[str], docs: list[str]) -> tuple:
    return tuple(
        pooled_outputs(model, texts, cache_dir, (progress or _no_progress)(f"encoding training {what}", len(texts)),
                       role=role).to(model.device)
        for what, texts, role in (("queries", queries, "query"), ("documents", docs, "document"))
    )


def _fit_mixing(model, cfg: TrainConfig, docs: list[str], pooled_docs: Tensor | None, cache_dir: Path,
                progress: Progress | None) -> None:
    """Fit the input mixing on the training documents' pooled outputs as the head sees them (after any
    normalisation), with the encoder as loaded; the same fit when a run resumes."""
    if model.mixing is None:
        return
    if pooled_docs is None:
        bar = (progress or _no_progress)("encoding documents for the mixing", len(docs))
        pooled_docs = pooled_outputs(model, docs, cache_dir, bar, role="document")
    seen = torch.nn.functional.normalize(pooled_docs, dim=-1) if model.config.normalize else pooled_docs
    model.mixing.load_state_dict(InputMixing.fit(cfg.mixing, seen).state_dict())
    model.mixing.to(model.device)


def _prepare_distill(model, cfg: TrainConfig, records: list[tuple[str, str]], ctx: distributed.Context,
                     cache_dir: Path, progress: Progress | None) -> _Data:
    """The documents, their pseudo-queries and the teacher's vectors (the encoder as loaded, before any
    training), all pooled once."""
    ids, docs = [i for i, _ in records], [t for _, t in records]
    queries = pseudo_queries(docs, cfg.pseudo_queries, cfg.seed)
    with distributed.main_first(ctx):
        pooled = _pool_all(model, cache_dir, progress, queries, docs)
    teacher = DistillData(ids, docs, queries, teacher_vectors(pooled[0]).cpu(), teacher_vectors(pooled[1]).cpu(),
                          queries_are_documents=cfg.pseudo_queries == "documents")
    _fit_mixing(model, cfg, docs, pooled[1], cache_dir, progress)
    data = _Data(None, pooled if cfg.train_layers == 0 else None, None, distill=teacher)
    calibrate_log_scale(model, cfg, teacher, pooled)  # with the fitted mixing and the fresh head (a resume loads it)
    data.prefix = _frozen_prefix(model, cfg, data, cache_dir)
    return data


def _prepare_data(model, cfg: TrainConfig, collection, records: list[tuple[str, str]] | None,
                  ctx: distributed.Context, cache_dir: Path, progress: Progress | None) -> _Data:
    """The examples, with negatives mined by the encoder as loaded (before any training, and before a resume's
    weights), and for a frozen encoder every training text pooled once."""
    if cfg.loss == "distill":
        return _prepare_distill(model, cfg, records, ctx, cache_dir, progress)
    if not any(positives(collection.qrels[q], collection.relevance_level) for q in collection.queries):
        raise InputError(f"no training examples in {collection.name} split {cfg.split!r}: no query has a document "
                         f"judged >= {collection.relevance_level}; check the judgements")  # before any encoding
    with distributed.main_first(ctx):  # rank 0 fills the caches, the other ranks read them
        negatives, source = dataset_negatives(model, collection, cfg.negatives, cache_dir, progress)
        examples = build_examples(collection, negatives, cfg.negatives, fraction=cfg.train_fraction, seed=cfg.seed)
        if len(examples) == 0:
            raise no_examples_error(collection, cfg.split, cfg.negatives, examples)
        pooled = None
        if cfg.train_layers == 0:  # the encoder never changes: train the head on the vectors
            pooled = _pool_all(model, cache_dir, progress, examples.query_texts, examples.doc_texts)
        _fit_mixing(model, cfg, examples.doc_texts, pooled[1] if pooled else None, cache_dir, progress)
    data = _Data(examples, pooled, source)
    data.prefix = _frozen_prefix(model, cfg, data, cache_dir)
    return data


def _frozen_prefix(model, cfg: TrainConfig, data: _Data, cache_dir: Path) -> FrozenPrefix | None:
    """The frozen layers' outputs per text, when the trained layers can be replayed on them: 0 < train_layers <
    layers, frozen_prefix not "off", right padding, and a replay of the first training texts that matches a full
    pass (checked here, before training, with the weights as loaded: the same decision when a run resumes)."""
    if cfg.frozen_prefix == "off" or not 0 < cfg.train_layers < len(transformer_layers(model.encoder)):
        return None
    folder = cache_dir / "prefix" if cfg.frozen_prefix == "disk" else None
    prefix = FrozenPrefixCache(PREFIX_MAX_BYTES, folder=folder).bind(model, cfg.train_layers)
    queries, docs = data.texts()
    sample = queries[:REPLAY_CHECK_TEXTS] + docs[:REPLAY_CHECK_TEXTS]
    return prefix if prefix is not None and prefix.replays(sample) else None


class _Run:
    """One run's moving parts: the model and its optimizer, the examples, and the state a checkpoint saves (step,
    epoch, position in the epoch's order, the log, the best validation)."""

    def __init__(self, cfg: TrainConfig, recipe: dict, model, data: _Data, eval_collection,
                 ctx: distributed.Context, cache_dir: Path, progress: Progress | None,
                 callback: Callable[[dict], None] | None) -> None:
        self.cfg, self.recipe, self.model, self.data = cfg, recipe, model, data
        self.eval_collection, self.ctx, self.cache_dir = eval_collection, ctx, cache_dir
        self.progress, self.callback = progress, callback
        self.frozen = cfg.train_layers == 0
        self.ckpt_root = checkpoint_dir(cfg.output)
        self.optimizer, self.trains_encoder = _build_optimizer(model, cfg)
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.n = len(data)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.state = {"step": 0, "epoch": 0, "position": 0, "pending_validation": False, "log": [],
                      "best_epoch": None, "best_ndcg_cut_10": None, "recipe": recipe}
        self.best: dict[str, Tensor] | None = None
        # The random-number state before the step in progress (None between steps): a Ctrl-C before the step's
        # update restores it, so that the checkpoint holds the state of the last completed step.
        self.uncommitted_rng: dict[str, Tensor] | None = None
        self.advance: Callable[[int], None] = lambda k: None
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)

    @property
    def log(self) -> list[dict]:
        return self.state["log"]

    def start(self, resume_from: Path | None) -> None:
        """Continue from a checkpoint, or start over; open the live log OUT.ckpt/train_log.jsonl."""
        if resume_from is not None:
            loaded, self.best = load_checkpoint(resume_from, self.model, self.optimizer)
            self.state.update(loaded)
            distributed.load_rng(self.ckpt_root, self.state["step"], self.ctx)
        distributed.barrier(self.ctx)  # every rank has read the checkpoint before rank 0 replaces it
        if resume_from is None and self.ctx.is_main:
            clear_checkpoints(self.ckpt_root)  # overwrite: start over (checked by check_output), keeping the lock
        if self.ctx.is_main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
            (self.ckpt_root / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in self.log))

    def emit(self, row: dict) -> None:
        self.log.append(row)
        if self.ctx.is_main:
            with (self.ckpt_root / "train_log.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.callback is not None:
            self.callback(row)

    def checkpoint(self) -> Path:
        if not self.ctx.is_main:
            distributed.save_rng(self.ckpt_root, self.state["step"], self.ctx)
            return self.ckpt_root / f"step-{self.state['step']:09d}"
        return save_checkpoint(self.ckpt_root, self.model, self.optimizer, self.state, self.best)

    def validate(self) -> None:
        state = self.state
        if not self.ctx.is_main:  # rank 0 validates and keeps the best weights; the others go on
            state["pending_validation"] = False
            return
        ndcg, protocol = _validate(self.model, self.eval_collection, self.frozen, self.cache_dir, self.progress)
        epoch = state["epoch"] if state["position"] == 0 else round(state["step"] / self.steps_per_epoch, 3)
        with deferred_interrupts():  # the best weights, the state and the log row change together
            # Epoch 0 (before any step) is logged as the baseline, never kept as "the best": the run must train.
            if state["step"] > 0 and (state["best_ndcg_cut_10"] is None or ndcg > state["best_ndcg_cut_10"]):
                state["best_ndcg_cut_10"], state["best_epoch"] = ndcg, epoch
                self.best = trainable_state(self.model)
            state["pending_validation"] = False
            self.emit({"kind": "validation", "step": state["step"], "epoch": epoch, "ndcg_cut_10": ndcg,
                       "split": self.cfg.eval_split, "protocol": protocol})

    def step(self, batch: Tensor) -> None:
        """One optimizer step on a global batch of example indices, its log row, and the periodic checkpoint."""
        cfg, state, data = self.cfg, self.state, self.data
        t0 = time.perf_counter()
        self.uncommitted_rng = rng_state()
        _train_mode(self.model)
        anneal(self.model, state["step"], self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        local = distributed.shard(batch, self.ctx)  # the whole batch in one process
        pool = data.prefix.pool if data.prefix is not None else None
        if not len(local):
            loss, head_seconds = 0., 0.
        elif data.distill is not None:
            loss, head_seconds = distill_forward_backward(self.model, cfg, data.distill, local, state["step"],
                                                          self.model.distill_log_scale, data.pooled, pool=pool)
        else:
            loss, head_seconds = forward_backward(self.model, cfg, data.examples, local, data.pooled, pool=pool)
        loss = distributed.reduce_gradients(self.trainable, len(local), len(batch), loss, self.ctx)
        with deferred_interrupts():  # the update, the step count and the log row: all of them or none
            self.optimizer.step()
            state["step"] += 1
            state["position"] += len(batch)
            self.uncommitted_rng = None
            t3 = time.perf_counter()
            self.advance(1)
            self.emit({"kind": "step", "step": state["step"], "epoch": state["epoch"] + 1, "loss": loss,
                       "lr": cfg.lr if self.trains_encoder else None,
                       "head_lr": cfg.head_lr if self.model.head else None,
                       "examples_per_s": len(batch) / (t3 - t0), "head_share": head_seconds / (t3 - t0),
                       "seconds": t3 - t0})
            if cfg.save_every and state["step"] % cfg.save_every == 0:
                self.checkpoint()

    def run_epochs(self) -> None:
        """The epochs, from where the state stands; Ctrl-C checkpoints and raises TrainingInterrupted."""
        total_steps = self.total_steps
        self.advance = self.progress("training", total_steps) if self.progress else (lambda k: None)
        self.advance(min(self.state["step"], total_steps))
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            self._loop()
        except KeyboardInterrupt:
            if self.uncommitted_rng is not None:  # within a step, before its update: only dropout's RNG moved
                set_rng_state(self.uncommitted_rng)
            saved_at = self.checkpoint()
            raise TrainingInterrupted(checkpoint_step(saved_at), saved_at) from None
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])

    def _more_steps(self) -> bool:
        return self.cfg.max_steps is None or self.state["step"] < self.cfg.max_steps

    def _loop(self) -> None:
        cfg, state, validating = self.cfg, self.state, self.eval_collection is not None
        if state["pending_validation"] or (validating and state["step"] == 0 and not self.log):
            self.validate()  # an interrupted validation, or the untrained baseline (epoch 0)
        while state["epoch"] < cfg.epochs and self._more_steps():
            order = epoch_order(self.n, cfg.seed, state["epoch"])
            start_epoch(self.model, cfg, self.data, state["epoch"], state["position"])  # --bits: refit the levels
            while state["position"] < self.n and self._more_steps():
                self.step(order[state["position"] : state["position"] + cfg.batch_size])
            if state["position"] >= self.n:
                # One dict.update: Ctrl-C lands between bytecodes, never between the epoch and the position.
                state.update(epoch=state["epoch"] + 1, position=0, pending_validation=validating)
                self.checkpoint()
                if state["pending_validation"]:
                    self.validate()
                    self.checkpoint()
        if validating and state["position"] > 0 and not any(
            r["kind"] == "validation" and r["step"] == state["step"] for r in self.log
        ):
            self.validate()  # stopped mid-epoch by max_steps: still report a validation number


def _train_mode(model) -> None:
    """Train mode (dropout) for the head and the encoder's trainable layers; eval mode for everything frozen."""
    model.train()
    model.encoder.eval()
    for module in model.encoder.modules():
        params = list(module.parameters())
        if params and all(p.requires_grad for p in params):  # a trained layer: its dropout too
            module.train()


def _build_optimizer(model, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, bool]:
    """Adam(W) over the trainable encoder layers (at lr) and the head (at head_lr); and whether the encoder trains."""
    groups = []
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": cfg.lr})
    head_params = list(model.head.parameters()) if model.head is not None else []
    if hasattr(model, "distill_log_scale"):
        head_params.append(model.distill_log_scale)
    if getattr(model, "code_quantizer", None) is not None and model.code_quantizer.learn_levels:
        head_params.append(model.code_quantizer.levels)
    if head_params:
        groups.append({"params": head_params, "lr": cfg.head_lr})
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(groups, weight_decay=cfg.weight_decay), bool(encoder_params)


def _finish(run: _Run) -> Path:
    """Keep the best validated weights, record the run in the model's config, and write the model folder (rank 0;
    it appears whole, then the checkpoints go)."""
    model, state, log, cfg = run.model, run.state, run.log, run.cfg
    if run.best is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in run.best.items():
                params[name].copy_(value)
    steps = [r for r in log if r["kind"] == "step"]
    if cfg.bits is not None:
        model.set_codec(final_codec(model, cfg, run.data))
    model.config = model.config.replace(encoder_trained=not run.frozen, training=run.recipe, training_result={
        "steps": state["step"],
        "epochs_completed": state["epoch"],
        "examples": run.n,
        "queries": len(run.data.examples.query_ids) if run.data.examples is not None else 0,
        "queries_without_enough_negatives": run.data.examples.dropped_queries if run.data.examples else None,
        "distill_scale": float(model.distill_log_scale.detach().exp()) if hasattr(model, "distill_log_scale") else None,
        "negatives_source": run.data.negatives_source,
        "training_data": state.get("data"),  # rows and digest of each part (documents, queries, judgements)
        "frozen_prefix": run.data.prefix is not None,  # the trained layers ran on stored frozen-layer outputs
        "final_loss": steps[-1]["loss"] if steps else None,
        "best_epoch": state["best_epoch"],
        "best_ndcg_cut_10": state["best_ndcg_cut_10"],
        "baseline_ndcg_cut_10": next((r["ndcg_cut_10"] for r in log if r["kind"] == "validation" and r["step"] == 0),
                                     None),  # the untrained model, for comparison
        "validation_split": cfg.eval_split,
        "validation_dataset": run.eval_collection.name if run.eval_collection is not None else None,
        "validation_protocol": next((r["protocol"] for r in log if r["kind"] == "validation"), None),
    })
    output = Path(cfg.output)
    distributed.barrier(run.ctx)  # every rank has written its last files under OUT.ckpt/
    if not run.ctx.is_main:
        distributed.barrier(run.ctx)  # rank 0 writes the model folder
        return output
    with atomic_dir(output, overwrite=output.exists()) as tmp:
        model.save(tmp, name=output.name, store_encoder=cfg.store_encoder)
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))
        plot_training(log, tmp / "train_curve.png", title=_title(cfg))
    shutil.rmtree(run.ckpt_root, ignore_errors=True)
    distributed.barrier(run.ctx)
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
