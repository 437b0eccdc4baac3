"""The bench's outputs: one summary row per (method, setting), ranked within each byte budget; the rich table, the
JSON object and the frontier plot built from them.

A row's budget is the smallest budget asked for that its stored bytes fit in (a RaBitQ code of 56 B is a 64 B
entry); a method with a size of its own above every budget (float32, float16, int8) is its own group. Within a
budget, rows are ranked by recall@10 on the pseudo-queries (the measure with thousands of queries: the one that
separates methods), and the best split of each method is marked: that is the point the plot draws.

Every value is a mean with its 95% confidence interval (`qcompress.bench.measures.interval`): over queries for
deterministic methods, over seeds and queries for randomised ones.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from qcompress.atomic import atomic_file
from qcompress.bench.measures import interval

if TYPE_CHECKING:
    from rich.table import Table

    from qcompress.bench.run import BenchResult

__all__ = ["PRIMARY", "summary_rows", "bench_json", "results_table", "plot_frontier", "markdown_table",
           "markdown_comparisons"]

PRIMARY = ("pseudo-queries", "recall@10")  # what rows are ranked by
_MEASURES = ("recall@10", "recall@100", "ndcg@10")


def _group(bytes_stored: float, budgets: tuple[int, ...]) -> float:
    fitting = [b for b in budgets if bytes_stored <= b]
    return float(min(fitting)) if fitting else float(bytes_stored)


def _measures(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{query set: {measure: {mean, low, high, queries}}} over the runs (one per seed) of a setting."""
    out: dict = {}
    for name, values in runs[0]["per_query"].items():
        out[name] = {}
        for measure in _MEASURES:
            if measure in values:
                matrix = [run["per_query"][name][measure] for run in runs]
                mean, low, high = interval(matrix)
                out[name][measure] = {"mean": mean, "low": low, "high": high, "queries": len(matrix[0])}
    return out


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def _primary(row: dict) -> float:
    return row["measures"][PRIMARY[0]][PRIMARY[1]]["mean"]


def summary_rows(result: "BenchResult") -> list[dict]:
    """One row per (method, setting): sizes, times (means over seeds), measures with intervals; sorted by budget,
    then by rank within it (`rank` 1 is the best; `best_split`: the best setting of its method in the budget, out
    of `splits_in_budget`)."""
    by_label: dict[str, list[dict]] = {}
    for run in result.runs:
        by_label.setdefault(run["label"], []).append(run)
    rows = []
    for label, runs in by_label.items():
        first = runs[0]
        rows.append({
            "method": first["family"], "setting": first["setting"], "label": label,
            "budget": _group(first["bytes_stored"], result.config.budgets),
            "seeds": [r["seed"] for r in runs] if first["randomised"] else None,
            "bytes_stored": first["bytes_stored"], "bytes_resident": _mean(runs, "bytes_resident"),
            "fitted_numbers": first["fitted_numbers"], "trained_parameters": first["trained_parameters"],
            "fit_seconds": _mean(runs, "fit_seconds"), "encode_seconds": _mean(runs, "encode_seconds"),
            "search_seconds": _mean(runs, "search_seconds"), "measures": _measures(runs),
        })
    rows.sort(key=lambda row: (row["budget"], -_primary(row), row["label"]))
    rank, seen = 0, set()
    for i, row in enumerate(rows):
        rank = 1 if i == 0 or row["budget"] != rows[i - 1]["budget"] else rank + 1
        row["rank"] = rank
        row["best_split"] = (row["budget"], row["method"]) not in seen
        seen.add((row["budget"], row["method"]))
    splits = Counter((row["budget"], row["method"]) for row in rows)
    for row in rows:
        row["splits_in_budget"] = splits[row["budget"], row["method"]]
    return rows


def _query_sets(result: "BenchResult") -> list[dict]:
    return [{"name": qs.name, "queries": len(qs.queries), "judged": len(qs.queries.judged()),
             "own_document_left_out": qs.exclude is not None} for qs in result.query_sets]


