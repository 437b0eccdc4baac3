"""The recipes (issue 5): every recipe file parses and expands; the `paper` profile's first steps run offline against
a tiny stand-in (a tiny random BERT, a few queries); the offline runner resumes, reuses identical runs across recipes,
and aggregates into tables with paired tests and PNG plots; the peer methods of qcompress.recipes.peers behave."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from qcompress.search import select_topk

from conftest import WORDS, make_tiny_bert
from qcompress import recipes
from qcompress.recipes.bench_profile import BENCH_KEYS
from qcompress.errors import InputError
from qcompress.recipes import peers, runner


@pytest.fixture(autouse=True)
def clean_checkout(monkeypatch):
    """Runs record the checkout's commit and whether it had uncommitted changes; the tests must not depend on the
    state of the developer's working tree."""
    monkeypatch.setattr(runner, "git_state", lambda: ("0000000", False))

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.fixture(scope="module")
def tiny_bert4(tmp_path_factory) -> str:
    """A tiny random BERT with 4 layers (the paper trains the last 4), hidden size 48 (heads 48 -> 16) and the 256
    positions of the recipes' max length."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert4"), layers=4, hidden=48, positions=256))


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory) -> Path:
    """A BEIR folder with 16 documents and 6 queries (train: 3, test: 3), graded judgements."""
    folder = tmp_path_factory.mktemp("tiny-beir")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=8)) for _ in range(16)]
    queries = [" ".join(rng.choice(WORDS, size=3)) for _ in range(6)]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries)))
    (folder / "qrels").mkdir()
    for split, qs in (("train", range(0, 3)), ("test", range(3, 6))):
        lines = ["query-id\tcorpus-id\tscore"]
        for q in qs:
            lines += [f"q{q}\td{(2 * q) % 16}\t2", f"q{q}\td{(2 * q + 1) % 16}\t1", f"q{q}\td{(2 * q + 5) % 16}\t0"]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def _stand_in(encoder: str, folder: Path, seeds: str = "[1, 2]") -> list[str]:
    evaluate = f'[{{name = "tiny test", dataset = "{folder}", split = "test", protocol = "full", top_k = 100}}]'
    return [f"encoder={encoder}", f"train.dataset={folder}", "train.split=train", "train.epochs=1",
            "train.batch_size=4", "train.max_steps=2", "max_length=32", f"seeds={seeds}", f"evaluate={evaluate}"]


# -- recipe files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_files_parse_and_expand(path):
    recipe = recipes.load_recipe(path)
    assert set(recipe["profiles"]) >= {"paper", "offline"}
    for profile in recipe["profiles"]:
        cfg = recipes.profile_config(recipe, profile)
        if "bench" in cfg:  # a `qcompress bench` profile: its settings are the command's (test_bench_profile.py)
            assert set(cfg["bench"]) <= set(BENCH_KEYS) and len(cfg["bench"].get("seeds", [])) >= 3
            continue
        specs = recipes.expand_runs(cfg)
        assert specs, f"{path.name}/{profile} has no runs"
        # Every compared row exists: a run's label, or its label with a stored form after it ("... uint8").
        labels = {s.label for s in specs}
        for label in {label for pair in cfg.get("pairs", []) for label in pair}:
            assert any(label == run or label.startswith(run + " ") for run in labels), f"{path.name}/{profile}: {label}"
        assert len(cfg["seeds"]) >= 3
        trained = [s for s in specs if s.kind == "train"]
        seeds_of = {}
        for s in trained:
            seeds_of.setdefault(s.label, set()).add(s.seed)
        assert all(len(seeds) >= 3 for seeds in seeds_of.values())
        # Cheapest first: deterministic runs, then frozen-encoder training, then encoder training.
        assert [s.order[0] for s in specs] == sorted(s.order[0] for s in specs)


def test_variants_recipe_has_the_six_variants():
    recipe = recipes.load_recipe(Path(RECIPES[0]).parent / "variants.toml")
    for profile in ("paper", "offline", "offline-768"):
        variants = {s.params.get("variant") for s in recipes.expand_runs(recipes.profile_config(recipe, profile))}
        assert {"BT", "QBT", "BEC", "QBEC", "BFEC", "QBFEC"} <= variants


def test_set_overrides_parse_toml_values_and_dotted_keys():
    recipe = recipes.load_recipe(Path(RECIPES[0]).parent / "variants.toml")
    cfg = recipes.profile_config(recipe, "paper", ["seeds=[7]", "train.max_steps=3", "encoder=some/folder"])
    assert cfg["seeds"] == [7] and cfg["train"]["max_steps"] == 3 and cfg["encoder"] == "some/folder"
    with pytest.raises(ValueError, match="no profile"):
        recipes.profile_config(recipe, "nope")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        recipes.profile_config(recipe, "paper", ["seeds"])


# -- the paper profile, first steps against a tiny stand-in ---------------------------------------------------------


def test_paper_profile_first_steps_run_offline(tiny_bert4, tiny_beir, tmp_path, capsys):
    """The authors' set-up (4 trained layers, batch 64, heads 768/3...) with a tiny BERT and a few queries."""
    args = ["recipes/variants.toml", "--profile", "paper", "--out", str(tmp_path)]
    overrides = _stand_in(tiny_bert4, tiny_beir, seeds="[42]")
    overrides = [o for o in overrides if not o.startswith(("train.epochs", "train.batch_size", "max_length"))]
    root = Path(__file__).resolve().parents[1]
    code = recipes.main([str(root / args[0])] + args[1:] + [x for o in overrides for x in ("--set", o)]
                        + ["--only", "QBEC", "--only", "BEC", "--only", "encoder-"])
    assert code == 0
    out = tmp_path / "variants" / "paper"
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == 4  # the 2 untrained encoders, BEC and QBEC
    qbec = json.loads((out / "results" / "train-variant=QBEC-seed=42.json").read_text())
    assert qbec["training"]["train_layers"] == 4 and qbec["training"]["batch_size"] == 64
    assert qbec["training"]["lr"] == 2e-5 and qbec["training"]["epochs"] == 5
    row = qbec["rows"][0]
    assert row["dim"] == 16 and row["head_parameters"] == 12 * 2 * 16 and row["bytes_per_vector"] == 64
    m = row["metrics"]["tiny test"]
    assert m["protocol"] == "full" and set(m["per_query_ndcg_cut_10"]) == {"q3", "q4", "q5"}
    assert "BEC (ref)" in (out / "results.md").read_text()


