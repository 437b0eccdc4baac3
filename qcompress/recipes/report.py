"""The aggregate of a profile's result JSONs: rows grouped by label (mean +- std over seeds), paired tests against
the reference row and between named pairs, a markdown table, PNG plots, and the copies made for docs/.

Example:
    >>> result = {"kind": "peer", "seed": None, "series": None, "rows": [{
    ...     "label": "pca d=32", "params": {"method": "pca", "dim": 32}, "bytes_per_vector": 128.0,
    ...     "head_parameters": 0, "fitted_parameters": 12320, "similarity": "cosine", "dim": 32,
    ...     "metrics": {"test": {"protocol": "full", "queries": 2, "documents": 9, "ndcg_cut_10": 0.5,
    ...                          "per_query_ndcg_cut_10": {"1": 0.25, "2": 0.75}}}}]}
    >>> rows = collect_rows([result])
    >>> significance(rows, {"reference": "pca d=32"})
    >>> print(table(rows, {"evaluate": [{"name": "test"}]}))
    | method | bytes/vector | head params | seeds | test NDCG@10 | Δ vs ref | p (rand.) | p (t) |
    |---|--:|--:|--:|--:|--:|--:|--:|
    | pca d=32 (ref) | 128 | 12,320 (fit) | deterministic | 0.5000 |  |  |  |
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from qcompress.atomic import atomic_file
from qcompress.evaluation import paired_test
from qcompress.recipes.config import METRIC, eval_sets, expand_runs, format_template
from qcompress.recipes.runner import current_result

__all__ = ["collect_rows", "significance", "table", "pairs_table", "plot", "aggregate", "update_doc", "export"]

_OTHER_METRICS = ("recip_rank_10", "recall_100", "map")  # kept per seed in summary.json


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _new_group(row: dict, result: dict) -> dict:
    return {
        "label": row["label"], "params": row["params"],
        "series": format_template(result["series"], row["params"]) if result.get("series") else row["label"],
        "bytes_per_vector": row["bytes_per_vector"], "head_parameters": row["head_parameters"],
        "fitted_parameters": row.get("fitted_parameters", 0),
        "encoder_parameters_trained": row.get("encoder_parameters_trained", 0),
        "similarity": row["similarity"], "dim": row["dim"], "seeds": [], "evals": {}, "kind": result["kind"],
    }


def _add_metrics(evals: dict, name: str, m: dict) -> None:
    e = evals.setdefault(name, {"values": [], "per_query": {}, "protocol": m["protocol"], "queries": m["queries"],
                                "documents": m["documents"], "other": {}})
    e["values"].append(m[METRIC])
    for key in _OTHER_METRICS:
        if key in m:
            e["other"].setdefault(key, []).append(m[key])
    for qid, v in m["per_query_ndcg_cut_10"].items():
        e["per_query"].setdefault(qid, []).append(v)


def collect_rows(results: list[dict]) -> list[dict]:
    """Group the rows of all runs by label: per evaluation set the per-seed NDCG@10 and the per-query NDCG@10
    averaged over seeds. Keeps the order in which labels first appear."""
    groups: dict[str, dict] = {}
    for result in results:
        for row in result["rows"]:
            g = groups.setdefault(row["label"], _new_group(row, result))
            g["seeds"].append(result["seed"])
            for name, m in row["metrics"].items():
                _add_metrics(g["evals"], name, m)
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
        return format_template(template, params)
    except (KeyError, ValueError, IndexError):
        return None


def _paired_p(first: dict, second: dict) -> tuple[float, float]:
    """Randomization and t-test p-values of two rows' evaluation entries, paired by their common queries
    (per-query NDCG@10 averaged over each row's seeds)."""
    qids = sorted(set(first["per_query_mean"]) & set(second["per_query_mean"]))
    test = paired_test([first["per_query_mean"][q] for q in qids], [second["per_query_mean"][q] for q in qids])
    return test.randomization_p, test.t_p


def significance(rows: list[dict], cfg: dict) -> None:
    """Add, per row and evaluation set, the difference of mean NDCG@10 to the profile's reference row and the
    paired randomization and t-test p-values against it (per-query NDCG@10 averaged over each row's seeds)."""
    by_label = {r["label"]: r for r in rows}
    for row in rows:
        ref = by_label.get(_reference_label(cfg, row) or "")
        row["reference"] = ref["label"] if ref is not None else None
        for name, e in row["evals"].items():
            e["p_randomization"] = e["p_t"] = e["delta"] = None
            if ref is None or ref is row or name not in ref["evals"]:
                continue
            r = ref["evals"][name]
            e["delta"] = e["mean"] - r["mean"]
            e["p_randomization"], e["p_t"] = _paired_p(e, r)


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,}" if float(n).is_integer() else f"{n:g}"


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _markdown_head(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]


def _table_cells(row: dict, evals: list[str]) -> list[str]:
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
    return cells


def table(rows: list[dict], cfg: dict) -> str:
    """A markdown table: one row per label, NDCG@10 mean +- std over seeds per evaluation set, the difference
    to the reference row and its paired p-values (see `significance`)."""
    evals = [item["name"] for item in eval_sets(cfg)]
    head = ["method", "bytes/vector", "head params", "seeds"]
    for name in evals:
        head += [f"{name} NDCG@10", "Δ vs ref", "p (rand.)", "p (t)"]
    lines = _markdown_head(head)
    lines += ["| " + " | ".join(_table_cells(row, evals)) + " |" for row in rows]
    return "\n".join(lines)