def bench_json(result: "BenchResult") -> dict:
    """Everything the table says, as one JSON-serialisable object."""
    data = result.data
    return {
        "collection": data.collection, "protocol": "transductive" if data.transductive else "inductive",
        "description": data.describe(), "fit_documents": len(data.fit), "evaluated_documents": len(data.evaluated),
        "encoder": result.encoder, "max_length": result.max_length, "budgets": list(result.config.budgets),
        "seeds": list(result.config.seeds), "head_steps": result.config.head_steps,
        "rescore_k": result.config.rescore_k, "pseudo_query_kind": result.config.pseudo_query_kind,
        "query_sets": _query_sets(result), "ranked_by": " ".join(PRIMARY),
        "rows": summary_rows(result),
        "refused": [{"method": r.family, "budget": r.budget, "reason": r.reason} for r in result.refusals],
        "notes": result.notes,
    }


def _cell(measure: dict | None) -> str:
    if measure is None or math.isnan(measure["mean"]):
        return "-"
    half = (measure["high"] - measure["low"]) / 2
    return f"{measure['mean']:.4f} ± {half:.4f}" if math.isfinite(half) else f"{measure['mean']:.4f}"


def _count(n: int) -> str:
    """12 -> "12", 49536 -> "50k", 1234567 -> "1.2M"."""
    if n < 1000:
        return str(n)
    return f"{n / 1000:.0f}k" if n < 999_500 else f"{n / 1e6:.1f}M"


def _setting_text(row: dict) -> str:
    text = " ".join(f"{k}={v}" for k, v in row["setting"].items()) or "-"
    return text + (" *" if row["best_split"] and row["splits_in_budget"] > 1 else "")


def results_table(result: "BenchResult") -> "Table":
    """The rich table: budgets in increasing order, methods ranked within each."""
    from rich.table import Table

    sets = [qs.name for qs in result.query_sets]
    given = [qs for qs in result.query_sets if qs.name != "pseudo-queries"]
    judged = bool(given) and bool(given[0].queries.judged())
    table = Table(title=f"{result.data.collection}: {result.data.describe()}", caption=_caption(result))
    for name in ("bytes", "rank", "method", "setting", "seeds", "stored B", "in memory B", "fitted"):
        table.add_column(name, justify="left" if name in ("method", "setting") else "right")
    columns = [(sets[0], "recall@10"), (sets[0], "recall@100")]
    if given:
        columns += [(given[0].name, "recall@10")] + ([(given[0].name, "ndcg@10")] if judged else [])
    for qs, measure in columns:
        table.add_column(f"{measure} ({qs})", justify="right")
    for name in ("fit s", "search s"):
        table.add_column(name, justify="right")
    previous = None
    for row in summary_rows(result):
        if previous is not None and row["budget"] != previous:
            table.add_section()
        previous = row["budget"]
        seeds = str(len(row["seeds"])) if row["seeds"] else "-"
        table.add_row(f"{row['budget']:g}", str(row["rank"]), row["method"], _setting_text(row), seeds,
                      f"{row['bytes_stored']:g}", f"{row['bytes_resident']:g}", _count(row["fitted_numbers"]),
                      *(_cell(row["measures"].get(qs, {}).get(m)) for qs, m in columns),
                      f"{row['fit_seconds']:.1f}", f"{row['search_seconds']:.2f}")
    return table


def _caption(result: "BenchResult") -> str:
    sets = "; ".join(f"{s['name']}: {s['queries']:,}" + (f" ({s['judged']:,} judged)" if s["judged"] else "") +
                     (", own document left out" if s["own_document_left_out"] else "")
                     for s in _query_sets(result))
    refused = "; ".join(f"{r.family} at {r.budget} B refused: {r.reason}" for r in result.refusals)
    return (f"recall@k: share of the float32 encoder's exact top k (cosine) over the evaluated documents that a "
            f"method's top k keeps. Queries: {sets}. Each value: the mean and its 95% interval (over queries; over "
            f"seeds and queries for randomised methods). Ranked within each budget by recall@10 on the "
            f"pseudo-queries; * the best split of its method at that budget. fitted: numbers fitted or trained "
            f"on the fit documents, stored once (PCA axes, levels, codebooks, rotations, a head). Encoder "
            f"{result.encoder}, max length {result.max_length}." + (f" {refused}." if refused else ""))


