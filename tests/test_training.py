"""Training (qcompress.training): variants, negatives, exact resume, which layers train, best epoch; MiniLM run."""

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from qcompress import load_model
from qcompress.data import Collection, load_collection
from qcompress.encoder import set_trainable_layers
from qcompress.model import build_model
from qcompress.training import (
    Examples,
    TrainConfig,
    TrainingInterrupted,
    build_examples,
    checkpoint_dir,
    default_dim,
    mine_negatives,
    resolve_variant,
    train,
)
from qcompress.training.config import resolve
from qcompress.training.step import in_batch_mask

DOCS = {
    "d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
    "d4": "what are the boundary layer effects", "d5": "a wing", "d6": "heat of the wing at pressure",
    "d7": "flow with heat", "d8": "the layer of a wing", "d9": "boundary of the pressure flow",
    "d10": "what is the heat", "d11": "wing and flow and pressure", "d12": "in the boundary",
}
QUERIES = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure", "q4": "what is a wing",
           "q5": "pressure heat"}
TRAIN = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td5\t1\nq2\td2\t1\nq3\td4\t3\nq3\td9\t0\nq4\td8\t1\nq4\td5\t2\n"
TEST = "query-id\tcorpus-id\tscore\nq5\td6\t1\nq2\td10\t1\n"


def write_beir(root: Path, docs=DOCS, queries=QUERIES, splits=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (root / "qrels").mkdir(exist_ok=True)
    for name, text in (splits or {"train": TRAIN, "test": TEST}).items():
        (root / "qrels" / f"{name}.tsv").write_text(text)
    return root


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(tiny_encoder, beir, cache, out, **kw) -> dict:
    base = dict(output=str(out), encoder=tiny_encoder, dataset=str(beir), cache_dir=str(cache), max_length=32,
                negatives=3, batch_size=2, head="quantum", dim=8, train_layers=0, epochs=2, seed=7)
    return {**base, **kw}


# -- arguments -----------------------------------------------------------------------------------------------------


def test_variants_follow_the_spec_table():
    table = {name: resolve_variant(name.lower()) for name in ("BT", "QBT", "BEC", "QBEC", "BFEC", "QBFEC")}
    assert [(v["head"], v["similarity"], v["train_layers"]) for v in table.values()] == [
        ("none", "cosine", 4), ("none", "fidelity", 4), ("linear", "cosine", 4), ("quantum", "fidelity", 4),
        ("linear", "cosine", 0), ("quantum", "fidelity", 0),
    ]
    assert [name for name, v in table.items() if v["normalize"]] == ["QBFEC"]
    with pytest.raises(ValueError, match="BT, QBT, BEC, QBEC, BFEC, QBFEC"):
        resolve_variant("QBX")


def test_explicit_flags_override_the_variant_and_dim_defaults_to_a_third():
    assert default_dim(768) == 256 and default_dim(384) == 128
    cfg = resolve(TrainConfig(output="x", variant="qbec"), in_dim=384)
    assert (cfg.variant, cfg.head, cfg.similarity, cfg.train_layers, cfg.dim, cfg.normalize) == (
        "QBEC", "quantum", "fidelity", 4, 128, False)
    cfg = resolve(TrainConfig(output="x", variant="BEC", train_layers=1, dim=16), in_dim=384)
    assert (cfg.head, cfg.similarity, cfg.train_layers, cfg.dim) == ("linear", "cosine", 1, 16)
    assert resolve(TrainConfig(output="x", head="quantum"), in_dim=32).similarity == "fidelity"
    assert resolve(TrainConfig(output="x", variant="QBFEC", normalize=False), in_dim=32).normalize is False
    with pytest.raises(ValueError, match="nothing to train"):
        resolve(TrainConfig(output="x", head="none", train_layers=0), in_dim=32)


# -- data ----------------------------------------------------------------------------------------------------------


def test_mined_negatives_are_unjudged_top_documents_and_cached(tiny_encoder, beir, tmp_path, monkeypatch):
    collection = load_collection(str(beir), "train")
    model = build_model(tiny_encoder, head="none", max_length=32)
    mined = mine_negatives(model, collection, 3, cache_dir=tmp_path)
    assert set(mined) == set(collection.queries)
    for qid, docs in mined.items():
        assert len(docs) == 3 and len(set(docs)) == 3
        assert not {d for d, g in collection.qrels[qid].items() if g > 0} & set(docs)
    files = list((tmp_path / "negatives").glob("*.json"))
    assert len(files) == 1
    monkeypatch.setattr(model, "pool", lambda texts: pytest.fail("the cache should answer"))
    assert mine_negatives(model, collection, 3, cache_dir=tmp_path) == mined
    assert mine_negatives(build_model(tiny_encoder, head="none", max_length=16), collection, 3, cache_dir=tmp_path)
    assert len(list((tmp_path / "negatives").glob("*.json"))) == 2  # another max length: another entry
    edited = dict(collection.corpus, d3="the flow of heat")  # same ids, same size, another text
    mine_negatives(build_model(tiny_encoder, head="none", max_length=32),
                   Collection(**{**vars(collection), "corpus": edited}), 3, cache_dir=tmp_path)
    assert len(list((tmp_path / "negatives").glob("*.json"))) == 3  # mined again, not the old texts' negatives


def test_an_altered_negatives_cache_file_is_refused(tiny_encoder, beir, tmp_path):
    """Issue 27 item 6, for the third cache: mined negatives carry their digest, checked when read."""
    from qcompress.errors import InputError

    collection = load_collection(str(beir), "train")
    model = build_model(tiny_encoder, head="none", max_length=32)
    mined = mine_negatives(model, collection, 3, cache_dir=tmp_path)
    path = next((tmp_path / "negatives").glob("*.json"))
    data = json.loads(path.read_text())
    data["negatives"]["q1"] = list(reversed(data["negatives"]["q1"]))
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="damaged cache file \\(its negatives do not match their digest\\)"):
        mine_negatives(model, collection, 3, cache_dir=tmp_path)
    path.write_text("{")
    with pytest.raises(InputError, match="damaged cache file"):
        mine_negatives(model, collection, 3, cache_dir=tmp_path)
    path.write_text(json.dumps({"q1": ["d9"]}))  # an older qcompress's file, without a digest: mined again
    assert mine_negatives(model, collection, 3, cache_dir=tmp_path) == mined