def pairs_table(rows: list[dict], cfg: dict) -> str:
    """The profile's `pairs` ([first label, second label]) as a markdown table of paired tests; pairs naming a
    row the results lack are left out."""
    evals = [item["name"] for item in eval_sets(cfg)]
    by_label = {r["label"]: r for r in rows}
    head = ["comparison"] + [f"{name} {col}" for name in evals for col in ("Δ NDCG@10", "p (rand.)", "p (t)")]
    lines = _markdown_head(head)
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
            p_randomization, p_t = _paired_p(ea, eb)
            cells += [f"{ea['mean'] - eb['mean']:+.4f}", _fmt_p(p_randomization), _fmt_p(p_t)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_panel(ax, rows: list[dict], cfg: dict, spec: dict, name: str) -> None:
    """One evaluation set's panel: NDCG@10 against spec["x"], one line per series, reference rows as lines."""
    import matplotlib

    x_key = spec.get("x", "bytes_per_vector")
    series: dict[str, list] = {}
    for row in rows:
        if name not in row["evals"]:
            continue
        x = row.get(x_key, row["params"].get(x_key))
        if x is None:
            continue
        key = format_template(spec["series"], dict(row["params"], label=row["label"])) if spec.get("series") \
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
                ax.text(0.01, y, f" {ref}", fontsize=7, va="bottom", color="grey", transform=ax.get_yaxis_transform())
    ax.set_xlabel(spec.get("xlabel", x_key))
    protocol = next((it["protocol"] for it in eval_sets(cfg) if it["name"] == name), "")
    ax.set_ylabel(f"NDCG@10 ({name}, {protocol})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=spec.get("legend", "best"))


def plot(rows: list[dict], cfg: dict, spec: dict, path: Path) -> Path:
    """NDCG@10 (mean, error bar: std over seeds) against a row field, one line per series, one panel per
    evaluation set; written atomically to `path` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evals = [item["name"] for item in eval_sets(cfg)]
    fig = Figure(figsize=(6.5 * len(evals), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, name in enumerate(evals):
        _plot_panel(fig.add_subplot(1, len(evals), i + 1), rows, cfg, spec, name)
    if spec.get("title"):
        fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _summary(rows: list[dict]) -> list[dict]:
    """The rows without their per-query values (summary.json)."""
    return [{k: v for k, v in r.items() if k != "evals"} | {"evals": {
        n: {k: v for k, v in e.items() if k not in ("per_query", "per_query_mean")} for n, e in r["evals"].items()}}
        for r in rows]


def _report(recipe: dict, profile: str, cfg: dict, rows: list[dict], done: int, runs: int,
            command: str | None) -> str:
    lines = [f"## {recipe.get('title', recipe['name'])} — profile `{profile}`", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if cfg.get("about"):
        lines += [" ".join(str(cfg["about"]).split()), ""]
    protocols = ", ".join(f"{it['name']}: {it['protocol']}" for it in eval_sets(cfg))
    lines += [f"Runs finished: {done} of {runs}. Encoder: {cfg.get('encoder') or 'minilm'}, max length "
              f"{cfg['max_length']}. Evaluation ({protocols}); NDCG@10 mean ± standard deviation over seeds; "
              f"Δ and paired p-values (randomization test, 10,000 sign flips; t-test) against the reference row, "
              f"per query, each query's NDCG@10 averaged over seeds.", "",
              table(rows, cfg), ""]
    if cfg.get("pairs"):
        lines += ["Paired comparisons (Δ = first − second; per-query NDCG@10 averaged over seeds; randomization "
                  "test and t-test):", "", pairs_table(rows, cfg), ""]
    return "\n".join(lines)


def aggregate(recipe: dict, profile: str, cfg: dict, out_root: Path, *, command: str | None = None) -> Path | None:
    """Aggregate the profile's result JSONs (those of its current runs) into results.md, summary.json and its
    plots; returns the path of results.md, or None when no run has finished."""
    out = out_root / recipe["name"] / profile
    specs = expand_runs(cfg)
    results = []
    for spec in specs:
        result = current_result(out / "results" / f"{spec.id}.json", spec, cfg)  # stale results are left out
        if result is not None:
            results.append(result)
    if not results:
        return None
    rows = collect_rows(results)
    for row in rows:  # plot fields by name
        row.setdefault("train_fraction", row["params"].get("train_fraction"))
    significance(rows, cfg)
    (out / "results.md").write_text(_report(recipe, profile, cfg, rows, len(results), len(specs), command) + "\n")
    (out / "summary.json").write_text(json.dumps(_summary(rows), indent=1, default=str) + "\n")
    for spec in cfg.get("plots", []):
        plot(rows, cfg, spec, out / spec["file"])
    return out / "results.md"


def update_doc(doc: Path, key: str, results_md: Path) -> bool:
    """Put the tables of `results_md` (from its "Runs finished" line on) between `<!-- table: KEY -->` and
    `<!-- /table -->` in `doc`; returns False when the doc has no such markers."""
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
