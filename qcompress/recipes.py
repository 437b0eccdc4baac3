"""Run the paper's experiments from recipe files, resumably, and aggregate them into tables and plots (issue 5).

    python -m qcompress.recipes recipes/variants.toml --profile offline            # run, then aggregate
    python -m qcompress.recipes recipes/*.toml --profile offline --dry-run          # list the runs only
    python -m qcompress.recipes recipes/peers.toml --profile offline --aggregate-only
    python -m qcompress.recipes recipes/variants.toml --profile paper --set encoder=/tmp/tiny-bert --set seeds=[42]

A recipe (recipes/*.toml) is plain TOML: `name`, `title`, `claim`, and one table per profile under `profiles`
(`paper`: the authors' set-up, for a GPU with internet; `offline`: the same experiment scaled to 2 CPU cores).
A profile holds:

    encoder, max_length, seeds      the encoder (hub id, folder, or "minilm"), its max length, the seeds
    encoder_layers                  transformer layers trained by the encoder-training variants (the paper: 4)
    train = {...}                   qcompress.training.TrainConfig fields (dataset, split, epochs, max_steps, ...)
    evaluate = [{name, dataset, split, protocol, top_k}]   the evaluation sets (protocol: full, judged, rerank)
    trec_dir                        the local TREC DL folder (else $QCOMPRESS_TREC_DIR)
    reference                       the row label every other row is tested against, a template over the row's
                                    parameters ("BEC", "BFEC d={dim}")
    runs = [{kind, ...}]            run entries; a list value expands into one run per element (a grid):
        kind = "train"    train a variant (variant, dim, train_fraction, any TrainConfig field), then evaluate
        kind = "encoder"  the untrained encoder alone: similarity "cosine" (float32) or "fidelity" (angles)
        kind = "peer"     a method of qcompress.peers on the untrained encoder's outputs (method, dim)
      with `storage` (a list: float32 / uint8 for angles, float32 / int8 for vectors: one table row each) and
      `label` / `series` (templates naming the row and its plot series).
    plots = [{file, x, series?, xlabel, xlog, title}]   PNG plots of NDCG@10 against a row field

`--set KEY=VALUE` overrides any profile value (VALUE in TOML syntax, else a string; dotted keys reach into
tables: --set train.max_steps=2). Training runs are seeded; encoder and peer runs are deterministic and run once.

Output (OUT defaults to runs/recipes):
    OUT/<recipe>/<profile>/results/<run id>.json   one per run: parameters, bytes per vector, head parameters,
                                                   metrics and per-query NDCG@10 for every evaluation set
    OUT/<recipe>/<profile>/results.md, *.png         the aggregate: mean +- std over seeds, paired tests
    OUT/<recipe>/<profile>/models/<run id>/          while a run trains (its checkpoint lets an interrupted run
                                                   resume); removed once the run's JSON is written
    OUT/cache/                                     pooled encoder outputs and mined negatives, shared by all runs
A run whose JSON exists is skipped, so an interrupted job continues where it stopped when started again.
Models that trained only their last layers are evaluated by running just those layers on the frozen layers'
outputs, computed once per text for the whole process (qcompress.frozen_prefix): the same numbers up to float
round-off, in about a fifth of the time for MiniLM with one trained layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import shutil
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["load_recipe", "profile_config", "expand_runs", "run_recipe", "aggregate", "main", "RunSpec"]

DEFAULT_OUT = "runs/recipes"
METRIC = "ndcg_cut_10"


# -- recipe files ----------------------------------------------------------------------------------------------


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading recipes needs Python 3.11+ (tomllib) or `pip install tomli`") from None
    return tomllib


def load_recipe(path: str | os.PathLike) -> dict:
    """Read a recipe file (TOML) and check its top-level layout."""
    tomllib = _toml()
    path = Path(path)
    with path.open("rb") as f:
        recipe = tomllib.load(f)
    for key in ("name", "profiles"):
        if key not in recipe:
            raise ValueError(f"{path}: a recipe needs `{key}`")
    recipe["path"] = str(path)
    return recipe


def _parse_value(text: str) -> Any:
    tomllib = _toml()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def profile_config(recipe: dict, profile: str, overrides: Sequence[str] = ()) -> dict:
    """The profile's settings with `--set KEY=VALUE` overrides applied (dotted keys reach into tables)."""
    profiles = recipe["profiles"]
    if profile not in profiles:
        raise ValueError(f"recipe {recipe['name']!r} has no profile {profile!r}; it has {', '.join(profiles)}")
    cfg = json.loads(json.dumps(profiles[profile]))  # a deep copy
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        target = cfg
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {key}: {part} is not a table")
        target[parts[-1]] = _parse_value(value.strip())
    cfg.setdefault("seeds", [42])
    cfg.setdefault("max_length", 256)
    cfg.setdefault("train", {})
    cfg.setdefault("runs", [])
    if not cfg.get("evaluate"):
        raise ValueError(f"profile {profile!r} of {recipe['name']!r} has no `evaluate` sets")
    return cfg


