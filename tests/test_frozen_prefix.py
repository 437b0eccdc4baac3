"""Replaying stored hidden states through only the trained top layers gives the full forward pass's outputs."""

import pytest
import torch

from qcompress import frozen_prefix
from qcompress.encoder import transformer_layers
from qcompress.frozen_prefix import FrozenPrefix, FrozenPrefixCache, frozen_digest
from qcompress.model import build_model

TEXTS = ["the wing flow", "heat transfer in a boundary layer at high speed", "pressure", "the wing flow",
         "what are the heat and pressure of the flow on a wing with a boundary layer", "a"]


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Stand-in for training: change a module's weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def _model(encoder: str):
    return build_model(encoder, head="none", similarity="cosine", max_length=32)


def _full(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.pool(TEXTS)


def _counting(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("top_layers", [1, 2])
def test_replay_equals_the_full_forward_pass_and_skips_the_frozen_layers(tiny_encoder, top_layers):
    cache = FrozenPrefixCache(batch_size=4)  # batches of mixed lengths: padding must not matter
    base = _model(tiny_encoder)
    assert torch.allclose(cache.pool(base, TEXTS, top_layers), _full(base), atol=1e-5)

    trained = _model(tiny_encoder)
    for layer in list(transformer_layers(trained.encoder))[-top_layers:]:
        _perturb(layer, seed=1)
    assert frozen_digest(trained, top_layers) == frozen_digest(base, top_layers)
    bottom = _counting(transformer_layers(trained.encoder)[0])
    trained.train()
    pooled = cache.pool(trained, TEXTS, top_layers)
    assert bottom == []  # the frozen layers did not run again
    assert trained.training  # the model's mode is restored
    assert not torch.allclose(pooled, _full(base), atol=1e-3)  # the top layers did change the output
    assert torch.allclose(pooled, _full(trained), atol=1e-5)


def test_a_different_frozen_part_never_reuses_hidden_states(tiny_encoder):
    cache = FrozenPrefixCache()
    cache.pool(_model(tiny_encoder), TEXTS, 1)
    other = _model(tiny_encoder)
    _perturb(transformer_layers(other.encoder)[0], seed=2)  # a frozen layer differs
    bottom = _counting(transformer_layers(other.encoder)[0])
    assert torch.allclose(cache.pool(other, TEXTS, 1), _full(other), atol=1e-5)
    assert bottom  # computed afresh
    shorter = build_model(tiny_encoder, head="none", similarity="cosine", max_length=8)
    assert frozen_digest(shorter, 1) != frozen_digest(other, 1)


def test_distilbert_layout_and_left_padding(tmp_path, tiny_encoder):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    folder = tmp_path / "tiny-distilbert"
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=3, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64)).save_pretrained(folder)
    cache = FrozenPrefixCache(batch_size=4)
    cache.pool(_model(str(folder)), TEXTS, 1)
    trained = _model(str(folder))
    _perturb(transformer_layers(trained.encoder)[-1], seed=3)
    bottom = _counting(transformer_layers(trained.encoder)[0])
    pooled = cache.pool(trained, TEXTS, 1)
    assert bottom == []
    assert torch.allclose(pooled, _full(trained), atol=1e-5)
    bottom.clear()
    # Left padding shifts a text's positions with the batch's length: its hidden states are not a function of
    # the text alone, so nothing is stored and the whole encoder runs.
    trained.tokenizer.padding_side = "left"
    stored = cache.bytes
    left = cache.pool(trained, TEXTS, 1)
    assert bottom and cache.bytes == stored
    longest = max(range(len(TEXTS)), key=lambda i: len(trained.tokenizer(TEXTS[i])["input_ids"]))
    with torch.no_grad():  # the longest text has no padding in its batch
        assert torch.allclose(left[longest], trained.pool([TEXTS[longest]])[0], atol=1e-5)


def test_falls_back_to_the_full_pass_when_replay_disagrees_and_recomputes_beyond_memory(tiny_encoder, monkeypatch):
    model = _model(tiny_encoder)
    expected = _full(model)
    full = FrozenPrefixCache(max_bytes=0)  # nothing fits: the frozen layers run again on every call
    assert torch.allclose(full.pool(model, TEXTS, 1), expected, atol=1e-6)
    bottom = _counting(transformer_layers(model.encoder)[0])
    assert torch.allclose(full.pool(model, TEXTS, 1), expected, atol=1e-6)
    assert full.bytes == 0 and len(bottom) == len(set(TEXTS))  # each distinct text on its own
    monkeypatch.setattr(frozen_prefix, "REPLAY_TOLERANCE", -1.0)  # every replay "disagrees"
    replays = []
    replay = FrozenPrefix._replay
    monkeypatch.setattr(FrozenPrefix, "_replay", lambda *a: replays.append(1) or replay(*a))
    cache = FrozenPrefixCache(batch_size=2)  # the batches after the first failed check run in full too
    assert torch.allclose(cache.pool(model, TEXTS, 1), expected, atol=1e-6)
    assert cache._replay_ok == {frozen_digest(model, 1): False}
    assert replays == [1]  # replayed once, for the check; never again


