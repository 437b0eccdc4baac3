"""The pooled-output cache: same results as the model, no encoder work on a second pass, keyed by weights."""

import torch

from qcompress.cache import PooledCache, encode, weights_digest
from qcompress.model import build_model

TEXTS = ["the wing flow", "heat transfer in a boundary layer", "pressure", "the wing flow"]


def test_cache_gives_model_encode_results_and_skips_the_encoder(tiny_encoder, tmp_path, monkeypatch):
    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    expected = model.encode(TEXTS)
    cache = PooledCache(tmp_path, model)
    first = encode(model, TEXTS, cache=cache, batch_size=2)
    assert torch.allclose(first, expected, atol=1e-5)
    assert len(cache) == 3  # the repeated text is stored once
    shards = list(tmp_path.glob("*/shard-*.safetensors"))
    assert len(shards) == 1

    calls = []
    monkeypatch.setattr(model, "pool", lambda texts: calls.append(texts))  # must not run again
    done = []
    again = encode(model, TEXTS, cache=PooledCache(tmp_path, model), on_batch=done.append)  # fresh: reads disk
    assert calls == [] and sum(done) == len(TEXTS)
    assert torch.equal(again, first)


def test_heads_share_the_encoder_entry_but_other_settings_do_not(tiny_encoder, tmp_path):
    cosine = build_model(tiny_encoder, head="none", similarity="cosine", max_length=32)
    fidelity = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    shorter = build_model(tiny_encoder, head="none", similarity="cosine", max_length=16)
    assert PooledCache(tmp_path, cosine).folder == PooledCache(tmp_path, fidelity).folder
    assert PooledCache(tmp_path, cosine).folder != PooledCache(tmp_path, shorter).folder
    vectors = encode(cosine, TEXTS[:2], cache=PooledCache(tmp_path, cosine))
    angles = encode(fidelity, TEXTS[:2], cache=PooledCache(tmp_path, fidelity))
    assert torch.allclose(angles, fidelity.encode(TEXTS[:2]), atol=1e-5)
    assert torch.allclose(vectors, cosine.encode(TEXTS[:2]), atol=1e-5)


def test_weights_digest_changes_with_the_weights(tiny_encoder):
    model = build_model(tiny_encoder, head="none", max_length=32)
    before = weights_digest(model.encoder)
    with torch.no_grad():
        next(model.encoder.parameters())[0, 0] += 1e-3
    assert weights_digest(model.encoder) != before


def test_no_cache_is_model_encode(tiny_encoder):
    model = build_model(tiny_encoder, head="none", max_length=32)
    assert torch.equal(encode(model, TEXTS), model.encode(TEXTS))
    assert encode(model, [], cache=None).shape == (0, 32)
