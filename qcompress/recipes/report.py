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
    | method | bytes/vector | head params | seeds | test NDCG@10 | Δ vs ref [95% CI] | p per seed | p (seeds) | p Holm |
    |---|--:|--:|--:|--:|--:|--:|--:|--:|
    | pca d=32 (ref) | 128 | 12,320 (fit) | deterministic | 0.5000 |  |  |  |  |
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.evaluation import paired_t_test
from qcompress.evaluation.seed_stats import holm, seed_aware_test
from qcompress.recipes.config import METRIC, eval_sets, expand_runs, format_template, variant_layers
from qcompress.recipes.runner import current_result

__all__ = ["collect_rows", "significance", "table", "pairs_table", "plot", "aggregate", "update_doc", "update_doc_body",
           "export", "per_query_matrix"]

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


def per_query_matrix(e: dict, qids: list[str]) -> np.ndarray:
    """An evaluation entry's per-query NDCG@10 as a (seeds x queries) matrix over `qids`."""
    return np.array([[e["per_query"][q][i] for q in qids] for i in range(len(e["values"]))])


def _compare(first: dict, second: dict, first_seeds: list, second_seeds: list) -> dict:
    """Δ of mean NDCG@10, the per-seed paired t-tests over queries, and the seed-aware test of two rows' entries.

    Per seed: each run of `first` against the run of `second` with the same seed, or against `second`'s only run
    when that one is deterministic (otherwise no per-seed test)."""
    qids = sorted(set(first["per_query"]) & set(second["per_query"]))
    a, b = per_query_matrix(first, qids), per_query_matrix(second, qids)
    per_seed = []
    for i, seed in enumerate(first_seeds):
        j = 0 if second_seeds == [None] else (second_seeds.index(seed) if seed in second_seeds else None)
        per_seed.append(None if j is None else paired_t_test(a[i], b[j])[1])
    test = seed_aware_test(a, b)
    return {"delta": first["mean"] - second["mean"], "p_per_seed": per_seed, "p_seeds": test.p,
            "interval": list(test.interval(0.95)),
            "seed_test": {"t": test.t, "df": test.df, "seeds": list(test.seeds), "queries": test.queries,
                          "seed_variance": list(test.seed_variance), "query_variance": test.query_variance}}


def significance(rows: list[dict], cfg: dict) -> None:
    """Add, per row and evaluation set, the comparison with the profile's reference row (`_compare`), and the
    Holm adjustment of the seed-aware p-values over the whole table."""
    by_label = {r["label"]: r for r in rows}
    tested = []
    for row in rows:
        ref = by_label.get(_reference_label(cfg, row) or "")
        row["reference"] = ref["label"] if ref is not None else None
        for name, e in row["evals"].items():
            e.update(delta=None, p_per_seed=None, p_seeds=None, p_holm=None)
            if ref is None or ref is row or name not in ref["evals"]:
                continue
            e.update(_compare(e, ref["evals"][name], row["seeds"], ref["seeds"]))
            tested.append(e)
    for e, adjusted in zip(tested, holm([e["p_seeds"] for e in tested])):
        e["p_holm"] = adjusted


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,}" if float(n).is_integer() else f"{n:g}"


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _markdown_head(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]


def _table_cells(row: dict, evals: list[str]) -> list[str]:
    head, fitted = row["head_parameters"], row["fitted_parameters"]
    # trained parameters, and numbers fit on data (PCA, calibration ranges, an input mixing) marked "fit"
    params = f"{head:,} + {fitted:,} fit" if head and fitted else (f"{head:,}" if head or not fitted else
                                                                  f"{fitted:,} (fit)")
    n = len(row["seeds"])
    cells = [row["label"] + (" (ref)" if row.get("reference") == row["label"] else ""),
             _fmt_bytes(row["bytes_per_vector"]), params,
             "deterministic" if row["seeds"] == [None] else str(n)]
    for name in evals:
        e = row["evals"].get(name)
        if e is None:
            cells += [""] * len(_COLUMNS)
            continue
        value = f"{e['mean']:.4f}" + (f" ± {e['std']:.4f}" if n > 1 else "")
        cells += [value, *_test_cells(e)]
    return cells