def test_mined_negatives_are_the_top_ranked_by_encoder_cosine(tiny_encoder, beir):
    collection = load_collection(str(beir), "train")
    model = build_model(tiny_encoder, head="none", max_length=32)
    mined = mine_negatives(model, collection, 2)
    ids = list(collection.corpus)
    docs = model.encode([collection.corpus[d] for d in ids], convert_to_tensor=True)
    q = model.encode([collection.queries["q1"]], convert_to_tensor=True)
    ranked = [ids[i] for i in (F.normalize(q, dim=-1) @ F.normalize(docs, dim=-1).T)[0].argsort(descending=True)]
    assert mined["q1"] == [d for d in ranked if d not in ("d1", "d5")][:2]


def test_examples_one_per_positive_and_a_seeded_fraction_of_queries(beir):
    collection = load_collection(str(beir), "train")
    negatives = {q: ["d10", "d11", "d12"] for q in collection.queries}
    ex = build_examples(collection, negatives, 2)
    # q1: d1, d5; q2: d2; q3: d4 (d9 is judged 0); q4: d8, d5
    assert len(ex) == 6 and ex.query_ids == ["q1", "q2", "q3", "q4"]
    assert [ex.doc_ids[row[0]] for row in ex.ex_docs.tolist()] == ["d1", "d5", "d2", "d4", "d8", "d5"]
    assert all([ex.doc_ids[i] for i in row[1:]] == ["d10", "d11"] for row in ex.ex_docs.tolist())
    half = build_examples(collection, negatives, 2, fraction=0.5, seed=3)
    assert len(half.query_ids) == 2
    assert build_examples(collection, negatives, 2, fraction=0.5, seed=3).query_ids == half.query_ids
    assert build_examples(collection, negatives, 2, fraction=0.01).query_ids.__len__() == 1
    short = build_examples(collection, {**negatives, "q2": ["d10"]}, 2)
    assert short.dropped_queries == 1 and "q2" not in short.query_ids