@dataclasses.dataclass
class RunSpec:
    """One run: an expanded entry of `runs`, with its seed (None for deterministic runs)."""

    id: str
    kind: str
    params: dict
    seed: int | None
    label: str
    series: str | None
    storages: list[str]
    order: tuple


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _format(template: str, params: dict) -> str:
    values = _Default(params)
    if isinstance(values.get("train_fraction"), (int, float)):
        values["fraction"] = f"{100 * values['train_fraction']:g}%"
    return " ".join(string.Formatter().vformat(template, (), values).split())


def _variant_layers(variant: str | None) -> int:
    from qcompress.training import resolve_variant

    return resolve_variant(variant)["train_layers"] if variant else 0


def expand_runs(cfg: dict) -> list[RunSpec]:
    """Every run of a profile, cheapest first: deterministic runs, frozen-encoder training, encoder training
    (by seed, so that a partial job has every variant of the first seeds)."""
    specs: list[RunSpec] = []
    for position, entry in enumerate(cfg["runs"]):
        kind = entry.get("kind", "train")
        if kind not in ("train", "encoder", "peer", "first_stage"):
            raise ValueError(f"unknown run kind {kind!r}; choose train, encoder, peer or first_stage")
        fixed = {k: v for k, v in entry.items() if k not in ("kind", "label", "series", "storage")}
        grid_keys = [k for k, v in fixed.items() if isinstance(v, list)]
        storages = entry.get("storage", ["float32"])
        storages = storages if isinstance(storages, list) else [storages]
        for combo in itertools.product(*(fixed[k] for k in grid_keys)):
            params = dict(fixed, **dict(zip(grid_keys, combo)))
            seeds = cfg["seeds"] if kind == "train" else [None]
            default_label = {"train": "{variant}", "encoder": "encoder {similarity}", "peer": "{method} d={dim}",
                             "first_stage": "first stage (BM25)"}
            label = _format(entry.get("label", default_label[kind]), params)
            series = entry.get("series")  # a template, formatted per table row (with its storage)
            frozen = kind != "train" or (
                params.get("train_layers", _variant_layers(params.get("variant"))) == 0
            )
            for seed in seeds:
                name = "-".join([kind] + [f"{k}={params[k]}" for k in sorted(params)] +
                                ([f"seed={seed}"] if seed is not None else []))
                name = "".join(c if c.isalnum() or c in "-=._+" else "_" for c in name)
                cost = 0 if kind != "train" else (1 if frozen else 2)
                specs.append(RunSpec(name, kind, params, seed, label, series, storages,
                                     (cost, seed if seed is not None else -1, position)))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("two runs of the recipe have the same parameters; make each `runs` entry distinct")
    return sorted(specs, key=lambda s: s.order)


# -- collections and encoders -------------------------------------------------------------------------------------

_COLLECTIONS: dict[tuple, Any] = {}


def _collection(dataset: str | None, split: str, trec_dir: str | None):
    from qcompress.data import load_collection

    key = (dataset, split, trec_dir)
    if key not in _COLLECTIONS:
        _COLLECTIONS[key] = load_collection(dataset, split, trec_dir=trec_dir)
    return _COLLECTIONS[key]


def _trec_dir(cfg: dict) -> str | None:
    value = cfg.get("trec_dir") or os.environ.get("QCOMPRESS_TREC_DIR")
    return str(Path(value).expanduser()) if value else None


def _eval_sets(cfg: dict) -> list[dict]:
    sets = []
    for item in cfg["evaluate"]:
        item = dict(item)
        item.setdefault("name", f"{item.get('dataset') or 'cranfield'} {item.get('split', 'test')}")
        item.setdefault("split", "test")
        item.setdefault("protocol", "full")
        item.setdefault("top_k", 1000)
        sets.append(item)
    return sets