_COLUMNS = ("NDCG@10", "Δ", "p per seed", "p (seeds)", "p Holm")


def _test_cells(e: dict) -> list[str]:
    """Δ with the seed-aware test's 95% confidence interval, the per-seed p-values (their range when there are
    several), the seed-aware and the Holm p."""
    if e.get("delta") is None:
        return ["", "", "", ""]
    per_seed = [p for p in e["p_per_seed"] if p is not None]
    if len(per_seed) > 1:
        low, high = min(per_seed), max(per_seed)
        seeds = f"{_fmt_p(low)}–{_fmt_p(high)}" if _fmt_p(low) != _fmt_p(high) else _fmt_p(low)
    else:
        seeds = _fmt_p(per_seed[0]) if per_seed else ""
    delta = f"{e['delta']:+.4f}"
    if e.get("interval"):
        delta += " [{:+.3f}, {:+.3f}]".format(*e["interval"])
    return [delta, seeds, _fmt_p(e["p_seeds"]), _fmt_p(e.get("p_holm"))]


def table(rows: list[dict], cfg: dict) -> str:
    """A markdown table: one row per label, NDCG@10 mean +- std over seeds per evaluation set, the difference
    to the reference row and its paired p-values (see `significance`)."""
    evals = [item["name"] for item in eval_sets(cfg)]
    head = ["method", "bytes/vector", "head params", "seeds"]
    for name in evals:
        head += [f"{name} {_COLUMNS[0]}", *("Δ vs ref [95% CI]" if c == "Δ" else c for c in _COLUMNS[1:])]
    lines = _markdown_head(head)
    lines += ["| " + " | ".join(_table_cells(row, evals)) + " |" for row in rows]
    return "\n".join(lines)


