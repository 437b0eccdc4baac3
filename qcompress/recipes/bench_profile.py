"""Recipe profiles that run `qcompress bench` (issue 24): a `bench` table instead of `runs`.

    [profiles.bench-cranfield]
    encoder = "minilm"
    max_length = 256
    bench = { corpus = "cranfield", fit_fraction = 0.5, bytes = [16, 32, 64], seeds = [42, 43, 44],
              compare = "head", plot = "bench_cranfield.png" }

The `bench` keys are the command's options: corpus, split, queries, qrels, fit_corpus, fit_fraction, transductive,
split_seed, bytes, methods, seeds, pseudo_queries, pseudo_query_kind, head_steps; `{trec_dir}` in a path is the
profile's TREC DL folder (`trec_dir`, else $QCOMPRESS_TREC_DIR). `compare` names the method family (or families)
tested against the best other method at each budget (`qcompress.bench.compare`); `plot` the PNG written beside
results.md. Runs are the bench's own (OUT/<recipe>/<profile>/results/*.json, resumable, each with its provenance);
results.md holds the bench's markdown table and the comparisons, which `--update-doc` puts into a document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from qcompress.errors import InputError
from qcompress.recipes.config import trec_dir

__all__ = ["is_bench", "run_bench_profile", "export_bench", "BENCH_KEYS"]

BENCH_KEYS = ("corpus", "split", "queries", "qrels", "fit_corpus", "fit_fraction", "transductive", "split_seed",
              "bytes", "methods", "seeds", "pseudo_queries", "pseudo_query_kind", "head_steps", "compare", "plot")


def is_bench(cfg: dict) -> bool:
    """Whether a profile runs the bench."""
    return "bench" in cfg


def _path(value: str, cfg: dict) -> str:
    if "{trec_dir}" not in value:
        return value
    folder = trec_dir(cfg)
    if folder is None:
        raise InputError(f"{value!r} needs the TREC DL folder: set trec_dir in the profile or $QCOMPRESS_TREC_DIR",
                         field="bench")
    return value.replace("{trec_dir}", folder)


def _settings(cfg: dict) -> dict:
    bench = dict(cfg["bench"])
    unknown = sorted(set(bench) - set(BENCH_KEYS))
    if unknown:
        raise InputError(f"unknown bench setting(s) {', '.join(unknown)}; known: {', '.join(BENCH_KEYS)}",
                         field="bench")
    if "corpus" not in bench:
        raise InputError("a bench profile needs `corpus`", field="bench")
    for key in ("corpus", "fit_corpus"):
        if bench.get(key) is not None:
            bench[key] = _path(bench[key], cfg)
    for key in ("queries", "qrels"):
        bench[key] = [_path(v, cfg) for v in bench.get(key, [])]
    return bench


def _check_clean(runs: list[dict], allow_dirty: bool, folder: Path) -> None:
    dirty = [r for r in runs if r.get("git_dirty")]
    if dirty and not allow_dirty:
        raise InputError(f"{len(dirty)} run(s) were computed from uncommitted changes (e.g. {dirty[0]['label']} on "
                         f"commit {dirty[0].get('git_commit')}); commit and run them again, or allow dirty runs",
                         file=folder)


def run_bench_profile(recipe: dict, profile: str, cfg: dict, out_root: Path, *, run: bool = True,
                      allow_dirty: bool = False, command: str | None = None,
                      log: Callable[[str], Any] = print) -> Path:
    """Run (unless `run` is False: report what has finished) the profile's bench and write results.md, the plot
    and summary.json in OUT/<recipe>/<profile>/; returns results.md's path."""
    from qcompress.bench import BenchConfig, bench_json, load_bench_data, run_bench, summary_rows
    from qcompress.bench.compare import compare, leader_pairs
    from qcompress.bench.report import markdown_comparisons, markdown_table, plot_frontier

    settings = _settings(cfg)
    out = out_root / recipe["name"] / profile
    data = load_bench_data(settings["corpus"], split=settings.get("split", "test"), queries=settings["queries"],
                           qrels=settings["qrels"], fit_corpus=settings.get("fit_corpus"),
                           fit_fraction=settings.get("fit_fraction"),
                           transductive=bool(settings.get("transductive", False)),
                           seed=int(settings.get("split_seed", 0)))
    log(f"[{recipe['name']}/{profile}] bench: {data.collection}: {data.describe()}")
    defaults = BenchConfig()
    config = BenchConfig(
        budgets=tuple(settings.get("bytes", defaults.budgets)), methods=tuple(settings.get("methods",
                                                                                           defaults.methods)),
        seeds=tuple(settings.get("seeds", defaults.seeds)),
        pseudo_queries=int(settings.get("pseudo_queries", defaults.pseudo_queries)),
        pseudo_query_kind=settings.get("pseudo_query_kind", defaults.pseudo_query_kind),
        sample_seed=int(settings.get("split_seed", 0)), head_steps=int(settings.get("head_steps",
                                                                                     defaults.head_steps)))

    def on_run(what: str, done: int, total: int) -> None:
        log(f"[{recipe['name']}/{profile}] {min(done + 1, total)}/{total} {what}")

    result = run_bench(data, config, encoder=cfg.get("encoder"), max_length=cfg.get("max_length"),
                       device=cfg.get("device"), cache_dir=cfg.get("cache_dir") or out_root / "cache", out=out,
                       on_run=on_run if run else None, stored_only=not run)
    _check_clean(result.runs, allow_dirty, out / "results")
    families = settings.get("compare", [])
    families = [families] if isinstance(families, str) else list(families)
    rows = summary_rows(result)
    entries = compare(result.runs, [p for family in families for p in leader_pairs(rows, family)])
    parts = [f"Runs finished: {len(result.runs)}." + (f" Command: `{command}`." if command else ""), "",
             markdown_table(result)]
    if entries:
        parts += ["", "Paired comparisons at equal bytes (Δ = first − second; the seed-aware test, Holm over this "
                  "table; 'no significant difference': none this many queries and seeds resolve, not a tie):", "",
                  markdown_comparisons(entries)]
    if result.notes:
        parts += ["", *(f"Note: {note}" for note in result.notes)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"# {recipe.get('title', recipe['name'])}: {profile}\n\n" + "\n".join(parts)
                                    + "\n")
    (out / "summary.json").write_text(json.dumps(dict(bench_json(result), comparisons=entries), indent=1,
                                                 default=str) + "\n")
    if settings.get("plot"):
        plot_frontier(result, out / settings["plot"])
    return out / "results.md"


def export_bench(recipe: dict, profile: str, out_root: Path, folder: Path) -> Path:
    """Every finished run of a bench profile as one compact JSON line each (sorted by file name)."""
    results = out_root / recipe["name"] / profile / "results"
    lines = [json.dumps(json.loads(p.read_text()), separators=(",", ":")) for p in sorted(results.glob("*.json"))]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recipe['name']}-{profile}.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path