def test_top_layers_must_leave_a_frozen_layer(tiny_encoder):
    with pytest.raises(ValueError, match="top_layers must be between 1 and 2"):
        FrozenPrefixCache().pool(_model(tiny_encoder), TEXTS, 3)


def _frozen_eval_top_train(model, top_layers: int) -> None:
    """What training does: the top layers train (dropout), the rest runs in eval mode."""
    model.eval()
    for layer in list(transformer_layers(model.encoder))[-top_layers:]:
        layer.train()
        for p in layer.parameters():
            p.requires_grad_(True)


@pytest.mark.parametrize("top_layers", [1, 2])
def test_a_bound_prefix_gives_the_loss_and_gradients_of_a_full_pass_with_dropout(tiny_encoder, top_layers):
    model = _model(tiny_encoder)
    for p in model.parameters():
        p.requires_grad_(False)
    _frozen_eval_top_train(model, top_layers)
    prefix = FrozenPrefixCache().bind(model, top_layers)
    trained = [p for p in model.parameters() if p.requires_grad]
    results = []
    for pool in (model.pool, prefix.pool, prefix.pool):  # full; replay computing the states; replay reading them
        torch.manual_seed(0)  # the same dropout masks: they are drawn in the top layers only, over the same shapes
        loss = (pool(TEXTS) ** 2).mean()
        results.append((loss.detach(), torch.autograd.grad(loss, trained)))
    (full_loss, full_grads), *replays = results
    assert torch.equal(replays[0][0], replays[1][0])
    for loss, grads in replays:
        assert torch.allclose(loss, full_loss, atol=1e-6, rtol=1e-6)
        assert all(torch.allclose(g, f, atol=1e-5, rtol=1e-4) for g, f in zip(grads, full_grads))
    torch.manual_seed(1)
    assert not torch.allclose(prefix.pool(TEXTS), model.pool(TEXTS), atol=1e-3)  # other masks: dropout is on


def test_stored_states_do_not_depend_on_which_texts_shared_a_batch(tiny_encoder):
    """Each text's frozen layers run on that text alone: the bits a resumed run or another process recomputes."""
    model = _model(tiny_encoder)
    together, apart = FrozenPrefixCache().bind(model, 1), FrozenPrefixCache().bind(model, 1)
    states = together.states(TEXTS)
    again = [apart.states([t])[0] for t in reversed(TEXTS)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(states, again))
    assert [s.shape[0] for s in states] == [len(model.tokenizer(t)["input_ids"]) for t in TEXTS]


def test_states_on_disk_are_read_back_by_another_cache(tiny_encoder, tmp_path):
    model = _model(tiny_encoder)
    first = FrozenPrefixCache(folder=tmp_path).bind(model, 1)
    states = first.states(TEXTS)
    assert len(list(tmp_path.glob("*/*.safetensors"))) == len(set(TEXTS))
    bottom = _counting(transformer_layers(model.encoder)[0])
    again = FrozenPrefixCache(max_bytes=0, folder=tmp_path).bind(model, 1).states(TEXTS)
    assert bottom == [] and all(torch.equal(a, b) for a, b in zip(states, again))


def test_an_altered_or_damaged_file_on_disk_is_refused_naming_it(tiny_encoder, tmp_path):
    """Issue 27 items 6 and 9: an altered frozen-prefix file changed a trained model silently, and a damaged one was
    a traceback. Each file records the digest of its hidden states, compared when it is read."""
    from safetensors.torch import save_file

    from qcompress.errors import InputError

    model = _model(tiny_encoder)
    FrozenPrefixCache(folder=tmp_path).bind(model, 1).states(TEXTS)
    path = sorted(tmp_path.glob("*/*.safetensors"))[0]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # a bit of the last number's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"{path}: damaged frozen-prefix file \(its hidden states do not match "
                                         r"their digest\); delete it \(the cache only saves time\)"):
        FrozenPrefixCache(max_bytes=0, folder=tmp_path).bind(model, 1).states(TEXTS)
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match=rf"{path}: damaged frozen-prefix file \("):
        FrozenPrefixCache(max_bytes=0, folder=tmp_path).bind(model, 1).states(TEXTS)
    save_file({"hidden": torch.ones(3, 32)}, str(path))  # no digest (an older qcompress): computed again
    states = FrozenPrefixCache(max_bytes=0, folder=tmp_path).bind(model, 1).states(TEXTS)
    assert all(not torch.equal(state, torch.ones(3, 32)) for state in states)