def pairs_table(rows: list[dict], cfg: dict) -> str:
    """The profile's `pairs` ([first label, second label]) as a markdown table of comparisons (`_compare`, Holm over
    the table); pairs naming a row the results lack are left out."""
    evals = [item["name"] for item in eval_sets(cfg)]
    by_label = {r["label"]: r for r in rows}
    columns = ["Δ [95% CI]" if col == "Δ" else col for col in _COLUMNS[1:]]
    head = ["comparison"] + [f"{name} {col}" for name in evals for col in columns]
    cells_of, tested = [], []
    for first, second in cfg["pairs"]:
        a, b = by_label.get(first), by_label.get(second)
        if a is None or b is None:
            continue
        entries = []
        for name in evals:
            if name in a["evals"] and name in b["evals"]:
                entry = _compare(a["evals"][name], b["evals"][name], a["seeds"], b["seeds"])
                tested.append(entry)
            else:
                entry = None
            entries.append(entry)
        cells_of.append((f"{first} vs {second}", entries))
    for entry, adjusted in zip(tested, holm([t["p_seeds"] for t in tested])):
        entry["p_holm"] = adjusted
    lines = _markdown_head(head)
    for label, entries in cells_of:
        cells = [label] + [c for entry in entries for c in (_test_cells(entry) if entry else ["", "", "", ""])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _training_budget(row: dict, cfg: dict) -> str | None:
    """How a trained row was trained, for its legend entry ("QBEC: 1 layer + head, 5 epochs (<= 8 steps) of 16");
    None for untrained rows (encoders, fitted peers)."""
    if row.get("kind") != "train":
        return None
    params, train = row["params"], cfg.get("train", {})
    layers = variant_layers(params.get("variant"))  # as the runner resolves it: the profile's encoder_layers
    layers = params.get("train_layers", cfg.get("encoder_layers", layers) if layers else 0)
    epochs, steps = params.get("epochs", train.get("epochs")), params.get("max_steps", train.get("max_steps"))
    batch = params.get("batch_size", train.get("batch_size"))
    trained = f"{layers} layer{'s' if layers != 1 else ''} + head" if layers else "head only"
    if steps and (not epochs or epochs >= 100):  # the epochs only lift the cap: the steps are the budget
        budget = f"{steps} steps"
    else:
        budget = f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs else ""
        budget += f" (<= {steps} steps)" if steps else ""
    return f"{trained}, {budget} of {batch}" if batch else f"{trained}, {budget}"


def _seed_caption(rows: list[dict]) -> str:
    """What the error bars are, from the rows themselves (never a fixed seed count)."""
    counts = sorted({len(r["seeds"]) for r in rows if r["seeds"] != [None]})
    if not counts:
        return "every point is one deterministic run"
    seeds = " or ".join(str(c) for c in counts)
    deterministic = any(r["seeds"] == [None] for r in rows)
    return (f"trained rows: mean ± std over {seeds} seeds" +
            ("; points without error bars are deterministic (one run)" if deterministic else ""))


def _set_log_ticks(axis, values: list[float]) -> None:
    """Plain tick labels on a log axis: at the values plotted when they are few (32, 64, 128, 192), else at
    powers of 2 (never "3x10^1")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    distinct = sorted(set(values))
    if len(distinct) <= 12:
        axis.set_ticks(distinct)
    else:
        axis.set_major_locator(LogLocator(base=2))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))


def _plot_panel(ax, rows: list[dict], cfg: dict, spec: dict, name: str) -> None:
    """One evaluation set's panel: NDCG@10 against spec["x"], one line per series (its training budget in the
    legend), reference rows as horizontal lines, the y axis from spec["ymin"] (default 0: gaps drawn to scale)."""
    import matplotlib

    x_key = spec.get("x", "bytes_per_vector")
    series: dict[str, list] = {}
    budgets: dict[str, set] = {}
    for row in rows:
        if name not in row["evals"]:
            continue
        x = row.get(x_key, row["params"].get(x_key))
        if x is None:
            continue
        key = format_template(spec["series"], dict(row["params"], label=row["label"])) if spec.get("series") \
            else row["series"]
        key = key or row["label"]  # a row the series template says nothing about (an untrained encoder, say)
        e = row["evals"][name]
        series.setdefault(key, []).append((float(x), e["mean"], e["std"]))
        budgets.setdefault(key, set()).add(_training_budget(row, cfg))
    markers = "osD^v<>pP*hX"
    xs_all: list[float] = []
    for j, (key, points) in enumerate(series.items()):
        points.sort()
        xs, ys, es = zip(*points)
        xs_all += xs
        style = "-" if len(points) > 1 else ""
        color = matplotlib.colormaps["tab20" if len(series) > 10 else "tab10"](j % 20 if len(series) > 10 else j)
        budget = budgets[key].pop() if len(budgets[key]) == 1 else "budgets differ"
        label = f"{key} ({budget})" if budget else key
        ax.errorbar(xs, ys, yerr=es, marker=markers[j % len(markers)], linestyle=style or "none", capsize=3,
                    label=label, alpha=0.9, color=color)
    if spec.get("xlog", False):
        ax.set_xscale("log")
        if xs_all:
            _set_log_ticks(ax.xaxis, xs_all)
    for j, ref in enumerate(spec.get("hlines", [])):  # reference rows drawn across (an untrained encoder, say)
        for row in rows:
            if row["label"] == ref and name in row["evals"]:
                y = row["evals"][name]["mean"]
                ax.axhline(y, color="grey", ls=":", lw=1)
                # Labels above and below their lines in turn: two close references stay readable.
                ax.text(0.01, y, f" {ref}", fontsize=7, va="bottom" if j % 2 == 0 else "top", color="grey",
                        transform=ax.get_yaxis_transform())
    if spec.get("ymin", 0.0) is not None:  # the top with some room: markers at the frame are half hidden
        ax.set_ylim(bottom=spec.get("ymin", 0.0), top=ax.get_ylim()[1] + 0.03)
    ax.set_xlabel(spec.get("xlabel", x_key))
    protocol = next((it["protocol"] for it in eval_sets(cfg) if it["name"] == name), "")
    ax.set_ylabel(f"NDCG@10 ({name}, {protocol})")
    ax.grid(alpha=0.3)


def plot(rows: list[dict], cfg: dict, spec: dict, path: Path) -> Path:
    """NDCG@10 (mean, error bar: std over seeds) against a row field, one line per series, one panel per
    evaluation set; written atomically to `path` (PNG). The title gets a second line saying what the error bars
    are, read from the rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evals = [item["name"] for item in eval_sets(cfg)]
    fig = Figure(dpi=110)
    FigureCanvasAgg(fig)
    entries: dict[str, object] = {}  # one legend for all panels, below them: inside, it hid points
    for i, name in enumerate(evals):
        ax = fig.add_subplot(1, len(evals), i + 1)
        _plot_panel(ax, rows, cfg, spec, name)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    width = max(9.5, 6.5 * len(evals))  # one panel alone is widened: its legend and caption need the room
    columns = max(1, min(len(entries), 2 * len(evals)))
    legend_inches = 0.45 + 0.17 * math.ceil(len(entries) / columns)
    fig.set_size_inches(width, 4.6 + legend_inches)
    encoder = cfg.get("encoder") or "minilm"
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=columns, fontsize=7,
               title=f"encoder {encoder}, max length {cfg['max_length']}", title_fontsize=7, frameon=False)
    title = spec.get("title", "")
    fig.suptitle(f"{title}\n{_seed_caption(rows)}" if title else _seed_caption(rows), fontsize=10)
    fig.tight_layout(rect=(0, legend_inches / (4.6 + legend_inches), 1, 1))
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
              f"{cfg['max_length']}. Evaluation ({protocols}); NDCG@10 mean ± standard deviation over seeds. "
              f"Against the reference row: Δ of the means [the seed-aware test's 95% confidence interval]; p per "
              f"seed: paired t-tests over queries, each seed's run against the reference's run of the same seed (or "
              f"its only run), the range over seeds; p (seeds): "
              f"a t-test whose unit includes the seeds (query and seed effects, qcompress.evaluation.seed_stats); "
              f"p Holm: that p adjusted over every test of the table.", "",
              table(rows, cfg), ""]
    if cfg.get("pairs"):
        lines += ["Paired comparisons (Δ = first − second [95% confidence interval]; the same tests, Holm over this "
                  "table):", "",
                  pairs_table(rows, cfg), ""]
    return "\n".join(lines)


