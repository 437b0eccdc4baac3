"""Recipe files: reading them, choosing a profile, applying overrides, and expanding `runs` into one RunSpec per run.

A recipe's profile, once overridden, is a plain dict (`cfg`); everything downstream (the runner, the report) reads
its settings from it. `config_key` digests the settings that decide a run's numbers: the runner uses it to tell a
stale result from a current one and to reuse another recipe's identical run.

Example:
    >>> recipe = {"name": "demo", "path": "demo.toml", "profiles": {"offline": {
    ...     "evaluate": [{"dataset": "cranfield"}],
    ...     "runs": [{"kind": "peer", "method": ["pca", "truncate"], "dim": 32, "label": "{method} d={dim}"}]}}}
    >>> cfg = profile_config(recipe, "offline", ["max_length=128"])
    >>> cfg["max_length"], cfg["seeds"], eval_sets(cfg)[0]["name"]
    (128, [42], 'cranfield test')
    >>> [(spec.id, spec.label) for spec in expand_runs(cfg)]
    [('peer-dim=32-method=pca', 'pca d=32'), ('peer-dim=32-method=truncate', 'truncate d=32')]
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

from qcompress._version import __version__
from qcompress.errors import InputError, require
from qcompress.training import resolve_variant

__all__ = ["RunSpec", "load_recipe", "profile_config", "expand_runs", "eval_sets", "trec_dir", "config_key",
           "format_template", "variant_layers", "plain_name", "toml_module", "load_toml", "METRIC", "RUN_KINDS"]

METRIC = "ndcg_cut_10"  # the metric of the tables, the plots and the paired tests
RUN_KINDS = ("train", "encoder", "peer", "first_stage")
_DEFAULT_LABELS = {"train": "{variant}", "encoder": "encoder {similarity}", "peer": "{method} d={dim}",
                   "first_stage": "first stage (BM25)"}


def toml_module():
    """tomllib (Python 3.11+), else tomli."""
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10
        tomllib = require("tomli", "reading recipes on Python 3.10")
    return tomllib


def plain_name(value: Any, field: str, file: str | os.PathLike | None = None) -> str:
    """`value`, which becomes one component of an output path (a recipe's `name`, a profile, a plot's `file`),
    if it is a plain file name: a non-empty string without a path separator, not "." or "..". Anything else could
    write outside the output folder, and is refused (InputError naming the file and field).

    Example:
        >>> plain_name("variants", "name")
        'variants'
        >>> plain_name("../../escaped", "name", "x.toml")
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: x.toml: field "name": '../../escaped' is not a plain file name (no folders)
    """
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise InputError(f"{value!r} is not a plain file name (no folders)", file=file, field=field)
    return value


def load_toml(path: str | os.PathLike) -> dict:
    """A TOML file's contents; `InputError` naming the file (and the parser's line and column) when it is not TOML.

    Example:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.toml"
        >>> _ = bad.write_text("[profiles")
        >>> load_toml(bad)
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: .../bad.toml: not valid TOML (Expected ']' at the end of a table declaration (at end of document))
    """
    tomllib = toml_module()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not valid TOML ({err})", file=path) from None


def load_recipe(path: str | os.PathLike) -> dict:
    """Read a recipe file (TOML) and check its top-level layout; the recipe remembers its `path`."""
    path = Path(path)
    recipe = load_toml(path)
    for key in ("name", "profiles"):
        if key not in recipe:
            raise InputError(f"a recipe needs `{key}`", file=path, field=key)
    plain_name(recipe["name"], "name", path)
    recipe["path"] = str(path)
    return recipe


def _parse_value(text: str) -> Any:
    tomllib = toml_module()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(cfg: dict, item: str, recipe_path: str | None) -> None:
    if "=" not in item:
        raise InputError(f"an override takes KEY=VALUE, got {item!r}", file=recipe_path, field="overrides")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    target = cfg
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise InputError(f"override {key}: {part} is not a table", file=recipe_path, field="overrides")
    target[parts[-1]] = _parse_value(value.strip())


def profile_config(recipe: dict, profile: str, overrides: Sequence[str] = ()) -> dict:
    """The profile's settings with `overrides` ("KEY=VALUE", VALUE in TOML syntax, else a string; dotted keys
    reach into tables: "train.max_steps=2") applied, and defaults filled in."""
    profiles = recipe["profiles"]
    path = recipe.get("path")
    plain_name(profile, "profile", path)
    if profile not in profiles:
        raise InputError(f"recipe {recipe['name']!r} has no profile {profile!r}; it has {', '.join(profiles)}",
                         file=path, field="profiles")
    cfg = json.loads(json.dumps(profiles[profile]))  # a deep copy
    for item in overrides:
        _apply_override(cfg, item, path)
    cfg.setdefault("seeds", [42])
    cfg.setdefault("max_length", 256)
    cfg.setdefault("train", {})
    cfg.setdefault("runs", [])
    for i, plot in enumerate(cfg.get("plots", [])):
        plain_name(plot.get("file") if isinstance(plot, dict) else plot, f"plots[{i}].file", path)
    if isinstance(cfg.get("bench"), dict):  # a `qcompress bench` profile (qcompress.recipes.bench_profile)
        plain_name(cfg["bench"].get("plot", "x.png"), "bench.plot", path)
        return cfg
    if not cfg.get("evaluate"):
        raise InputError(f"profile {profile!r} of {recipe['name']!r} has no `evaluate` sets", file=path,
                         field="evaluate")
    return cfg


@dataclasses.dataclass
class RunSpec:
    """One run: an expanded entry of `runs`, with its seed (None for deterministic runs)."""

    id: str
    kind: str
    params: dict
    seed: int | None
    label: str
    series: str | None  # a template, formatted per table row (with its storage)
    storages: list[str]
    order: tuple  # (cost, seed, entry position): the order runs are run in


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return ""


def format_template(template: str, params: Mapping[str, Any]) -> str:
    """A row label or plot series from its template: `{key}` is the row's parameter (empty when it has none),
    `{fraction}` its train_fraction as a percentage; runs of spaces collapse.

    Example:
        >>> format_template("{variant} d={dim} {fraction} {storage}", {"variant": "BFEC", "train_fraction": 0.2})
        'BFEC d= 20%'
    """
    values = _Default(params)
    if isinstance(values.get("train_fraction"), (int, float)):
        values["fraction"] = f"{100 * values['train_fraction']:g}%"
    return " ".join(string.Formatter().vformat(template, (), values).split())


def variant_layers(variant: str | None) -> int:
    """How many encoder layers a named variant trains (0 for none, and for no variant)."""
    return resolve_variant(variant)["train_layers"] if variant else 0


def _run_id(kind: str, params: dict, seed: int | None) -> str:
    name = "-".join([kind] + [f"{k}={params[k]}" for k in sorted(params)] +
                    ([f"seed={seed}"] if seed is not None else []))
    return "".join(c if c.isalnum() or c in "-=._+" else "_" for c in name)


def expand_runs(cfg: dict) -> list[RunSpec]:
    """Every run of a profile, cheapest first: deterministic runs, frozen-encoder training, encoder training
    (by seed, so that a partial job has every variant of the first seeds)."""
    specs: list[RunSpec] = []
    for position, entry in enumerate(cfg["runs"]):
        kind = entry.get("kind", "train")
        if kind not in RUN_KINDS:
            raise InputError(f"unknown run kind {kind!r}; choose train, encoder, peer or first_stage", field="kind")
        fixed = {k: v for k, v in entry.items() if k not in ("kind", "label", "series", "storage", "seeds")}
        seeds = entry.get("seeds", cfg["seeds"])  # an entry may train more seeds than the profile (cheap runs)
        if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds):
            raise InputError(f"seeds must be a non-empty list of integers, got {seeds!r}", field="seeds")
        grid_keys = [k for k, v in fixed.items() if isinstance(v, list)]
        storages = entry.get("storage", ["float32"])
        storages = storages if isinstance(storages, list) else [storages]
        for combo in itertools.product(*(fixed[k] for k in grid_keys)):
            params = dict(fixed, **dict(zip(grid_keys, combo)))
            label = format_template(entry.get("label", _DEFAULT_LABELS[kind]), params)
            frozen = kind != "train" or params.get("train_layers", variant_layers(params.get("variant"))) == 0
            cost = 0 if kind != "train" else (1 if frozen else 2)
            for seed in seeds if kind == "train" else [None]:
                specs.append(RunSpec(_run_id(kind, params, seed), kind, params, seed, label, entry.get("series"),
                                     storages, (cost, seed if seed is not None else -1, position)))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise InputError("two runs of the recipe have the same parameters; make each `runs` entry distinct",
                         field="runs")
    return sorted(specs, key=lambda s: s.order)


def eval_sets(cfg: dict) -> list[dict]:
    """The profile's evaluation sets with their defaults (name, split test, protocol full, top_k 1000)."""
    sets = []
    for item in cfg["evaluate"]:
        item = dict(item)
        item.setdefault("name", f"{item.get('dataset') or 'cranfield'} {item.get('split', 'test')}")
        item.setdefault("split", "test")
        item.setdefault("protocol", "full")
        item.setdefault("top_k", 1000)
        sets.append(item)
    return sets


def trec_dir(cfg: dict) -> str | None:
    """The local TREC DL folder: the profile's `trec_dir`, else $QCOMPRESS_TREC_DIR, else None."""
    value = cfg.get("trec_dir") or os.environ.get("QCOMPRESS_TREC_DIR")
    return str(Path(value).expanduser()) if value else None


def config_key(spec: RunSpec, cfg: dict) -> str:
    """A digest of everything that decides a run's numbers: two recipes' runs with the same key are the same
    computation, so one's result JSON serves the other (see `qcompress.recipes.runner.run_recipe`)."""
    keys = ["encoder", "max_length", "encoder_layers", "train", "evaluate", "trec_dir"]
    if spec.kind != "train" or any("rescore" in s for s in spec.storages):
        keys.append("rescore_k")
    decisive = {k: cfg.get(k) for k in keys}  # which rows (storages) a run evaluates: see runner._relabel
    # The code version is part of it: results of another qcompress version are computed again, never mixed in.
    decisive.update(kind=spec.kind, params=spec.params, seed=spec.seed, qcompress_version=__version__)
    return hashlib.blake2b(json.dumps(decisive, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()
