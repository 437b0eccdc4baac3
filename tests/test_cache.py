"""The pooled-output cache: same results as the model, no encoder work on a second pass, keyed by weights."""

import pytest
import torch

from qcompress.cache import PooledCache, encode, weights_digest
from qcompress.model import build_model

TEXTS = ["the wing flow", "heat transfer in a boundary layer", "pressure", "the wing flow"]


def test_cache_gives_model_encode_results_and_skips_the_encoder(tiny_encoder, tmp_path, monkeypatch):
    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    expected = model.encode(TEXTS, convert_to_tensor=True)
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
    assert torch.allclose(angles, fidelity.encode(TEXTS[:2], convert_to_tensor=True), atol=1e-5)
    assert torch.allclose(vectors, cosine.encode(TEXTS[:2], convert_to_tensor=True), atol=1e-5)


def test_weights_digest_changes_with_the_weights(tiny_encoder):
    model = build_model(tiny_encoder, head="none", max_length=32)
    before = weights_digest(model.encoder)
    with torch.no_grad():
        next(model.encoder.parameters())[0, 0] += 1e-3
    assert weights_digest(model.encoder) != before


def test_no_cache_is_model_encode(tiny_encoder):
    model = build_model(tiny_encoder, head="none", max_length=32)
    assert torch.equal(encode(model, TEXTS), model.encode(TEXTS, convert_to_tensor=True))
    assert encode(model, [], cache=None).shape == (0, 32)


def test_shards_are_memory_mapped_and_indexed_not_loaded_into_a_dict(tiny_encoder, tmp_path, monkeypatch):
    """Issue 19: the cache looks rows up by index in memory-mapped shards; only the rows asked for are read."""
    import numpy as np

    import qcompress.cache as cache_module

    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    texts = [f"text number {i}" for i in range(40)]
    cache = PooledCache(tmp_path, model)
    for start in range(0, 40, 10):  # four shards
        encode(model, texts[start : start + 10], cache=cache)
    assert len(list(tmp_path.glob("*/shard-*.safetensors"))) == 4
    monkeypatch.setattr(cache_module, "OPEN_SHARDS", 2)  # fewer open maps than shards: maps are reopened
    fresh = PooledCache(tmp_path, model)
    pooled, found = fresh.get([cache_module.text_key(t) for t in texts[::-1] + ["never added"]])
    assert found.tolist() == [True] * 40 + [False]
    assert torch.allclose(pooled[:40], cache_module.pool_texts(model, texts[::-1]), atol=1e-5)
    assert pooled[40].eq(0).all()
    assert len(fresh._open) <= 2
    assert all(isinstance(m, cache_module._StoredTensor) for maps in fresh._open.values() for m in maps)
    assert not any(isinstance(v, dict) and len(v) > 2 for v in vars(fresh).values())  # no dict of rows


def test_a_shard_is_read_by_the_safetensors_library_in_runs_of_the_rows_asked_for(tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    import qcompress.cache as cache_module

    path = tmp_path / "shard.safetensors"
    save_file({"pooled": torch.arange(300.0).reshape(100, 3)}, str(path))
    stored = cache_module._StoredTensor(path, "pooled")
    spans = []
    real = stored._slice
    stored._slice = type("Spy", (), {"__getitem__": lambda self, s: spans.append((s.start, s.stop)) or real[s]})()
    rows = np.array([0, 1, 2, 2, 18, 50, 99])
    assert stored.shape == (100, 3)
    assert np.array_equal(stored[rows], np.arange(300.0, dtype=np.float32).reshape(100, 3)[rows])
    assert spans == [(0, 19), (50, 51), (99, 100)]  # gaps up to RUN_GAP rows read through, longer ones skipped
    with pytest.raises(ValueError, match="damaged cache shard"):
        cache_module._StoredTensor(path, "checks")


def test_a_key_prefix_collision_is_settled_by_the_full_key(tiny_encoder, tmp_path):
    from qcompress.cache import text_key

    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    cache = PooledCache(tmp_path, model)
    real = text_key("a text")
    twin = real[:8] + bytes(8)  # same first 8 bytes (the index's hash), different key
    cache.add([real], torch.ones(1, model.in_dim))
    pooled, found = cache.get([twin, real])
    assert found.tolist() == [False, True] and pooled[1].eq(1).all()


def test_a_damaged_shard_is_named(tiny_encoder, tmp_path):
    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    encode(model, ["x"], cache=PooledCache(tmp_path, model))
    shard = next(tmp_path.glob("*/shard-*.safetensors"))
    shard.write_bytes(b"garbage")
    import pytest

    with pytest.raises(ValueError, match="damaged cache shard"):
        encode(model, ["x"], cache=PooledCache(tmp_path, model))


def _shard_data_offset(shard, name):
    """Where tensor `name`'s bytes start in a safetensors file."""
    import json

    raw = shard.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return 8 + size + json.loads(raw[8 : 8 + size])[name]["data_offsets"][0]


def test_an_altered_entry_is_refused_naming_its_shard(tiny_encoder, tmp_path):
    """Issue 27 item 6: an altered pooled-output shard was reused (angles off by 0.77 rad, exit 0). Each entry
    carries a checksum of its key and pooled row, compared when the row is read."""
    import pytest

    from qcompress.errors import InputError

    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    encode(model, TEXTS, cache=PooledCache(tmp_path, model))
    shard = next(tmp_path.glob("*/shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    at = _shard_data_offset(shard, "pooled") + 4 * model.in_dim + 8  # the second entry's third number
    data[at : at + 4] = torch.tensor([5.0]).numpy().tobytes()
    shard.write_bytes(bytes(data))
    intact = encode(model, TEXTS[:1], cache=PooledCache(tmp_path, model))  # the shard's other entries still serve
    assert torch.allclose(intact, torch.as_tensor(model.encode(TEXTS[:1])), atol=1e-5)
    with pytest.raises(InputError, match=rf"{shard}: damaged cache shard \(the entry in row 2 does not match its "
                                         r"checksum\); delete it \(the cache only saves time\)"):
        encode(model, TEXTS, cache=PooledCache(tmp_path, model))


def test_a_shard_without_checksums_is_not_read(tiny_encoder, tmp_path, monkeypatch):
    """A shard of an older qcompress (no checksums) is left out: its texts are encoded again."""
    from safetensors.torch import save_file

    from qcompress.cache import text_key

    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)
    cache = PooledCache(tmp_path, model)
    cache.folder.mkdir(parents=True)
    wrong = torch.full((1, model.in_dim), 7.0)
    save_file({"keys": torch.frombuffer(bytearray(text_key(TEXTS[0])), dtype=torch.uint8).reshape(1, 16),
               "pooled": wrong}, str(cache.folder / "shard-old.safetensors"))
    assert torch.allclose(encode(model, TEXTS[:1], cache=cache), torch.as_tensor(model.encode(TEXTS[:1])), atol=1e-5)