def test_dataset_hard_negatives_are_used_and_topped_up_by_mining(tiny_encoder, beir, cache, tmp_path):
    collection = load_collection(str(beir), "train")
    collection.hard_negatives = {"q1": ["d12", "d11", "d10"], "q2": ["d12"]}
    out = train(config(tiny_encoder, beir, cache, tmp_path / "m", epochs=1), collection=collection)
    result = json.loads((out / "qcompress.json").read_text())["training_result"]
    assert result["negatives_source"] == "dataset+mined" and result["examples"] == 6
    # a lazily read corpus (ir_datasets) is never mined: queries without enough negatives are left out
    lazy = Collection(name="lazy", corpus=_Lazy(DOCS), queries=collection.queries, qrels=collection.qrels,
                      split="train", hard_negatives={"q1": ["d12", "d11", "d10"]})
    out = train(config(tiny_encoder, beir, cache, tmp_path / "lazy", epochs=1), collection=lazy)
    result = json.loads((out / "qcompress.json").read_text())["training_result"]
    assert result["negatives_source"] == "dataset" and result["examples"] == 2
    assert result["queries_without_enough_negatives"] == 3


class _Lazy(Mapping):
    """Stands in for an ir_datasets corpus: a Mapping that is not a dict."""

    def __init__(self, docs):
        self._docs = dict(docs)

    def __getitem__(self, key):
        return self._docs[key]

    def __iter__(self):
        return iter(self._docs)

    def __len__(self):
        return len(self._docs)



def test_in_batch_mask_hides_other_copies_of_relevant_documents():
    ex = Examples(query_ids=["q1", "q2"], query_texts=["a", "b"], doc_ids=["p1", "p2", "n1", "p3"],
                  doc_texts=["", "", "", ""], ex_query=torch.tensor([0, 0, 1]),
                  ex_docs=torch.tensor([[0, 2], [1, 2], [3, 0]]), relevant=[{"p1", "p2"}, {"p3"}])
    mask = in_batch_mask(ex, ex.ex_query, ex.ex_docs)
    # columns: p1 n1 | p2 n1 | p3 p1
    assert mask.tolist() == [
        [False, False, True, False, False, True],  # q1: own p1 kept, p2 and the other copy of p1 masked
        [True, False, False, False, False, True],  # q1 again, positive p2 (column 2)
        [False, False, False, False, False, False],  # q2: only p3 is relevant and it is its own positive
    ]


# -- training ------------------------------------------------------------------------------------------------------


def test_training_writes_a_loadable_model_folder(tiny_encoder, beir, cache, tmp_path):
    out = train(config(tiny_encoder, beir, cache, tmp_path / "qbfec", variant="QBFEC", head=None, train_layers=None,
                       in_batch_negatives=True))
    # qcompress's files, and the same model for sentence-transformers
    assert sorted(p.name for p in out.iterdir()) == [
        "1_Pooling", "3_AngleEncoding", "4_QuantumHead", "README.md", "config_sentence_transformers.json",
        "encoder", "head.safetensors", "modules.json", "qcompress.json", "train_curve.png", "train_log.jsonl"]
    assert not checkpoint_dir(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["qbfec"]
    cfg = json.loads((out / "qcompress.json").read_text())
    assert (cfg["head"], cfg["dim"], cfg["similarity"], cfg["normalize"], cfg["encoder_trained"]) == (
        "quantum", 8, "fidelity", True, False)
    training = cfg["training"]
    assert training["variant"] == "QBFEC" and training["train_layers"] == 0 and training["in_batch_negatives"]
    assert training["negatives"] == 3 and training["seed"] == 7 and "output" not in training
    assert cfg["training_result"]["steps"] == 6 and cfg["training_result"]["negatives_source"] == "mined"
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["kind"] == "step" and r["loss"] > 0 and r["examples_per_s"] > 0 and 0 < r["head_share"] <= 1
               for r in rows)
    assert (out / "train_curve.png").read_bytes()[:4] == b"\x89PNG"
    model = load_model(out)
    assert model.encode(["a wing"], convert_to_tensor=True).shape == (1, 8)