_PREFIXES = None  # qcompress.frozen_prefix.FrozenPrefixCache, shared by every run of this process


def _pooled(model, texts: Sequence[str], cache_dir: Path | None, top_layers: int = 0):
    """Pooled outputs: from the disk cache for a frozen encoder (cache_dir), else by running only the trained top
    layers on the frozen layers' stored outputs (top_layers > 0), else by running the encoder."""
    global _PREFIXES
    from qcompress.encoder import transformer_layers
    from qcompress.training import pooled_outputs

    if cache_dir is None and 0 < top_layers < len(transformer_layers(model.encoder)):
        from qcompress.frozen_prefix import FrozenPrefixCache

        _PREFIXES = _PREFIXES or FrozenPrefixCache()
        return _PREFIXES.pool(model, list(texts), top_layers)
    return pooled_outputs(model, list(texts), cache_dir)


# -- one run ------------------------------------------------------------------------------------------------------


def _storage_method(storage: str, similarity: str) -> str:
    if similarity == "fidelity":
        if storage not in ("float32", "uint8"):
            raise ValueError(f"angles are stored as float32 or uint8, not {storage!r}")
        return "angles" if storage == "float32" else "uint8 angles"
    if storage not in ("float32", "int8", "int8+rescore", "binary", "binary+rescore"):
        raise ValueError(f"vectors are stored as float32, int8(+rescore) or binary(+rescore), not {storage!r}")
    return storage


def _evaluate_rows(spec: RunSpec, cfg: dict, model, frozen: bool, cache_dir: Path, transform,
                   similarity: str, reps: list[tuple[str, str, dict]], extra: dict, top_layers: int = 0) -> list[dict]:
    """Evaluate every (row label suffix, method, row params) of one run on every evaluation set (`top_layers`:
    how many of the encoder's last layers were trained, 0 for a frozen encoder)."""
    from qcompress.evaluation import METRICS, evaluate_run
    from qcompress.evaluation import collection_texts
    from qcompress.peers import rank_with, representation

    rows = [dict(label=label, method=method, **extra, params=dict(spec.params, **params), metrics={})
            for label, method, params in reps]
    for item in _eval_sets(cfg):
        collection = _collection(item.get("dataset"), item["split"], _trec_dir(cfg))
        texts = collection_texts(collection, item["protocol"], top_k=int(item["top_k"]))
        cache = cache_dir if frozen else None
        q = transform(_pooled(model, texts.query_texts, cache, top_layers))
        d = transform(_pooled(model, texts.doc_texts, cache, top_layers))
        for row, (_, method, params) in zip(rows, reps):
            rep = representation(method, d, dim=row["params"].get("dim"), similarity=similarity,
                                 rescore_k=int(cfg.get("rescore_k", 100)))
            run = rank_with(rep, texts, q, d, top_k=int(item["top_k"]))
            mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, tuple(METRICS))
            row["bytes_per_vector"] = rep.bytes_per_vector
            row["fitted_parameters"] = rep.fitted_parameters
            row["metrics"][item["name"]] = {
                "protocol": item["protocol"], "dataset": item.get("dataset") or "cranfield",
                "split": item["split"], "queries": len(per_query), "documents": len(texts.doc_ids),
                **mean, "per_query_ndcg_cut_10": {qid: v[METRIC] for qid, v in per_query.items()},
            }
    return rows


def _head_parameters(model) -> int:
    return sum(p.numel() for p in model.head.parameters()) if model.head is not None else 0


