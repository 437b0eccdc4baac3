"""Recipe profiles that run `qcompress bench`, and the bench's paired comparisons (qcompress.bench.compare)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qcompress.bench.compare import compare, leader_pairs, reading
from qcompress.bench.report import markdown_comparisons
from qcompress.errors import InputError
from qcompress.recipes.bench_profile import _settings, export_bench


def _runs(rng: np.random.Generator) -> list[dict]:
    truth = rng.uniform(0.3, 0.9, 200)

    def run(label, family, seed, shift, noise):
        values = np.clip(truth + shift + rng.normal(0, noise, 200), 0, 1).tolist()
        return {"label": label, "family": family, "seed": seed, "bytes_stored": 16.0, "budgets": [16],
                "per_query": {"pseudo-queries": {"recall@10": values}}}

    runs = [run("pca", "pca", None, 0.0, 0.01)]
    runs += [run("head", "head", s, -0.05, 0.01) for s in (1, 2, 3)]  # clearly behind
    runs += [run("opq", "opq", s, -0.001, 0.01) for s in (1, 2, 3)]   # level with pca
    return runs


def test_paired_comparisons_read_leads_trails_and_level():
    runs = _runs(np.random.default_rng(0))
    entries = compare(runs, [("head", "pca", 16.0), ("opq", "pca", 16.0), ("pca", "head", 16.0)],
                      measures=(("pseudo-queries", "recall@10"),))
    assert [e["reading"] for e in entries] == ["trails", "no significant difference", "leads"]
    assert entries[0]["seeds"] == [3, 1] and entries[0]["interval"][1] < 0
    assert all(e["p_holm"] >= round(e["p"], 15) for e in entries)  # holm rounds to 15 digits
    table = markdown_comparisons(entries)
    assert table.count("\n") == len(entries) + 1 and "| trails |" in table
    assert reading(-0.1, 0.2) == "no significant difference"


def test_leader_pairs_take_each_budgets_best_other_method():
    rows = [{"budget": 16.0, "method": "pca", "label": "pca a"}, {"budget": 16.0, "method": "head", "label": "h1"},
            {"budget": 16.0, "method": "head", "label": "h2"}, {"budget": 32.0, "method": "head", "label": "h3"},
            {"budget": 32.0, "method": "opq", "label": "opq b"}, {"budget": 64.0, "method": "opq", "label": "o"}]
    assert leader_pairs(rows, "head") == [("h1", "pca a", 16.0), ("h3", "opq b", 32.0)]


def test_bench_settings_resolve_the_trec_folder_and_refuse_unknown_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("QCOMPRESS_TREC_DIR", raising=False)
    cfg = {"bench": {"corpus": "trec-dl-2019", "queries": ["{trec_dir}/q.tsv"]}, "trec_dir": str(tmp_path)}
    assert _settings(cfg)["queries"] == [f"{tmp_path}/q.tsv"]
    with pytest.raises(InputError, match="needs the TREC DL folder"):
        _settings({"bench": {"corpus": "{trec_dir}/collection.tsv"}})
    with pytest.raises(InputError, match="unknown bench setting"):
        _settings({"bench": {"corpus": "cranfield", "byte": [16]}})


def test_export_writes_one_line_per_finished_run(tmp_path):
    results = tmp_path / "out" / "frontier" / "bench-x" / "results"
    results.mkdir(parents=True)
    for name in ("b.json", "a.json"):
        (results / name).write_text(json.dumps({"label": name}) + "\n")
    path = export_bench({"name": "frontier"}, "bench-x", tmp_path / "out", tmp_path / "export")
    assert [json.loads(line)["label"] for line in path.read_text().splitlines()] == ["a.json", "b.json"]
