"""Running a profile's runs: one result JSON per run, resumable, reusing identical runs of other recipes.

Each kind of run ends in table rows, one per stored form (`storage`), evaluated on every evaluation set:

    train        trains a variant (qcompress.training.train), then evaluates its head's outputs
    encoder      the untrained encoder alone, by cosine (float32 vectors) or fidelity (its outputs as angles)
    peer         a baseline of qcompress.recipes.peers on the untrained encoder's outputs
    first_stage  the evaluation set's own first-stage run (TREC DL's BM25), as it is

A run whose JSON exists and was computed with the present settings (its `config_key`) is skipped; one whose
settings changed runs again. A run with the same key in another recipe's results is copied, relabelled. Every
JSON records its provenance: the qcompress version, the git commit, the host.

Models that trained only their last layers are evaluated by running just those layers on the frozen layers'
outputs, computed once per text for the whole process (qcompress.frozen_prefix): the same numbers up to float
round-off, in a fraction of the time (docs/results.md gives the measured times).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from qcompress._version import __version__
from qcompress.atomic import atomic_file
from qcompress.cache import PooledCache, pool_texts, project_pooled
from qcompress.data import load_collection
from qcompress.encoder import transformer_layers
from qcompress.errors import InputError
from qcompress.evaluation import METRICS, collection_texts, cut_run, evaluate_run
from qcompress.frozen_prefix import FrozenPrefixCache
from qcompress.mixing import mixing_fitted_numbers
from qcompress.model import build_model, load_model
from qcompress.quantum import encode_angles
from qcompress.recipes.config import METRIC, RunSpec, config_key, eval_sets, expand_runs, trec_dir, variant_layers
from qcompress.recipes.peers import DEFAULT_RESCORE_K, rank_with, representation
from qcompress.similarity import get_similarity
from qcompress.similarity.base import ANGLES
from qcompress.training import TrainConfig, checkpoint_dir, summary, train

__all__ = ["run_recipe", "run_one", "current_result"]

_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_SUMMARY_FIELDS = ("steps", "epochs_completed", "examples", "final_loss", "examples_per_s")

# Shared by every run of this process: collections are loaded once, frozen layers' outputs computed once per text.
_COLLECTIONS: dict[tuple, Any] = {}
_PREFIXES: FrozenPrefixCache | None = None


def _collection(dataset: str | None, split: str, trec: str | None):
    key = (dataset, split, trec)
    if key not in _COLLECTIONS:
        _COLLECTIONS[key] = load_collection(dataset, split, trec_dir=trec)
    return _COLLECTIONS[key]


def _pooled(model, texts: Sequence[str], role: str, cache_dir: Path | None, top_layers: int = 0) -> Tensor:
    """Pooled outputs of queries or documents (`role`: the model's prompt for them): from the disk cache for a
    frozen encoder (cache_dir), else by running only the trained top layers on the frozen layers' stored outputs
    (top_layers > 0), else by running the encoder."""
    global _PREFIXES
    texts = model.prompted(texts, role)
    if cache_dir is None and 0 < top_layers < len(transformer_layers(model.encoder)):
        _PREFIXES = _PREFIXES or FrozenPrefixCache()
        return _PREFIXES.pool(model, list(texts), top_layers)
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    return pool_texts(model, list(texts), cache=cache)


# -- evaluating one run's rows ---------------------------------------------------------------------------------------


def _storage_method(storage: str, similarity: str) -> str:
    if get_similarity(similarity).output_kind == ANGLES:
        methods = {"float32": "angles", "uint8": "uint8 angles", "uint8+uint8 query": "uint8 angles+uint8 query"}
        if storage not in methods:
            raise InputError(f"angles are stored as float32, uint8 or uint8+uint8 query, not {storage!r}")
        return methods[storage]
    if storage not in ("float32", "int8", "int8+rescore", "binary", "binary+rescore"):
        raise InputError(f"vectors are stored as float32, int8(+rescore) or binary(+rescore), not {storage!r}")
    return storage


# int8 rows say the query's precision (issue 17: like-for-like bytes): int8 codes against an int8 query, or
# against the float32 query (sentence-transformers' rescoring); uint8 angles' query is float32 unless said.
_STORAGE_LABELS = {"int8": "int8 (int8 query)", "int8+rescore": "int8 (float32 query)",
                   "uint8+uint8 query": "uint8 (uint8 query)"}


def _row_label(spec: RunSpec, storage: str) -> str:
    """A row's label: the run's, then its storage unless float32 (peer runs: the run's label alone)."""
    if spec.kind == "peer" or storage == "float32":
        return spec.label
    return f"{spec.label} {_STORAGE_LABELS.get(storage, storage)}"


def _storage_rows(spec: RunSpec, similarity: str) -> list[tuple[str, str, dict]]:
    """(row label, peer method, row params) for each of the spec's storages."""
    return [(_row_label(spec, s), _storage_method(s, similarity), {"storage": s}) for s in spec.storages]


def _metrics_entry(item: dict, dataset: str | None, documents: int, mean: dict, per_query: dict) -> dict:
    return {"protocol": item["protocol"], "dataset": dataset, "split": item["split"], "queries": len(per_query),
            "documents": documents, **mean,
            "per_query_ndcg_cut_10": {qid: v[METRIC] for qid, v in per_query.items()}}


def _evaluate_rows(spec: RunSpec, cfg: dict, model, frozen: bool, cache_dir: Path,
                   transform: Callable[[Tensor], Tensor], similarity: str, reps: list[tuple[str, str, dict]],
                   extra: dict, top_layers: int = 0) -> list[dict]:
    """Evaluate every (row label, method, row params) of one run on every evaluation set (`top_layers`: how many
    of the encoder's last layers were trained, 0 for a frozen encoder)."""
    rows = [dict(label=label, method=method, **extra, params=dict(spec.params, **params), metrics={})
            for label, method, params in reps]
    for item in eval_sets(cfg):
        collection = _collection(item.get("dataset"), item["split"], trec_dir(cfg))
        texts = collection_texts(collection, item["protocol"], top_k=int(item["top_k"]))
        cache = cache_dir if frozen else None
        q = transform(_pooled(model, texts.query_texts, "query", cache, top_layers))
        d = transform(_pooled(model, texts.doc_texts, "document", cache, top_layers))
        for row, (_, method, _) in zip(rows, reps):
            rep = representation(method, d, dim=row["params"].get("dim"), similarity=similarity,
                                 rescore_k=int(cfg.get("rescore_k", DEFAULT_RESCORE_K)),
                                 code_bytes=row["params"].get("bytes"), bits=row["params"].get("bits"))
            run = rank_with(rep, texts, q, d, top_k=int(item["top_k"]))
            mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, tuple(METRICS))
            row["bytes_per_vector"] = rep.bytes_per_vector
            row["fitted_parameters"] = rep.fitted_parameters + row.get("mixing_fitted_parameters", 0)
            row["query_precision"] = rep.query_precision
            row["metrics"][item["name"]] = _metrics_entry(item, item.get("dataset") or "cranfield",
                                                          len(texts.doc_ids), mean, per_query)
    return rows


# -- one run of each kind --------------------------------------------------------------------------------------------


def _train_settings(spec: RunSpec, cfg: dict, model_dir: Path, cache_dir: Path) -> dict:
    """The TrainConfig fields of a train run: the profile's `train`, the run's own parameters, the profile's
    encoder settings; resuming when an interrupted training left a checkpoint."""
    unknown = sorted(set(cfg["train"]) - _TRAIN_FIELDS)
    if unknown:
        raise InputError(f"unknown train setting(s) {', '.join(unknown)}")
    args = {k: v for k, v in cfg["train"].items() if k in _TRAIN_FIELDS}
    args.update({k: v for k, v in spec.params.items() if k in _TRAIN_FIELDS})
    variant = spec.params.get("variant")
    layers = variant_layers(variant) if variant else args.get("train_layers", 0)
    if layers and "train_layers" not in spec.params and cfg.get("encoder_layers") is not None:
        args["train_layers"] = int(cfg["encoder_layers"])
    args.update(output=str(model_dir), encoder=cfg.get("encoder"), max_length=int(cfg["max_length"]),
                seed=int(spec.seed), cache_dir=str(cache_dir), device=cfg.get("device"))
    # An interrupted training left a checkpoint beside its output folder: continue it (same settings, same weights).
    resume = any(checkpoint_dir(model_dir).glob("step-*/state.json"))
    args.update(resume=resume, overwrite=not resume)
    return args


def _head_parameters(model) -> int:
    return sum(p.numel() for p in model.head.parameters()) if model.head is not None else 0


def _encoder_parameters_trained(model, n_layers: int) -> int:
    if not n_layers:
        return 0
    return sum(p.numel() for layer in list(transformer_layers(model.encoder))[-n_layers:] for p in layer.parameters())


def _run_train(spec: RunSpec, cfg: dict, out: Path, cache_dir: Path, keep_models: bool) -> dict:
    model_dir = out / "models" / spec.id
    args = _train_settings(spec, cfg, model_dir, cache_dir)
    collection = _collection(args.get("dataset"), args.get("split", "train"), trec_dir(cfg))
    t0 = time.perf_counter()
    train(args, collection=collection)
    train_seconds = time.perf_counter() - t0
    info = summary(model_dir)
    model = load_model(model_dir, device=cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_layers = int(model.config.training["train_layers"])
    similarity = model.similarity
    extra = {"head_parameters": _head_parameters(model),
             "mixing_fitted_parameters": mixing_fitted_numbers(model.config.mixing, model.in_dim),
             "encoder_parameters_trained": _encoder_parameters_trained(model, n_layers),
             "similarity": similarity, "dim": model.dim}
    t1 = time.perf_counter()
    rows = _evaluate_rows(spec, cfg, model, n_layers == 0, cache_dir, lambda p: project_pooled(model, p), similarity,
                          _storage_rows(spec, similarity), extra, top_layers=n_layers)
    result = {"training": dict(model.config.training, **{k: info[k] for k in _SUMMARY_FIELDS}),
              "training_result": model.config.training_result,
              "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t1, "rows": rows}
    if not keep_models:
        shutil.rmtree(model_dir, ignore_errors=True)
    return result


def _identity(pooled: Tensor) -> Tensor:
    return pooled


def _run_untrained(spec: RunSpec, cfg: dict, cache_dir: Path) -> dict:
    model = build_model(cfg.get("encoder"), head="none", similarity="cosine", max_length=int(cfg["max_length"]),
                        device=cfg.get("device"))
    t1 = time.perf_counter()
    if spec.kind == "encoder":
        similarity = spec.params.get("similarity", "cosine")
        transform = encode_angles if get_similarity(similarity).output_kind == ANGLES else _identity  # head none
        reps = _storage_rows(spec, similarity)
    else:
        similarity, transform = "cosine", _identity
        method = spec.params.get("method")
        reps = [(spec.label, method, {"storage": method})]
    rows = _evaluate_rows(spec, cfg, model, True, cache_dir, transform, similarity, reps,
                          {"head_parameters": 0, "encoder_parameters_trained": 0, "similarity": similarity,
                           "dim": spec.params.get("dim", model.in_dim)})
    return {"eval_seconds": time.perf_counter() - t1, "rows": rows}


def _run_first_stage(spec: RunSpec, cfg: dict) -> dict:
    """The evaluation sets' own first-stage run (TREC DL: BM25 top 100) as it is: no encoder, nothing stored."""
    row = dict(label=spec.label, method="first stage", params=dict(spec.params, storage="none"), metrics={},
               bytes_per_vector=0, fitted_parameters=0, head_parameters=0, encoder_parameters_trained=0,
               similarity="bm25", dim=0)
    for item in eval_sets(cfg):
        collection = _collection(item.get("dataset"), item["split"], trec_dir(cfg))
        if collection.first_stage is None:
            raise InputError(f"{item['name']}: the collection ships no first-stage run")
        run = cut_run({q: collection.first_stage.get(q, {}) for q in collection.qrels}, int(item["top_k"]))
        mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, tuple(METRICS))
        documents = len({d for r in run.values() for d in r})
        row["metrics"][item["name"]] = _metrics_entry(dict(item, protocol="first stage"), item.get("dataset"),
                                                      documents, mean, per_query)
    return {"rows": [row]}


# -- result files: provenance, resuming, reuse -----------------------------------------------------------------------


def git_state() -> tuple[str | None, bool | None]:
    """(short commit, whether tracked files differ from it) of the checkout qcompress runs from; (None, None)
    outside a git checkout (an installed package)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=here, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None, None
    return commit, bool(git("status", "--porcelain", "--untracked-files=no"))


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")


def run_one(spec: RunSpec, recipe: dict, profile: str, cfg: dict, out: Path, cache_dir: Path,
            keep_models: bool = False) -> Path:
    """Run one spec and write its result JSON atomically; return the JSON's path."""
    path = out / "results" / f"{spec.id}.json"
    t0 = time.perf_counter()
    if spec.kind == "train":
        result = _run_train(spec, cfg, out, cache_dir, keep_models)
    elif spec.kind == "first_stage":
        result = _run_first_stage(spec, cfg)
    else:
        result = _run_untrained(spec, cfg, cache_dir)
    result.update(config_key=config_key(spec, cfg), recipe=recipe["name"], profile=profile, run=spec.id,
                  kind=spec.kind, seed=spec.seed, params=spec.params, label=spec.label, series=spec.series,
                  encoder=cfg.get("encoder") or "minilm", max_length=cfg["max_length"],
                  seconds=time.perf_counter() - t0, qcompress_version=__version__,
                  **dict(zip(("git_commit", "git_dirty"), git_state())),
                  host={"python": platform.python_version(), "cpus": os.cpu_count()})
    _write_json(path, result)
    return path


def current_result(path: Path, spec: RunSpec, cfg: dict) -> dict | None:
    """The result JSON at `path` when it exists and was computed with the profile's present settings."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("config_key") in (None, config_key(spec, cfg)) else None


def _relabel(result: dict, spec: RunSpec) -> dict | None:
    """A result computed for another recipe, with this recipe's row labels and series (None when it lacks one of
    the spec's storages)."""
    result = json.loads(json.dumps(result))
    if spec.kind != "peer":
        rows = [r for r in result["rows"] if r["params"].get("storage", "float32") in spec.storages]
        if len(rows) != len(spec.storages):
            return None
        result["rows"] = rows
    for row in result["rows"]:
        row["label"] = _row_label(spec, row["params"].get("storage", "float32"))
    result.update(label=spec.label, series=spec.series)
    return result


def _reusable(spec: RunSpec, cfg: dict, out_root: Path, profile: str) -> dict | None:
    key = config_key(spec, cfg)
    for path in sorted(out_root.glob(f"*/{profile}/results/{spec.id}.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        relabelled = _relabel(result, spec) if result.get("config_key") == key else None
        if relabelled is not None:
            return dict(relabelled, reused_from=str(path))
    return None


def run_recipe(recipe: dict, profile: str, cfg: dict, out_root: Path, *, only: Sequence[str] = (),
               keep_models: bool = False, log: Callable[[str], Any] = print) -> list[Path]:
    """Run every spec of the profile whose JSON is missing (or stale); return the JSON paths of all specs
    (those whose id contains one of `only`, when given)."""
    out = out_root / recipe["name"] / profile
    cache_dir = Path(cfg.get("cache_dir") or out_root / "cache")
    specs = [s for s in expand_runs(cfg) if not only or any(o in s.id for o in only)]
    paths = []
    for i, spec in enumerate(specs, 1):
        prefix = f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}:"
        path = out / "results" / f"{spec.id}.json"
        current = current_result(path, spec, cfg)
        if path.is_file() and not current:
            log(f"{prefix} its settings changed since it ran: running it again")
        reused = None if current else _reusable(spec, cfg, out_root, profile)
        if current:
            log(f"{prefix} done before, skipped")
        elif reused is not None:
            _write_json(path, dict(reused, recipe=recipe["name"]))
            log(f"{prefix} same run as {reused['reused_from']}")
        else:
            t0 = time.perf_counter()
            log(f"{prefix} running")
            run_one(spec, recipe, profile, cfg, out, cache_dir, keep_models)
            log(f"{prefix} {time.perf_counter() - t0:.0f} s")
        paths.append(path)
    return paths