def test_same_seed_same_weights_other_seed_other_weights(tiny_encoder, beir, cache, tmp_path):
    a = train(config(tiny_encoder, beir, cache, tmp_path / "a", epochs=1))
    b = train(config(tiny_encoder, beir, cache, tmp_path / "b", epochs=1))
    c = train(config(tiny_encoder, beir, cache, tmp_path / "c", epochs=1, seed=8))
    head = lambda p: load_file(str(p / "head.safetensors"))["raw"]  # noqa: E731
    assert torch.equal(head(a), head(b)) and not torch.equal(head(a), head(c))


def test_no_head_variant_fine_tunes_the_encoder(tiny_encoder, beir, cache, tmp_path):
    out = train(config(tiny_encoder, beir, cache, tmp_path / "qbt", variant="qbt", head=None, dim=None,
                       train_layers=1, lr=1e-3, epochs=1))
    assert sorted(p.name for p in out.iterdir()) == [
        "1_Pooling", "2_AngleEncoding", "README.md", "config_sentence_transformers.json", "encoder", "modules.json",
        "qcompress.json", "train_curve.png", "train_log.jsonl"]
    model = load_model(out)
    assert (model.config.head, model.similarity, model.dim, model.config.encoder_trained) == (
        "none", "fidelity", 32, True)
    angles = model.encode(["a wing"], convert_to_tensor=True)
    assert angles.shape == (1, 32) and float(angles.min()) >= 0 and float(angles.max()) <= torch.pi


def _weights(folder: Path) -> dict:
    out = {f"head.{k}": v for k, v in load_file(str(folder / "head.safetensors")).items()}
    if (folder / "encoder" / "model.safetensors").is_file():
        out.update({f"encoder.{k}": v for k, v in load_file(str(folder / "encoder" / "model.safetensors")).items()})
    return out