def test_paper_dry_run_lists_twenty_seeds(capsys):
    root = Path(__file__).resolve().parents[1]
    assert recipes.main([str(root / "recipes/variants.toml"), "--profile", "paper", "--dry-run",
                         "--out", "/nonexistent"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 6 * 20 and all("\ttodo\t" in line for line in lines)


# -- the offline runner: resume, reuse, aggregate --------------------------------------------------------------------

TINY_PEERS = """
name = "{name}"
title = "tiny"
[profiles.offline]
encoder = "{encoder}"
max_length = 32
seeds = [1, 2]
reference = "{reference}"
pairs = [["QBFEC d=8", "BFEC d=8"], ["no such row", "BFEC d=8"]]
rescore_k = 5
train = {{ dataset = "{folder}", split = "train", negatives = 2, batch_size = 4, epochs = 2, head_lr = 1e-3 }}
evaluate = [{{ name = "tiny test", dataset = "{folder}", split = "test", protocol = "full", top_k = 100 }}]
plots = [{{ file = "bytes.png", x = "bytes_per_vector", xlog = true }}]
{runs}
[profiles.paper]
evaluate = [{{ name = "x", dataset = "cranfield" }}]
"""

PEER_RUNS = """
[[profiles.offline.runs]]
kind = "encoder"
similarity = ["cosine", "fidelity"]
storage = ["float32"]
label = "enc {similarity}"
[[profiles.offline.runs]]
kind = "peer"
method = ["truncate", "pca"]
dim = [16, 8]
label = "{method} d={dim}"
series = "{method}"
[[profiles.offline.runs]]
kind = "peer"
method = ["int8", "int8+rescore", "binary", "binary+rescore"]
label = "{method}"
[[profiles.offline.runs]]
variant = "QBFEC"
dim = [16, 8]
storage = ["float32", "uint8"]
label = "QBFEC d={dim}"
series = "quantum {storage}"
[[profiles.offline.runs]]
variant = "BFEC"
dim = [16, 8]
storage = ["float32", "int8"]
label = "BFEC d={dim}"
series = "classical {storage}"
"""

SIZE_RUNS = """
[[profiles.offline.runs]]
variant = ["BFEC", "QBFEC"]
dim = [16, 8]
label = "{variant} d={dim}"
"""


def test_offline_runner_resumes_reuses_and_aggregates(tiny_bert4, tiny_beir, tmp_path):
    peers_toml, sizes_toml = tmp_path / "peers.toml", tmp_path / "sizes.toml"
    peers_toml.write_text(TINY_PEERS.format(name="tinypeers", encoder=tiny_bert4, folder=tiny_beir,
                                            reference="BFEC d=16", runs=PEER_RUNS))
    sizes_toml.write_text(TINY_PEERS.format(name="tinysizes", encoder=tiny_bert4, folder=tiny_beir,
                                            reference="BFEC d={dim}", runs=SIZE_RUNS))
    out = tmp_path / "out"
    logs: list[str] = []
    recipe = recipes.load_recipe(peers_toml)
    cfg = recipes.profile_config(recipe, "offline")
    recipes.run_recipe(recipe, "offline", cfg, out, log=logs.append)
    assert len(logs) == 2 * (2 + 4 + 4 + 4 + 4)  # a "running" and a "<seconds>" line per run
    report = recipes.aggregate(recipe, "offline", cfg, out, command="cmd")
    text = report.read_text()
    for label in ("enc cosine", "pca d=8", "truncate d=16", "binary+rescore", "QBFEC d=8 uint8", "BFEC d=16 int8"):
        assert f"| {label} " in text
    assert "BFEC d=16 (ref)" in text and " ± " in text and "Runs finished: 18 of 18" in text
    assert "| QBFEC d=8 vs BFEC d=8 |" in text and "no such row" not in text
    pair = next(line for line in text.splitlines() if line.startswith("| QBFEC d=8 vs BFEC d=8 |"))
    low, high = (float(x) for x in re.search(r"\[([-+.\d]+), ([-+.\d]+)\]", pair).groups())
    assert "Δ [95% CI]" in text and "Δ vs ref [95% CI]" in text
    assert low <= float(pair.split("|")[2].split()[0]) <= high
    assert (out / "tinypeers" / "offline" / "bytes.png").read_bytes()[:4] == b"\x89PNG"
    first = json.loads(next((out / "tinypeers" / "offline" / "results").glob("*.json")).read_text())
    assert first["git_commit"] == "0000000" and first["git_dirty"] is False
    summary = {r["label"]: r for r in json.loads((out / "tinypeers/offline/summary.json").read_text())}
    assert summary["binary"]["bytes_per_vector"] == 6 and summary["int8"]["bytes_per_vector"] == 48
    assert summary["QBFEC d=8 uint8"]["bytes_per_vector"] == 8 and summary["QBFEC d=8"]["bytes_per_vector"] == 32
    assert summary["pca d=8"]["fitted_parameters"] == 8 * 48 + 48

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table: tinypeers/offline -->\nold\n<!-- /table -->\nend\n")
    assert recipes.update_doc(doc, "tinypeers/offline", report)
    updated = doc.read_text()
    assert "old" not in updated and updated.startswith("intro\n") and updated.endswith("<!-- /table -->\nend\n")
    assert "Runs finished: 18 of 18" in updated and "| enc cosine " in updated
    assert not recipes.update_doc(doc, "other/offline", report)

    # Resume: a second invocation runs nothing.
    before = {p.name: p.read_text() for p in (out / "tinypeers/offline/results").glob("*.json")}
    logs.clear()
    recipes.run_recipe(recipe, "offline", cfg, out, log=logs.append)
    assert all("skipped" in line for line in logs) and len(logs) == 18
    assert before == {p.name: p.read_text() for p in (out / "tinypeers/offline/results").glob("*.json")}

    # Another recipe with identical runs reuses their results (relabelled), computing nothing.
    sizes = recipes.load_recipe(sizes_toml)
    scfg = recipes.profile_config(sizes, "offline")
    logs.clear()
    recipes.run_recipe(sizes, "offline", scfg, out, log=logs.append)
    assert len(logs) == 8 and all("same run as" in line for line in logs)
    text = recipes.aggregate(sizes, "offline", scfg, out).read_text()
    assert "| QBFEC d=8 |" in text and "| BFEC d=8 (ref) |" in text and "uint8" not in text


def test_interrupted_run_leaves_no_result_and_continues(tiny_bert4, tiny_beir, tmp_path, monkeypatch):
    toml = tmp_path / "r.toml"
    toml.write_text(TINY_PEERS.format(name="r", encoder=tiny_bert4, folder=tiny_beir, reference="",
                                      runs=SIZE_RUNS))
    recipe = recipes.load_recipe(toml)
    cfg = recipes.profile_config(recipe, "offline")
    real = runner.run_one
    calls = []

    def flaky(spec, *args, **kwargs):
        calls.append(spec.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "run_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        recipes.run_recipe(recipe, "offline", cfg, tmp_path / "out", log=lambda m: None)
    assert len(list((tmp_path / "out/r/offline/results").glob("*.json"))) == 2
    monkeypatch.setattr(runner, "run_one", real)
    logs: list[str] = []
    recipes.run_recipe(recipe, "offline", cfg, tmp_path / "out", log=logs.append)
    assert sum("skipped" in line for line in logs) == 2
    assert len(list((tmp_path / "out/r/offline/results").glob("*.json"))) == 8

    # A changed setting makes the old results stale: they are run again, never mixed into the table.
    changed = recipes.profile_config(recipe, "offline", ["train.epochs=1"])
    logs.clear()
    recipes.run_recipe(recipe, "offline", changed, tmp_path / "out", only=["dim=8-variant=BFEC-seed=1"],
                       log=logs.append)
    assert "settings changed" in logs[0] and len(logs) == 3
    text = recipes.aggregate(recipe, "offline", cfg, tmp_path / "out").read_text()
    assert "Runs finished: 7 of 8" in text


# -- peers ------------------------------------------------------------------------------------------------------------


def test_peer_representations_sizes_and_scores():
    torch.manual_seed(0)
    docs, queries = torch.randn(40, 32), torch.randn(5, 32)
    full = peers.representation("float32", docs)
    trunc = peers.representation("truncate", docs, dim=32)
    assert torch.allclose(full.score(full.queries(queries), full.documents(docs)),
                          trunc.score(trunc.queries(queries), trunc.documents(docs)))
    sizes = {m: peers.representation(m, docs, dim=8).bytes_per_vector for m in peers.PEER_METHODS}
    assert sizes == {"float32": 128, "float16": 64, "truncate": 32, "pca": 32, "pca-normalised": 32, "int8": 32,
                     "int8+rescore": 32, "binary": 4, "binary+rescore": 4}
    binary = peers.representation("binary", docs)
    s = binary.score(binary.queries(queries), binary.documents(docs))
    manual = -((queries[:, None, :] > 0) != (docs[None, :, :] > 0)).sum(-1).float()
    assert torch.equal(s, manual)
    # Rescoring keeps the binary top-k set and orders it by the float query against the +-1 bits.
    rescored = peers.representation("binary+rescore", docs, rescore_k=5)
    r = rescored.score(rescored.queries(queries), rescored.documents(docs))
    for row in range(5):
        top_binary = set(select_topk(s[row : row + 1], 5)[1][0].tolist())  # the tie rule of every top-k
        top_rescored = torch.topk(r[row], 5).indices.tolist()
        assert set(top_rescored) == top_binary
        exact = torch.nn.functional.normalize(queries[row], dim=0) @ torch.sign(docs[top_rescored]).T
        assert exact.tolist() == sorted(exact.tolist(), reverse=True)
    with pytest.raises(ValueError, match="unknown method"):
        peers.representation("zip", docs)


def test_rank_with_breaks_ties_at_the_cut_towards_the_lower_index():
    """Full ranking keeps the best top_k as qcompress.evaluation.rank does: equal scores go to the lower index."""
    from qcompress.evaluation import Texts

    docs = torch.tensor([[0.0, 1.0]] + [[1.0, 0.0]] * 6 + [[0.6, 0.8]])
    ids = [f"d{i}" for i in range(len(docs))]
    texts = Texts(["q"], ["query"], ids, ids, pools=None)
    rep = peers.representation("binary", docs)  # Hamming scores: d1..d6 tie at 0
    for k in (1, 3, 6):
        run = peers.rank_with(rep, texts, torch.tensor([[1.0, -1.0]]), docs, top_k=k)
        assert list(run["q"]) == ids[1 : k + 1]
    with pytest.raises(ValueError, match="top_k"):
        peers.rank_with(rep, texts, docs[:1], docs, top_k=0)


def test_uint8_angles_are_close_to_float_angles():
    theta = torch.rand(20, 16) * torch.pi
    a, u = peers.representation("angles", theta), peers.representation("uint8 angles", theta)
    assert u.bytes_per_vector == 16 and a.bytes_per_vector == 64
    sa = a.score(a.queries(theta[:3]), a.documents(theta))
    su = u.score(u.queries(theta[:3]), u.documents(theta))
    assert torch.equal(sa.argmax(1), su.argmax(1))
    assert np.corrcoef(sa.flatten().numpy(), su.flatten().numpy())[0, 1] > 0.99


def test_last_layer_trained_runs_are_evaluated_through_the_frozen_prefix(tiny_bert4, tiny_beir, tmp_path,
                                                                          monkeypatch):
    """An encoder-training run with 1 trained layer is evaluated by replaying the frozen layers' stored outputs;
    its per-query NDCG@10 equals a plain evaluation of the saved model."""
    from qcompress.data import load_collection
    from qcompress.evaluation import evaluate
    from qcompress.model import load_model

    monkeypatch.setattr(runner, "_PREFIXES", None)
    root = Path(__file__).resolve().parents[1]
    overrides = _stand_in(tiny_bert4, tiny_beir, seeds="[42]") + ["encoder_layers=1"]
    code = recipes.main([str(root / "recipes" / "variants.toml"), "--profile", "paper", "--out", str(tmp_path),
                         "--keep-models", "--only", "QBEC"] + [x for o in overrides for x in ("--set", o)])
    assert code == 0
    prefixes = runner._PREFIXES
    assert prefixes is not None and prefixes.bytes > 0 and list(prefixes._replay_ok.values()) == [True]
    out = tmp_path / "variants" / "paper"
    result = json.loads((out / "results" / "train-variant=QBEC-seed=42.json").read_text())
    assert result["training"]["train_layers"] == 1
    model = load_model(out / "models" / "train-variant=QBEC-seed=42")
    plain = evaluate(model, load_collection(str(tiny_beir), "test"), "full", top_k=100)
    replayed = result["rows"][0]["metrics"]["tiny test"]["per_query_ndcg_cut_10"]
    assert replayed == pytest.approx({q: v["ndcg_cut_10"] for q, v in plain.per_query.items()}, abs=1e-9)


def test_runs_from_uncommitted_code_are_not_aggregated_unless_asked(tiny_bert4, tiny_beir, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "git_state", lambda: ("abc1234", True))
    toml = tmp_path / "p.toml"
    toml.write_text(TINY_PEERS.format(name="dirty", encoder=tiny_bert4, folder=tiny_beir, reference="enc cosine",
                                      runs='[[profiles.offline.runs]]\nkind = "encoder"\nsimilarity = "cosine"\n'
                                           'label = "enc cosine"\n'))
    recipe = recipes.load_recipe(toml)
    cfg = recipes.profile_config(recipe, "offline")
    recipes.run_recipe(recipe, "offline", cfg, tmp_path / "out", log=lambda m: None)
    with pytest.raises(InputError, match="uncommitted changes .on commit abc1234"):
        recipes.aggregate(recipe, "offline", cfg, tmp_path / "out")
    assert recipes.aggregate(recipe, "offline", cfg, tmp_path / "out", allow_dirty=True).is_file()


def test_update_doc_fills_empty_marker_pairs_one_at_a_time(tmp_path):
    """Two fresh sections, each with empty markers: filling the first must not swallow the second (it did)."""
    report = tmp_path / "results.md"
    report.write_text("title\n\nRuns finished: 1 of 1.\n\n| a |\n")
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table: r/offline -->\n<!-- /table -->\n\ntext between\n\n"
                   "<!-- table: r/offline-dl -->\n<!-- /table -->\n")
    assert recipes.update_doc(doc, "r/offline", report)
    assert recipes.update_doc(doc, "r/offline-dl", report)
    body = "Runs finished: 1 of 1.\n\n| a |\n"
    assert doc.read_text() == (f"<!-- table: r/offline -->\n{body}<!-- /table -->\n\ntext between\n\n"
                               f"<!-- table: r/offline-dl -->\n{body}<!-- /table -->\n")
    assert recipes.update_doc(doc, "r/offline", report)  # again: the same text
    assert doc.read_text().count("Runs finished") == 2


def test_plot_texts_come_from_the_rows_and_the_profile():
    from qcompress.recipes.report import _seed_caption, _training_budget

    cfg = {"train": {"epochs": 5, "batch_size": 16}, "encoder_layers": 1}
    bec = {"kind": "train", "params": {"variant": "BEC", "max_steps": 8}, "seeds": [42, 43, 44]}
    qbfec = {"kind": "train", "params": {"variant": "QBFEC", "epochs": 1}, "seeds": [42, 43, 44, 45, 46]}
    pca = {"kind": "peer", "params": {"method": "pca"}, "seeds": [None]}
    assert _training_budget(bec, cfg) == "1 layer + head, 5 epochs (<= 8 steps) of 16"
    assert _training_budget(qbfec, cfg) == "head only, 1 epoch of 16"
    assert _training_budget(pca, cfg) is None
    assert _seed_caption([bec, pca]) == ("trained rows: mean ± std over 3 seeds; points without error bars are "
                                         "deterministic (one run)")
    assert _seed_caption([bec, qbfec]) == "trained rows: mean ± std over 3 or 5 seeds"
    assert _seed_caption([pca]) == "every point is one deterministic run"


def test_log_axis_ticks_are_the_values_plotted():
    from matplotlib.figure import Figure

    from qcompress.recipes.report import _set_log_ticks

    ax = Figure().add_subplot()
    ax.plot([32, 64, 128, 192], [0.3, 0.31, 0.32, 0.33])
    ax.set_xscale("log")
    _set_log_ticks(ax.xaxis, [32, 64, 128, 192, 64])
    assert list(ax.get_xticks()) == [32, 64, 128, 192]
    assert [ax.xaxis.get_major_formatter()(x, 0) for x in (32, 192)] == ["32", "192"]


def test_a_run_entry_may_train_its_own_seeds():
    cfg = {"seeds": [1, 2, 3], "runs": [{"variant": "QBEC", "label": "a"},
                                        {"variant": "QBFEC", "seeds": [1, 2, 3, 4, 5], "label": "b"}]}
    specs = recipes.expand_runs(cfg)
    assert sorted(s.seed for s in specs if s.label == "a") == [1, 2, 3]
    assert sorted(s.seed for s in specs if s.label == "b") == [1, 2, 3, 4, 5]
    assert all("seeds" not in s.params for s in specs)
    with pytest.raises(ValueError, match="seeds must be a non-empty list"):
        recipes.expand_runs({"seeds": [1], "runs": [{"variant": "QBEC", "seeds": []}]})


def test_a_step_budget_with_an_epoch_cap_reads_as_steps():
    from qcompress.recipes.report import _training_budget

    row = {"kind": "train", "params": {"variant": "BFEC", "epochs": 1000, "max_steps": 270}, "seeds": [1]}
    assert _training_budget(row, {"train": {"batch_size": 16}}) == "head only, 270 steps of 16"
