"""The claims table of docs/results.md: each claim of the paper, the comparisons that test it, one verdict rule.

`python -m qcompress.recipes.claims docs/claims.toml [--update-doc docs/results.md]` reads the exported runs
(`recipes/results/<recipe>-<profile>.jsonl`, per-query NDCG@10 of every seed), tests every comparison, adjusts over
the whole table, and prints the markdown table (or puts it between the doc's `<!-- table: claims -->` markers).

The rule (docs/claims.toml says when it was fixed). A claim is "quantum matches classical" (boundary: a loss of
`margin`, 0.02 NDCG@10) or "quantum beats classical" (boundary: 0). For each comparison, Δ = quantum − classical over
seeds and queries, the seed-aware test (`qcompress.evaluation.seed_stats`) of H0: Δ = boundary, two-sided; Holm's
adjustment over every comparison of the table (one family). Then, for each comparison:
    confirmed                    adjusted p < 0.05 and Δ above the boundary (the claim holds beyond the margin)
    refuted                      adjusted p < 0.05 and Δ below the boundary (quantum loses beyond the margin)
    not testable at this scale   otherwise (the data cannot tell the two apart)
The same rule for both verdicts: a two-sided 95% interval excludes the boundary exactly when p < 0.05, so without the
adjustment "confirmed" is "the interval lies above the boundary" and "refuted" "below it".

Example:
    >>> import numpy as np
    >>> quantum, classical = np.full((3, 40), 0.50), np.full((1, 40), 0.51)
    >>> quantum[:, ::2] += 0.01; quantum[:, 1::2] -= 0.01
    >>> test = margin_test(quantum, classical, boundary=-0.02)
    >>> round(test["delta"], 3), test["p"] < 0.05, verdict(test["delta"], -0.02, test["p"])
    (-0.01, True, 'confirmed')
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from qcompress.errors import InputError
from qcompress.evaluation.seed_stats import holm, seed_aware_test
from qcompress.recipes.config import load_toml
from qcompress.recipes.report import collect_rows, per_query_matrix, update_doc_body

__all__ = ["margin_test", "verdict", "claims_table", "main", "KINDS"]

KINDS = ("matches", "beats")
ALPHA = 0.05


def margin_test(quantum: np.ndarray, classical: np.ndarray, boundary: float) -> dict:
    """Δ = mean(quantum) − mean(classical), its 95% interval, and the seed-aware p of H0: Δ = boundary.

    Both are (seeds x queries) matrices of per-query scores over the same queries. Shifting one side by the
    boundary moves the difference and leaves every variance as it is, so the test of Δ = boundary is the seed-aware
    test of (quantum − boundary) against classical."""
    test = seed_aware_test(quantum - boundary, classical)
    low, high = test.interval(0.95)
    return {"delta": test.difference + boundary, "interval": [low + boundary, high + boundary], "p": test.p,
            "df": test.df, "seeds": list(test.seeds), "queries": test.queries}


def verdict(delta: float, boundary: float, p_adjusted: float) -> str:
    """The rule of the module docstring."""
    if p_adjusted < ALPHA:
        return "confirmed" if delta > boundary else "refuted"
    return "not testable at this scale"


def _runs(results_dir: Path, export: str) -> list[dict]:
    path = results_dir / f"{export}.jsonl"
    if not path.is_file():
        raise InputError(f"no exported runs {path.name} (run the recipe with --export {results_dir})", file=path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _matrices(rows: dict, export: str, eval_name: str, first: str, second: str) -> tuple[np.ndarray, np.ndarray]:
    for label in (first, second):
        if label not in rows:
            raise InputError(f"{export} has no row {label!r} (rows: {', '.join(rows)})", field="comparisons")
        if eval_name not in rows[label]["evals"]:
            raise InputError(f"{export} row {label!r} was not evaluated on {eval_name!r}", field="comparisons")
    a, b = rows[first]["evals"][eval_name], rows[second]["evals"][eval_name]
    qids = sorted(set(a["per_query"]) & set(b["per_query"]))
    return per_query_matrix(a, qids), per_query_matrix(b, qids)


def _tests(spec: dict, results_dir: Path) -> list[dict]:
    """Every comparison of every claim, tested against its claim's boundary, Holm-adjusted over the table."""
    margin = float(spec.get("margin", 0.02))
    cache: dict[str, dict] = {}
    tests = []
    for claim in spec.get("claims", []):
        kind = claim.get("kind", "matches")
        if kind not in KINDS:
            raise InputError(f"claim kind {kind!r} is not one of {', '.join(KINDS)}", field="kind")
        boundary = -margin if kind == "matches" else 0.0
        for name, export, eval_name, first, second in claim["comparisons"]:
            if export not in cache:
                cache[export] = {r["label"]: r for r in collect_rows(_runs(results_dir, export))}
            a, b = _matrices(cache[export], export, eval_name, first, second)
            tests.append(dict(margin_test(a, b, boundary), claim=claim["claim"], name=name, boundary=boundary,
                              first=first, second=second))
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test.update(p_holm=adjusted, verdict=verdict(test["delta"], test["boundary"], adjusted))
    return tests


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def claims_table(spec: dict, results_dir: Path) -> str:
    """The markdown claims table: one line per comparison, grouped by claim."""
    tests = _tests(spec, results_dir)
    lines = [f"Rule fixed {spec.get('rule_fixed', '(not stated)')}; margin {float(spec.get('margin', 0.02)):g} "
             f"NDCG@10; {len(tests)} comparisons, one Holm family. Command: `python -m qcompress.recipes.claims "
             f"docs/claims.toml`.", "",
             "| paper's claim | comparison (quantum − classical) | Δ NDCG@10 [95% CI] | seeds | boundary | p (Δ = boundary) "
             "| p Holm | verdict |", "|---|---|--:|--:|--:|--:|--:|---|"]
    previous = None
    for t in tests:
        claim = t["claim"] if t["claim"] != previous else ""
        previous = t["claim"]
        low, high = t["interval"]
        seeds = " / ".join(str(s) for s in t["seeds"])
        lines.append(f"| {claim} | {t['name']}: {t['first']} − {t['second']} | {t['delta']:+.4f} [{low:+.3f}, "
                     f"{high:+.3f}] | {seeds} | {t['boundary']:+.2f} | {_p(t['p'])} | {_p(t['p_holm'])} | "
                     f"{t['verdict']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qcompress.recipes.claims", description=__doc__.split("\n")[0])
    parser.add_argument("claims", type=Path, help="the claims file (docs/claims.toml)")
    parser.add_argument("--results", type=Path, default=Path("recipes/results"), help="folder of exported runs")
    parser.add_argument("--update-doc", type=Path, help="put the table between <!-- table: claims --> markers")
    args = parser.parse_args(argv)
    try:
        spec = load_toml(args.claims)
        body = claims_table(spec, args.results)
        if args.update_doc is not None and not update_doc_body(args.update_doc, "claims", body):
            raise InputError("no <!-- table: claims --> markers", file=args.update_doc)
    except (InputError, OSError) as err:
        named = isinstance(err, InputError) and err.file is not None
        print(f"qcompress: error: {err}" if named else f"qcompress: error: {args.claims}: {err}", file=sys.stderr)
        return 1
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