@pytest.mark.parametrize("layers", [0, 1], ids=["frozen", "trained-layers"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_encoder, beir, cache, tmp_path, layers):
    # 6 examples, batch 4: 2 steps per epoch (the last one short); 3 epochs; interrupted in the middle of epoch 2.
    kw = dict(train_layers=layers, head="linear" if layers else "quantum", epochs=3, batch_size=4, lr=1e-3,
              eval_split="test" if layers else None, in_batch_negatives=bool(layers))
    full = train(config(tiny_encoder, beir, cache, tmp_path / "full", **kw))

    stopped = []

    def stop(row):  # the library's callback: Ctrl-C after the 3rd step (mid-epoch 2)
        if row["kind"] == "step" and row["step"] == 3:
            stopped.append(row["step"])
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as info:
        train(config(tiny_encoder, beir, cache, out, **kw), callback=stop)
    assert stopped == [3] and info.value.step == 3 and not out.exists()
    files = sorted(p.name for p in info.value.checkpoint.iterdir())
    assert files == (["best.safetensors"] if layers else []) + [
        "optimizer.safetensors", "rng.safetensors", "state.json", "weights.safetensors"]
    train(config(tiny_encoder, beir, cache, out, resume=True, **kw))

    a, b = _weights(full), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if layers:
        assert any(k.startswith("encoder.") for k in a)
    log = lambda p: [json.loads(x) for x in (p / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    timing = ("examples_per_s", "head_share", "seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in log(full)] == [
        {k: v for k, v in r.items() if k not in timing} for r in log(out)]
    assert not checkpoint_dir(out).exists()


def ctrl_c_after(steps: int):
    """A callback that interrupts like Ctrl-C once `steps` steps of this call have been logged."""
    done = []

    def callback(row):
        done.extend([row["step"]] if row["kind"] == "step" else [])
        if len(done) == steps:
            raise KeyboardInterrupt

    return callback


def test_interruption_resume_and_changed_arguments(tiny_encoder, beir, cache, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(TrainingInterrupted):
        train(config(tiny_encoder, beir, cache, out, save_every=1), callback=ctrl_c_after(2))
    with pytest.raises(FileExistsError, match="pass resume to continue it, or overwrite to start over"):
        train(config(tiny_encoder, beir, cache, out))
    with pytest.raises(ValueError, match=r"differ: lr: 2e-05 -> 0\.001"):
        train(config(tiny_encoder, beir, cache, out, resume=True, lr=1e-3))
    # how long to run may change; a second interruption continues from the latest checkpoint
    with pytest.raises(TrainingInterrupted) as info:
        train(config(tiny_encoder, beir, cache, out, resume=True, epochs=3), callback=ctrl_c_after(1))
    assert info.value.step == 3
    train(config(tiny_encoder, beir, cache, out, resume=True, epochs=3, max_steps=7))
    assert json.loads((out / "qcompress.json").read_text())["training_result"]["steps"] == 7
    with pytest.raises(FileExistsError, match="holds a model; pass overwrite to replace it"):
        train(config(tiny_encoder, beir, cache, out))
    with pytest.raises(ValueError, match="no checkpoint"):
        train(config(tiny_encoder, beir, cache, tmp_path / "other", resume=True))


def test_resume_refuses_training_data_that_changed(tiny_encoder, cache, tmp_path):
    """Issue 27 item 2: a resume with other documents under the same path trained on a mix of the two sets."""
    data, out = write_beir(tmp_path / "data"), tmp_path / "m"
    with pytest.raises(TrainingInterrupted):
        train(config(tiny_encoder, data, cache, out, save_every=1), callback=ctrl_c_after(1))
    write_beir(data, docs={**DOCS, "d3": "pressure of another flow"})
    with pytest.raises(ValueError, match=rf"resume: the training data in {data} differs from the interrupted "
                                         r"run's \(documents: 12 rows, digest \w+ -> 12 rows, digest \w+\)"):
        train(config(tiny_encoder, data, cache, out, resume=True))
    write_beir(data)  # the same data again: the run continues
    done = train(config(tiny_encoder, data, cache, out, resume=True))
    recorded = json.loads((done / "qcompress.json").read_text())["training_result"]["training_data"]
    assert recorded["documents"]["count"] == 12 and recorded["judgements"]["count"] == 7


def test_train_layers_trains_exactly_the_last_layers(tiny_encoder, beir, cache, tmp_path):
    base = build_model(tiny_encoder, head="linear", dim=8)
    names = set_trainable_layers(base.encoder, 1)
    assert names and all(n.startswith("encoder.layer.2.") for n in names)
    assert all(p.requires_grad == (n in names) for n, p in base.encoder.named_parameters())

    out = train(config(tiny_encoder, beir, cache, tmp_path / "bec", head="linear", train_layers=1, lr=1e-3, epochs=1))
    trained = load_model(out).encoder.state_dict()
    before = build_model(tiny_encoder).encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], trained[k])}
    assert moved and all(k.startswith("encoder.layer.2.") for k in moved)
    layer = [k for k in before if k.startswith("encoder.layer.2.")]
    # every tensor of the last layer moved, except the attention key bias: softmax ignores a per-query constant
    assert set(layer) - moved <= {"encoder.layer.2.attention.self.key.bias"}

    with pytest.raises(ValueError, match="more than the 3 layers"):
        train(config(tiny_encoder, beir, cache, tmp_path / "x", train_layers=4))
    assert not (tmp_path / "x").exists() and not checkpoint_dir(tmp_path / "x").exists()


def _layer0_calls_in_steps(monkeypatch) -> list[int]:
    """Batch sizes of the calls of the encoder's first layer made inside training steps (not by mining or checks)."""
    from qcompress.encoder import transformer_layers
    from qcompress.training import loop

    calls, in_step, build, step = [], [], loop.build_model, loop._Run.step

    def build_counting(*args, **kw):
        model = build(*args, **kw)
        layer = transformer_layers(model.encoder)[0]
        layer.register_forward_pre_hook(lambda m, a, k: calls.append(len((a or (k["hidden_states"],))[0]))
                                        if in_step else None, with_kwargs=True)
        return model

    def counted_step(run, batch):
        in_step.append(1)
        try:
            step(run, batch)
        finally:
            in_step.clear()

    monkeypatch.setattr(loop, "build_model", build_counting)
    monkeypatch.setattr(loop._Run, "step", counted_step)
    return calls


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("dropout", [True, False], ids=["dropout", "no-dropout"])
def test_training_through_the_frozen_prefix_equals_full_steps(tiny_encoder, beir, cache, tmp_path, monkeypatch,
                                                              layers, dropout):
    """Issue 17: with frozen_prefix the frozen layers run once per text (alone) and steps run only the trained
    layers; the weights after 6 steps equal those of full forward passes within float round-off."""
    encoder = tiny_encoder
    if not dropout:
        encoder = str(tmp_path / "no-dropout")
        AutoModel.from_pretrained(tiny_encoder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) \
            .save_pretrained(encoder)
        AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(encoder)
    calls = _layer0_calls_in_steps(monkeypatch)
    kw = dict(encoder=encoder, head="linear", train_layers=layers, lr=1e-3, epochs=2, batch_size=2)
    with_prefix = train(config(tiny_encoder, beir, cache, tmp_path / "prefix", **kw))
    stored = list(calls)
    calls.clear()
    full = train(config(tiny_encoder, beir, cache, tmp_path / "full", frozen_prefix="off", **kw))
    assert set(stored) == {1} and len(stored) <= len(DOCS) + len(QUERIES)  # each text alone, at most once
    assert len(calls) == 2 * 6 and min(calls) > 1  # a batch of queries and one of documents per step

    result = lambda p: json.loads((p / "qcompress.json").read_text())["training_result"]  # noqa: E731
    assert result(with_prefix)["frozen_prefix"] is True and result(full)["frozen_prefix"] is False
    # The attention key bias has a zero gradient up to round-off (softmax ignores a per-query constant), which
    # Adam scales to steps of size lr whatever its sign: it is left out. Other elements with tiny gradients get the
    # same amplification of round-off (batched vs one-text frozen layers, thread-count-dependent reductions): seen
    # up to 1.2e-5 with 2 threads, against 1e-2 moved by another seed. The tolerance sits between the two.
    key_bias = "attention.self.key.bias"
    a, b = ({k: v for k, v in _weights(p).items() if not k.endswith(key_bias)} for p in (with_prefix, full))
    moved = _weights(train(config(tiny_encoder, beir, cache, tmp_path / "other", seed=8, **kw)))
    tolerance = 2e-4
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=tolerance, rtol=0) for k in a)
    assert not all(torch.allclose(a[k], moved[k], atol=tolerance, rtol=0) for k in a)  # the tolerance can fail
    losses = lambda p: [json.loads(x)["loss"] for x in (p / "train_log.jsonl").read_text().splitlines()]  # noqa
    assert losses(with_prefix) == pytest.approx(losses(full), rel=1e-5)  # logits are 20 x similarity