def _run_train(spec: RunSpec, cfg: dict, out: Path, cache_dir: Path, keep_models: bool) -> dict:
    from qcompress.cache import project_pooled
    from qcompress.encoder import transformer_layers
    from qcompress.model import load_model
    from qcompress.training import TrainConfig, checkpoint_dir, summary, train

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    args = {k: v for k, v in cfg["train"].items() if k in known}
    args.update({k: v for k, v in spec.params.items() if k in known})
    variant = spec.params.get("variant")
    layers = _variant_layers(variant) if variant else args.get("train_layers", 0)
    if layers and "train_layers" not in spec.params and cfg.get("encoder_layers") is not None:
        args["train_layers"] = int(cfg["encoder_layers"])
    model_dir = out / "models" / spec.id
    args.update(output=str(model_dir), encoder=cfg.get("encoder"), max_length=int(cfg["max_length"]),
                seed=int(spec.seed), cache_dir=str(cache_dir))
    # An interrupted training left a checkpoint beside its output folder: continue it (same settings, same weights).
    resume = any(checkpoint_dir(model_dir).glob("step-*/state.json"))
    args.update(resume=resume, overwrite=not resume)
    unknown = sorted(set(cfg["train"]) - known)
    if unknown:
        raise ValueError(f"unknown train setting(s) {', '.join(unknown)}")
    collection = _collection(args.get("dataset"), args.get("split", "train"), _trec_dir(cfg))
    t0 = time.perf_counter()
    train(args, collection=collection)
    train_seconds = time.perf_counter() - t0
    info = summary(model_dir)
    model = load_model(model_dir, device="cpu" if not _cuda() else None)
    frozen = int(model.config.training["train_layers"]) == 0
    similarity = model.similarity
    reps = [(spec.label + ("" if s == "float32" else f" {s}"), _storage_method(s, similarity), {"storage": s})
            for s in spec.storages]
    n_layers = int(model.config.training["train_layers"])
    encoder_trained = 0
    if n_layers:
        encoder_trained = sum(p.numel() for layer in list(transformer_layers(model.encoder))[-n_layers:]
                              for p in layer.parameters())
    t1 = time.perf_counter()
    rows = _evaluate_rows(spec, cfg, model, frozen, cache_dir, lambda p: project_pooled(model, p), similarity, reps,
                          {"head_parameters": _head_parameters(model), "encoder_parameters_trained": encoder_trained,
                           "similarity": similarity, "dim": model.dim}, top_layers=n_layers)
    result = {"training": dict(model.config.training, **{k: info[k] for k in (
                  "steps", "epochs_completed", "examples", "final_loss", "examples_per_s")}),
              "training_result": model.config.training_result,
              "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t1, "rows": rows}
    if not keep_models:
        shutil.rmtree(model_dir, ignore_errors=True)
    return result


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run_untrained(spec: RunSpec, cfg: dict, cache_dir: Path) -> dict:
    from qcompress.model import build_model
    from qcompress.quantum import encode_angles

    model = build_model(cfg.get("encoder"), head="none", similarity="cosine", max_length=int(cfg["max_length"]))
    t1 = time.perf_counter()
    if spec.kind == "encoder":
        similarity = spec.params.get("similarity", "cosine")
        transform = encode_angles if similarity == "fidelity" else (lambda p: p)
        reps = [(spec.label + ("" if s == "float32" else f" {s}"), _storage_method(s, similarity), {"storage": s})
                for s in spec.storages]
    else:
        similarity, transform = "cosine", (lambda p: p)
        method = spec.params.get("method")
        reps = [(spec.label, method, {"storage": method})]
    rows = _evaluate_rows(spec, cfg, model, True, cache_dir, transform, similarity, reps,
                          {"head_parameters": 0, "encoder_parameters_trained": 0, "similarity": similarity,
                           "dim": spec.params.get("dim", model.in_dim)})
    return {"eval_seconds": time.perf_counter() - t1, "rows": rows}


def _run_first_stage(spec: RunSpec, cfg: dict) -> dict:
    """The evaluation sets' own first-stage run (TREC DL: BM25 top 100) as it is: no encoder, nothing stored."""
    from qcompress.evaluation import METRICS, cut_run, evaluate_run

    row = dict(label=spec.label, method="first stage", params=dict(spec.params, storage="none"), metrics={},
               bytes_per_vector=0, fitted_parameters=0, head_parameters=0, encoder_parameters_trained=0,
               similarity="bm25", dim=0)
    for item in _eval_sets(cfg):
        collection = _collection(item.get("dataset"), item["split"], _trec_dir(cfg))
        if collection.first_stage is None:
            raise ValueError(f"{item['name']}: the collection ships no first-stage run")
        run = cut_run({q: collection.first_stage.get(q, {}) for q in collection.qrels}, int(item["top_k"]))
        mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, tuple(METRICS))
        row["metrics"][item["name"]] = {
            "protocol": "first stage", "dataset": item.get("dataset"), "split": item["split"],
            "queries": len(per_query), "documents": len({d for r in run.values() for d in r}),
            **mean, "per_query_ndcg_cut_10": {qid: v[METRIC] for qid, v in per_query.items()},
        }
    return {"rows": [row]}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def config_key(spec: RunSpec, cfg: dict) -> str:
    """A digest of everything that decides a run's numbers: two recipes' runs with the same key are the same
    computation, so one's result JSON serves the other (see `run_recipe`)."""
    import hashlib

    keys = ["encoder", "max_length", "encoder_layers", "train", "evaluate", "trec_dir"]
    if spec.kind != "train" or any("rescore" in s for s in spec.storages):
        keys.append("rescore_k")
    decisive = {k: cfg.get(k) for k in keys}  # which rows (storages) a run evaluates: see _relabel
    decisive.update(kind=spec.kind, params=spec.params, seed=spec.seed)
    return hashlib.blake2b(json.dumps(decisive, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def _relabel(result: dict, spec: RunSpec) -> dict | None:
    """A result computed for another recipe, with this recipe's row labels and series."""
    result = json.loads(json.dumps(result))
    if spec.kind != "peer":
        rows = [r for r in result["rows"] if r["params"].get("storage", "float32") in spec.storages]
        if len(rows) != len(spec.storages):
            return None
        result["rows"] = rows
    for row in result["rows"]:
        storage = row["params"].get("storage", "float32")
        row["label"] = spec.label + ("" if spec.kind == "peer" or storage == "float32" else f" {storage}")
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


def run_one(spec: RunSpec, recipe: dict, profile: str, cfg: dict, out: Path, cache_dir: Path,
            keep_models: bool = False) -> Path:
    """Run one spec and write its result JSON atomically; return the JSON's path."""
    from qcompress import __version__
    from qcompress.atomic import atomic_file

    path = out / "results" / f"{spec.id}.json"
    t0 = time.perf_counter()
    if spec.kind == "train":
        result = _run_train(spec, cfg, out, cache_dir, keep_models)
    elif spec.kind == "first_stage":
        result = _run_first_stage(spec, cfg)
    else:
        result = _run_untrained(spec, cfg, cache_dir)
    result.update(config_key=config_key(spec, cfg), recipe=recipe["name"], profile=profile, run=spec.id, kind=spec.kind, seed=spec.seed,
                  params=spec.params, label=spec.label, series=spec.series, encoder=cfg.get("encoder") or "minilm",
                  max_length=cfg["max_length"], seconds=time.perf_counter() - t0, qcompress_version=__version__,
                  git_commit=_git_commit(), host={"python": platform.python_version(), "cpus": os.cpu_count()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return path


def _current(path: Path, spec: RunSpec, cfg: dict) -> dict | None:
    """The result JSON at `path` when it exists and was computed with the profile's present settings."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("config_key") in (None, config_key(spec, cfg)) else None


def run_recipe(recipe: dict, profile: str, cfg: dict, out_root: Path, *, only: Sequence[str] = (),
               keep_models: bool = False, log=print) -> list[Path]:
    """Run every spec of the profile whose JSON is missing; return the JSON paths of all specs."""
    out = out_root / recipe["name"] / profile
    cache_dir = Path(cfg.get("cache_dir") or out_root / "cache")
    specs = [s for s in expand_runs(cfg) if not only or any(o in s.id for o in only)]
    paths = []
    for i, spec in enumerate(specs, 1):
        path = out / "results" / f"{spec.id}.json"
        current = _current(path, spec, cfg)
        if path.is_file() and not current:
            log(f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}: its settings changed since it ran: "
                "running it again")
        reused = None if current else _reusable(spec, cfg, out_root, profile)
        if current:
            log(f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}: done before, skipped")
        elif reused is not None:
            from qcompress.atomic import atomic_file

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                tmp.write_text(json.dumps(dict(reused, recipe=recipe["name"]), indent=1) + "\n")
            log(f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}: same run as {reused['reused_from']}")
        else:
            t0 = time.perf_counter()
            log(f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}: running")
            run_one(spec, recipe, profile, cfg, out, cache_dir, keep_models)
            log(f"[{recipe['name']}/{profile}] {i}/{len(specs)} {spec.id}: {time.perf_counter() - t0:.0f} s")
        paths.append(path)
    return paths


# -- aggregation --------------------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def collect_rows(results: list[dict]) -> list[dict]:
    """Group the rows of all runs by label: per evaluation set the per-seed NDCG@10 and the per-query NDCG@10
    averaged over seeds. Keeps the order in which labels first appear."""
    groups: dict[str, dict] = {}
    for result in results:
        for row in result["rows"]:
            g = groups.setdefault(row["label"], {
                "label": row["label"], "params": row["params"],
                "series": _format(result["series"], row["params"]) if result.get("series") else row["label"],
                "bytes_per_vector": row["bytes_per_vector"], "head_parameters": row["head_parameters"],
                "fitted_parameters": row.get("fitted_parameters", 0),
                "encoder_parameters_trained": row.get("encoder_parameters_trained", 0),
                "similarity": row["similarity"], "dim": row["dim"], "seeds": [], "evals": {}, "kind": result["kind"],
            })
            g["seeds"].append(result["seed"])
            for name, m in row["metrics"].items():
                e = g["evals"].setdefault(name, {"values": [], "per_query": {}, "protocol": m["protocol"],
                                                 "queries": m["queries"], "documents": m["documents"],
                                                 "other": {}})
                e["values"].append(m[METRIC])
                for key in ("recip_rank_10", "recall_100", "map"):
                    if key in m:
                        e["other"].setdefault(key, []).append(m[key])
                for qid, v in m["per_query_ndcg_cut_10"].items():
                    e["per_query"].setdefault(qid, []).append(v)
    for g in groups.values():
        for e in g["evals"].values():
            e["mean"], e["std"] = _mean_std(e["values"])
            e["per_query_mean"] = {q: sum(v) / len(v) for q, v in e["per_query"].items()}
    return list(groups.values())


def _reference_label(cfg: dict, row: dict) -> str | None:
    template = cfg.get("reference")
    if not template:
        return None
    params = dict(row["params"], dim=row["dim"])
    try:
        return _format(template, params)
    except (KeyError, ValueError, IndexError):
        return None


def significance(rows: list[dict], cfg: dict) -> None:
    """Add, per row and evaluation set, the paired randomization and t-test p-values against the reference row
    (per-query NDCG@10 averaged over each row's seeds, paired by query)."""
    from qcompress.evaluation import paired_randomization_test, paired_t_test

    by_label = {r["label"]: r for r in rows}
    for row in rows:
        ref = by_label.get(_reference_label(cfg, row) or "")
        row["reference"] = ref["label"] if ref is not None else None
        for name, e in row["evals"].items():
            e["p_randomization"] = e["p_t"] = e["delta"] = None
            if ref is None or ref is row or name not in ref["evals"]:
                continue
            r = ref["evals"][name]
            qids = sorted(set(e["per_query_mean"]) & set(r["per_query_mean"]))
            a = [e["per_query_mean"][q] for q in qids]
            b = [r["per_query_mean"][q] for q in qids]
            e["delta"] = e["mean"] - r["mean"]
            e["p_randomization"] = paired_randomization_test(a, b)
            e["p_t"] = paired_t_test(a, b)[1]


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,}" if float(n).is_integer() else f"{n:g}"


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table(rows: list[dict], cfg: dict) -> str:
    """A markdown table: one row per label, NDCG@10 mean +- std over seeds per evaluation set, the difference
    to the reference row and its paired p-values."""
    evals = [item["name"] for item in _eval_sets(cfg)]
    head = ["method", "bytes/vector", "head params", "seeds"]
    for name in evals:
        head += [f"{name} NDCG@10", "Δ vs ref", "p (rand.)", "p (t)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for row in rows:
        params = row["head_parameters"] or row["fitted_parameters"]
        extra = "" if row["head_parameters"] or not row["fitted_parameters"] else " (fit)"
        n = len(row["seeds"])
        cells = [row["label"] + (" (ref)" if row.get("reference") == row["label"] else ""),
                 _fmt_bytes(row["bytes_per_vector"]), f"{params:,}{extra}",
                 "deterministic" if row["seeds"] == [None] else str(n)]
        for name in evals:
            e = row["evals"].get(name)
            if e is None:
                cells += ["", "", "", ""]
                continue
            value = f"{e['mean']:.4f}" + (f" ± {e['std']:.4f}" if n > 1 else "")
            delta = "" if e.get("delta") is None else f"{e['delta']:+.4f}"
            cells += [value, delta, _fmt_p(e.get("p_randomization")), _fmt_p(e.get("p_t"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairs_table(rows: list[dict], cfg: dict) -> str:
    """The profile's `pairs` ([first label, second label] templates) as a markdown table of paired tests."""
    from qcompress.evaluation import paired_randomization_test, paired_t_test

    evals = [item["name"] for item in _eval_sets(cfg)]
    by_label = {r["label"]: r for r in rows}
    head = ["comparison"] + [f"{name} {col}" for name in evals for col in ("Δ NDCG@10", "p (rand.)", "p (t)")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for first, second in cfg["pairs"]:
        a, b = by_label.get(first), by_label.get(second)
        if a is None or b is None:
            continue
        cells = [f"{first} vs {second}"]
        for name in evals:
            if name not in a["evals"] or name not in b["evals"]:
                cells += ["", "", ""]
                continue
            ea, eb = a["evals"][name], b["evals"][name]
            qids = sorted(set(ea["per_query_mean"]) & set(eb["per_query_mean"]))
            x, y = [ea["per_query_mean"][q] for q in qids], [eb["per_query_mean"][q] for q in qids]
            cells += [f"{ea['mean'] - eb['mean']:+.4f}", _fmt_p(paired_randomization_test(x, y)),
                      _fmt_p(paired_t_test(x, y)[1])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], cfg: dict, spec: dict, path: Path) -> Path:
    """NDCG@10 (mean, error bar: std over seeds) against a row field, one line per series, one panel per
    evaluation set."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from qcompress.atomic import atomic_file

    evals = [item["name"] for item in _eval_sets(cfg)]
    fig = Figure(figsize=(6.5 * len(evals), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    x_key = spec.get("x", "bytes_per_vector")
    for i, name in enumerate(evals):
        ax = fig.add_subplot(1, len(evals), i + 1)
        series: dict[str, list] = {}
        for row in rows:
            if name not in row["evals"]:
                continue
            x = row.get(x_key, row["params"].get(x_key))
            if x is None:
                continue
            key = _format(spec["series"], dict(row["params"], label=row["label"])) if spec.get("series") \
                else row["series"]
            e = row["evals"][name]
            series.setdefault(key, []).append((float(x), e["mean"], e["std"]))
        markers = "osD^v<>pP*hX"
        for j, (key, points) in enumerate(series.items()):
            points.sort()
            xs, ys, es = zip(*points)
            style = "-" if len(points) > 1 else ""
            color = matplotlib.colormaps["tab20" if len(series) > 10 else "tab10"](j % 20 if len(series) > 10 else j)
            ax.errorbar(xs, ys, yerr=es, marker=markers[j % len(markers)], linestyle=style or "none", capsize=3,
                        label=key, alpha=0.9, color=color)
        if spec.get("xlog", False):
            ax.set_xscale("log")
        for ref in spec.get("hlines", []):  # reference rows without an x value (an untrained encoder, say)
            for row in rows:
                if row["label"] == ref and name in row["evals"]:
                    y = row["evals"][name]["mean"]
                    ax.axhline(y, color="grey", ls=":", lw=1)
                    ax.text(0.01, y, f" {ref}", fontsize=7, va="bottom", color="grey",
                            transform=ax.get_yaxis_transform())
        ax.set_xlabel(spec.get("xlabel", x_key))
        protocol = next((it["protocol"] for it in _eval_sets(cfg) if it["name"] == name), "")
        ax.set_ylabel(f"NDCG@10 ({name}, {protocol})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc=spec.get("legend", "best"))
    if spec.get("title"):
        fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def aggregate(recipe: dict, profile: str, cfg: dict, out_root: Path, *, command: str | None = None) -> Path | None:
    """Aggregate the profile's result JSONs (those of its current runs) into results.md and its plots."""
    out = out_root / recipe["name"] / profile
    specs = expand_runs(cfg)
    results = []
    for spec in specs:
        result = _current(out / "results" / f"{spec.id}.json", spec, cfg)  # stale results are left out
        if result is not None:
            results.append(result)
    if not results:
        return None
    rows = collect_rows(results)
    for row in rows:  # plot fields by name
        row.setdefault("train_fraction", row["params"].get("train_fraction"))
    significance(rows, cfg)
    done = len(results)
    lines = [f"## {recipe.get('title', recipe['name'])} — profile `{profile}`", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if cfg.get("about"):
        lines += [" ".join(str(cfg["about"]).split()), ""]
    protocols = ", ".join(f"{it['name']}: {it['protocol']}" for it in _eval_sets(cfg))
    lines += [f"Runs finished: {done} of {len(specs)}. Encoder: {cfg.get('encoder') or 'minilm'}, max length "
              f"{cfg['max_length']}. Evaluation ({protocols}); NDCG@10 mean ± standard deviation over seeds; "
              f"Δ and paired p-values (randomization test, 10,000 sign flips; t-test) against the reference row, "
              f"per query, each query's NDCG@10 averaged over seeds.", "",
              table(rows, cfg), ""]
    if cfg.get("pairs"):
        lines += ["Paired comparisons (Δ = first − second; per-query NDCG@10 averaged over seeds; randomization test "
                  "and t-test):", "", pairs_table(rows, cfg), ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "evals"} | {"evals": {n: {k: v for k, v in e.items()
          if k not in ("per_query", "per_query_mean")} for n, e in r["evals"].items()}} for r in rows],
        indent=1, default=str) + "\n")
    for spec in cfg.get("plots", []):
        plot(rows, cfg, spec, out / spec["file"])
    return out / "results.md"


def update_doc(doc: Path, key: str, results_md: Path) -> bool:
    """Put the tables of `results_md` (from its "Runs finished" line on) between `<!-- table: KEY -->` and
    `<!-- /table -->` in `doc`; returns False when the doc has no such markers."""
    import re

    lines = results_md.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Runs finished")), 0)
    body = "\n".join(lines[start:]).strip()
    text = doc.read_text()
    pattern = re.compile(rf"(<!-- table: {re.escape(key)} -->\n).*?(\n<!-- /table -->)", re.S)
    if not pattern.search(text):
        return False
    doc.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text))
    return True


def export(recipe: dict, profile: str, cfg: dict, out_root: Path, folder: Path) -> Path:
    """Every finished run of the profile as one compact JSON line each, in run order."""
    out = out_root / recipe["name"] / profile / "results"
    lines = [json.dumps(json.loads((out / f"{s.id}.json").read_text()), separators=(",", ":"))
             for s in expand_runs(cfg) if (out / f"{s.id}.json").is_file()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recipe['name']}-{profile}.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- command line ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qcompress.recipes", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="recipe files (recipes/*.toml)")
    parser.add_argument("--profile", default="offline", help="paper or offline (default offline)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile value (TOML syntax; dotted keys: train.max_steps=2)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the runs whose id contains TEXT (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild tables and plots")
    parser.add_argument("--keep-models", action="store_true", help="keep trained model folders")
    parser.add_argument("--update-doc", metavar="FILE", help="replace the table between the markers "
                        "<!-- table: RECIPE/PROFILE --> and <!-- /table --> in FILE (e.g. docs/results.md) with the "
                        "freshly aggregated one")
    parser.add_argument("--export", metavar="DIR", help="also write every finished run's JSON, one per line, to "
                        "DIR/<recipe>-<profile>.jsonl (small enough to commit beside the tables built from it)")
    args = parser.parse_args(argv)
    out_root = Path(args.out)
    if args.profile == "offline":  # the offline profiles never reach for the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for path in args.recipes:
        recipe = load_recipe(path)
        cfg = profile_config(recipe, args.profile, args.overrides)
        command = " ".join(["python -m qcompress.recipes", path, "--profile", args.profile] +
                           [f"--set {o}" for o in args.overrides])
        if args.dry_run:
            out = out_root / recipe["name"] / args.profile
            for spec in expand_runs(cfg):
                done = _current(out / "results" / f"{spec.id}.json", spec, cfg) is not None
                print(f"{recipe['name']}/{args.profile}\t{'done' if done else 'todo'}\t{spec.id}")
            continue
        if not args.aggregate_only:
            run_recipe(recipe, args.profile, cfg, out_root, only=args.only, keep_models=args.keep_models,
                       log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
        written = aggregate(recipe, args.profile, cfg, out_root, command=command)
        if args.export:
            export(recipe, args.profile, cfg, out_root, Path(args.export))
        if args.update_doc and written is not None:
            update_doc(Path(args.update_doc), f"{recipe['name']}/{args.profile}", written)
        print(f"{recipe['name']}/{args.profile}: {written or 'no results yet'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