def plot_frontier(result: "BenchResult", path: str | Path) -> Path:
    """recall@10 (and NDCG@10 when queries are judged) against stored bytes per vector, log x, one line per
    method through its best split per budget, 95% intervals as error bars, float32 as a reference line. PNG,
    written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator

    rows = [r for r in summary_rows(result) if r["best_split"]]
    panels = [("pseudo-queries", "recall@10")]
    judged = [qs for qs in result.query_sets if qs.name != "pseudo-queries" and qs.queries.judged()]
    if judged:
        panels.append((judged[0].name, "ndcg@10"))
    fig = Figure(figsize=(6.5 * len(panels), 5.2), dpi=110)
    FigureCanvasAgg(fig)
    for i, (qs, measure) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((r["bytes_stored"], r["measures"][qs][measure]) for r in rows
                            if r["method"] == method and measure in r["measures"].get(qs, {}))
            if method == "float32":
                ax.axhline(points[0][1]["mean"], color="grey", ls=":", lw=1, label="float32 (reference)")
                continue
            xs = [x for x, _ in points]
            ys = [m["mean"] for _, m in points]
            errors = [[m["mean"] - m["low"] for _, m in points], [m["high"] - m["mean"] for _, m in points]]
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=method,
                        linestyle="-" if len(xs) > 1 else "none")
        ax.set_xscale("log")
        ticks = sorted({r["bytes_stored"] for r in rows if r["method"] != "float32"})
        ax.set_xticks(ticks)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel("bytes per stored document vector (log scale)")
        ax.set_ylabel(f"{measure} ({qs})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result.data.collection}: {result.data.describe()}\nbest split per method and budget; error "
                 "bars: 95% intervals (queries, and seeds for randomised methods)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _md_cell(measure: dict | None) -> str:
    if measure is None or math.isnan(measure["mean"]):
        return ""
    return f"{measure['mean']:.4f} [{measure['low']:.3f}, {measure['high']:.3f}]"


def markdown_table(result: "BenchResult") -> str:
    """The table as markdown (for docs/results.md): budgets in increasing order, methods ranked within each,
    each value with its 95% interval."""
    sets = [qs for qs in result.query_sets]
    judged = [qs.name for qs in sets if qs.name != "pseudo-queries" and qs.queries.judged()]
    columns = [("pseudo-queries", "recall@10"), ("pseudo-queries", "recall@100")]
    columns += [(name, "ndcg@10") for name in judged[:1]]
    head = ["bytes", "rank", "method", "setting", "seeds", "stored B", "in memory B", "fitted"]
    head += [f"{m} ({q}) [95% CI]" for q, m in columns] + ["fit s", "search s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("--:" if h not in ("method", "setting") else "---"
                                                              for h in head) + "|"]
    for row in summary_rows(result):
        seeds = str(len(row["seeds"])) if row["seeds"] else "deterministic"
        cells = [f"{row['budget']:g}", str(row["rank"]), row["method"], _setting_text(row), seeds,
                 f"{row['bytes_stored']:g}", f"{row['bytes_resident']:g}", _count(row["fitted_numbers"])]
        cells += [_md_cell(row["measures"].get(q, {}).get(m)) for q, m in columns]
        cells += [f"{row['fit_seconds']:.1f}", f"{row['search_seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([f"{result.data.collection}: {result.data.describe()}.", "", *lines, "", _caption(result)])


def markdown_comparisons(entries: list[dict]) -> str:
    """The paired comparisons (`qcompress.bench.compare.compare`) as markdown."""
    lines = ["| bytes | first | second | measure | Δ = first − second [95% CI] | seeds | p | p Holm | reading |",
             "|--:|---|---|---|--:|--:|--:|--:|---|"]
    for e in entries:
        low, high = e["interval"]
        seeds = " / ".join(str(s) for s in e["seeds"])
        p = "<0.001" if e["p"] < 0.001 else f"{e['p']:.3f}"
        holm = "<0.001" if e["p_holm"] < 0.001 else f"{e['p_holm']:.3f}"
        lines.append(f"| {e['budget']:g} | {e['first']} | {e['second']} | {e['measure']} ({e['query_set']}) | "
                     f"{e['difference']:+.4f} [{low:+.3f}, {high:+.3f}] | {seeds} | {p} | {holm} | {e['reading']} |")
    return "\n".join(lines)