def test_frozen_prefix_on_disk_is_reused_by_a_later_run(tiny_encoder, beir, tmp_path, monkeypatch):
    kw = dict(head="linear", train_layers=1, lr=1e-3, epochs=1, frozen_prefix="disk")
    cache = tmp_path / "cache"
    first = train(config(tiny_encoder, beir, cache, tmp_path / "a", **kw))
    files = list((cache / "prefix").glob("*/*.safetensors"))
    assert 0 < len(files) <= len(DOCS) + len(QUERIES)
    calls = _layer0_calls_in_steps(monkeypatch)
    again = train(config(tiny_encoder, beir, cache, tmp_path / "b", **kw))
    assert calls == []  # every text's frozen-layer output came from disk
    a, b = _weights(first), _weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_keeps_the_best_epoch(tiny_encoder, beir, cache, tmp_path):
    out = train(config(tiny_encoder, beir, cache, tmp_path / "m", epochs=3, eval_split="test", head_lr=0.05))
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    validation = [r for r in rows if r["kind"] == "validation"]
    assert [r["epoch"] for r in validation] == [0, 1, 2, 3] and {r["protocol"] for r in validation} == {"full"}
    result = json.loads((out / "qcompress.json").read_text())["training_result"]
    best = max(validation[1:], key=lambda r: (r["ndcg_cut_10"], -r["epoch"]))  # epoch 0 is the untrained baseline
    assert result["best_epoch"] == best["epoch"] and result["best_ndcg_cut_10"] == best["ndcg_cut_10"]
    from qcompress.evaluation import evaluate

    again = evaluate(load_model(out), load_collection(str(beir), "test"), "full", top_k=100)
    assert again.metrics["ndcg_cut_10"] == pytest.approx(best["ndcg_cut_10"])