def aggregate(recipe: dict, profile: str, cfg: dict, out_root: Path, *, command: str | None = None,
              allow_dirty: bool = False) -> Path | None:
    """Aggregate the profile's result JSONs (those of its current runs) into results.md, summary.json and its
    plots; returns the path of results.md, or None when no run has finished.

    Runs computed from a working tree with uncommitted changes (`git_dirty`) are refused unless `allow_dirty`:
    their numbers could come from code that no commit holds."""
    out = out_root / recipe["name"] / profile
    specs = expand_runs(cfg)
    results = []
    for spec in specs:
        result = current_result(out / "results" / f"{spec.id}.json", spec, cfg)  # stale results are left out
        if result is not None:
            if result.get("git_dirty") and not allow_dirty:
                raise InputError(f"run {spec.id} was computed from uncommitted changes (on commit "
                                 f"{result.get('git_commit')}); commit and run it again, or allow dirty runs "
                                 "(allow_dirty) to aggregate it anyway", file=out / "results" / f"{spec.id}.json")
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
    return update_doc_body(doc, key, "\n".join(lines[start:]))


def update_doc_body(doc: Path, key: str, body: str) -> bool:
    """Put `body` between `<!-- table: KEY -->` and `<!-- /table -->` in `doc`; False when it has no such markers."""
    body = body.strip()
    text = doc.read_text()
    # Markers with nothing between them yet are a pair too (a lazy ".*?\n" would run on to the next table's end).
    pattern = re.compile(rf"(<!-- table: {re.escape(key)} -->\n)(?:.*?\n)??(<!-- /table -->)", re.S)
    if not pattern.search(text):
        return False
    doc.write_text(pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text))
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
