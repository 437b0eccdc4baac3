"""The claims table (qcompress.recipes.claims): one rule, one Holm family, read from exported runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qcompress.errors import InputError
from qcompress.recipes.claims import claims_table, main, margin_test, verdict


def _run(label: str, seed, per_query: list[float]) -> dict:
    scores = {str(q): v for q, v in enumerate(per_query)}
    return {"kind": "train", "seed": seed, "series": None, "rows": [{
        "label": label, "params": {}, "bytes_per_vector": 4.0, "head_parameters": 0, "similarity": "cosine",
        "dim": 1, "metrics": {"test": {"protocol": "full", "queries": len(scores), "documents": 9,
                                       "ndcg_cut_10": float(np.mean(per_query)), "per_query_ndcg_cut_10": scores}}}]}


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    runs = [_run("classical", None, base)]
    # 'close': 0.005 below classical (within the margin); 'far': 0.08 below (beyond it); 'noisy': undecidable
    for seed in (1, 2, 3):
        runs.append(_run("close", seed, base - 0.005 + rng.normal(0, 0.002, 60)))
        runs.append(_run("far", seed, base - 0.08 + rng.normal(0, 0.002, 60)))
        runs.append(_run("noisy", seed, base - 0.02 + rng.normal(0, 0.3, 60)))
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    return tmp_path


def _spec(*rows: str, kind: str = "matches") -> dict:
    return {"margin": 0.02, "rule_fixed": "today", "claims": [
        {"claim": "q matches c", "kind": kind, "comparisons": [[r, "demo", "test", r, "classical"] for r in rows]}]}


def test_one_rule_gives_each_verdict(results):
    table = claims_table(_spec("close", "far", "noisy"), results)
    lines = {line.split("|")[2].strip().split(":")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert lines["close"].rstrip(" |").endswith("confirmed")
    assert lines["far"].rstrip(" |").endswith("refuted")
    assert lines["noisy"].rstrip(" |").endswith("not testable at this scale")
    assert "3 comparisons, one Holm family" in table


def test_holm_adjusts_over_the_whole_table(results):
    alone = margin_test(np.array([[0.5, 0.52, 0.51]]), np.array([[0.5, 0.5, 0.5]]), -0.02)
    assert alone["delta"] == pytest.approx(0.01)
    assert verdict(0.01, -0.02, 0.049) == "confirmed" and verdict(-0.05, -0.02, 0.049) == "refuted"
    assert verdict(0.01, -0.02, 0.051) == "not testable at this scale"
    # the same comparison in a larger family gets a larger adjusted p
    one = claims_table(_spec("noisy"), results)
    many = claims_table(_spec("noisy", "close", "far", "noisy", "noisy"), results)
    p_of = lambda table: float(next(l for l in table.splitlines() if "noisy:" in l).split("|")[7].replace("<", ""))
    assert p_of(many) >= p_of(one)


def test_a_beats_claim_uses_zero_as_its_boundary(results):
    table = claims_table(_spec("close", kind="beats"), results)
    assert "+0.00" in table and table.splitlines()[-1].rstrip(" |").endswith("refuted")


def test_a_missing_row_or_export_is_one_input_error(results, tmp_path, capsys):
    with pytest.raises(InputError, match="no row 'absent'"):
        claims_table(_spec("absent"), results)
    spec = tmp_path / "claims.toml"
    spec.write_text('margin = 0.02\n[[claims]]\nclaim = "x"\ncomparisons = [["a", "nothing", "test", "q", "c"]]\n')
    assert main([str(spec), "--results", str(results)]) == 1
    assert "no exported runs nothing.jsonl" in capsys.readouterr().err