def test_max_steps_mid_epoch_still_validates(tiny_encoder, beir, cache, tmp_path):
    out = train(config(tiny_encoder, beir, cache, tmp_path / "m", max_steps=2, eval_split="test"))
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["validation", "step", "step", "validation"]
    assert rows[-1]["epoch"] == pytest.approx(2 / 3, abs=1e-3)  # 2 of 3 steps of the first epoch


def test_bad_arguments(tiny_encoder, beir, cache, tmp_path):
    for kw, message in [
        (dict(train_fraction=0.0), r"train_fraction must be in \(0, 1\], got 0.0"),
        (dict(train_fraction=1.5), "train_fraction must be in"),
        (dict(variant="XYZ"), "unknown variant"), (dict(negatives=0), "add in_batch_negatives"),
        (dict(negatives=20), "fewer than 20 negatives"), (dict(optimizer="sgd"), "adam or adamw"),
        (dict(nonsense=1), "unknown training argument"),
    ]:
        with pytest.raises(ValueError, match=message):
            train(config(tiny_encoder, beir, cache, tmp_path / "m", **kw))
        assert not (tmp_path / "m").exists() and not checkpoint_dir(tmp_path / "m").exists()


# -- the real encoder ------------------------------------------------------------------------------------------------


def _fixed_loss(model, collection, negatives, n: int = 32) -> float:
    """Cross-entropy of the authors' logits on the first n training examples (eval mode: no dropout)."""
    from qcompress.similarity import paired_scores

    ex = build_examples(collection, negatives, 3)
    q = model.encode([ex.query_texts[i] for i in ex.ex_query[:n].tolist()], convert_to_tensor=True)
    d = model.encode([ex.doc_texts[i] for i in ex.ex_docs[:n].reshape(-1).tolist()], convert_to_tensor=True)
    d = d.reshape(n, 4, -1)
    logits = 20 * paired_scores(q[:, None, :], d, model.similarity, log=False)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long)).item()


@pytest.mark.integration
def test_qbec_and_bec_train_on_cranfield_with_minilm(minilm_path, pooled_cache, tmp_path_factory):
    """QBEC (384 -> 128 qubits) and BEC on Cranfield's train split. Cost: the last layer only (--train-layers 1, not
    the variants' 4), 64 tokens, 3 negatives, 24 steps of 8. The negatives are mined once (QBEC's run) and read
    from the session's cache by BEC's run and the checks below (same encoder, same max length)."""
    cache = pooled_cache
    collection = load_collection("cranfield", "train")
    for variant in ("QBEC", "BEC"):
        out = tmp_path_factory.mktemp(variant) / "model"
        cfg = dict(output=str(out), variant=variant, encoder=minilm_path, train_layers=1, max_length=64, negatives=3,
                   batch_size=8, max_steps=24, cache_dir=str(cache), seed=42)
        train(cfg)
        model = load_model(out)
        assert (model.config.head, model.dim, model.config.encoder_trained) == (
            "quantum" if variant == "QBEC" else "linear", 128, True)
        assert model.encode(["what is a wing?"], convert_to_tensor=True).shape == (1, 128)
        torch.manual_seed(42)  # the untrained model of the same run: same seed, same head initialisation
        untrained = build_model(minilm_path, head=model.config.head, dim=128, similarity=model.similarity,
                                max_length=64, normalize=model.config.normalize)  # the variant's, not MiniLM's own
        negatives = mine_negatives(untrained, collection, 3, cache_dir=cache)
        before, after = _fixed_loss(untrained, collection, negatives), _fixed_loss(model, collection, negatives)
        assert after < before, (variant, before, after)
