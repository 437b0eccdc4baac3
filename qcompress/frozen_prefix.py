"""Evaluating encoders that trained only their last layers, without re-running the layers they left frozen.

A model trained with `--train-layers L` changed only the top L transformer layers of its encoder (and its
head): the embeddings and the layers below are its base encoder's, bit for bit. In eval mode (no dropout) the
hidden states entering layer N-L are then the same for the base encoder and for every model trained from it.
An experiment that evaluates many such models on one corpus (the recipes: 4 variants x 3 seeds, or 2 variants
x 6 training fractions x 3 seeds) computes them once per text and runs only the top L layers per model.

Keys: a digest of the frozen weights (everything of the encoder outside the top L layers), the tokenizer, the
max length and L, then the text. A model whose frozen part differs never sees another's hidden states. Replay
is checked once per key against a plain forward pass (a model whose layers pass state from one to the next,
such as T5's relative position bias, would fail that check and is simply run in full; so does a tokenizer that
pads on the left, which shifts a text's positions with its batch's length). Held in memory, float32,
one (tokens, hidden) tensor per text, up to `max_bytes`; texts beyond that are run in full.

Use: `prefixes = FrozenPrefixCache()`, then `prefixes.pool(model, texts, top_layers=1)` for each model trained
from the same base encoder: the first call runs the whole encoder, later ones only the last layer
(tests/test_frozen_prefix.py shows it with a tiny BERT).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn

from qcompress.cache import pool_texts, weights_digest
from qcompress.encoder import transformer_layers

__all__ = ["FrozenPrefixCache", "frozen_digest"]

DEFAULT_MAX_BYTES = 8 << 30
REPLAY_TOLERANCE = 1e-4  # max |difference| of pooled outputs, replay vs full forward (float32 round-off is ~1e-6)


class _Stop(Exception):
    """Raised by the capture hook: the top layers need not run when only their input is wanted."""


def frozen_digest(model, top_layers: int) -> str:
    """A digest of what decides the input of the top `top_layers` layers: every encoder weight outside them,
    the tokenizer and the max length."""
    layers = transformer_layers(model.encoder)
    top_ids = {id(layer) for layer in list(layers)[len(layers) - top_layers:]}
    top = tuple(name + "." for name, m in model.encoder.named_modules() if id(m) in top_ids)
    tok = model.tokenizer
    return weights_digest(model.encoder, type(tok).__name__, len(tok), getattr(tok, "padding_side", None),
                          model.max_length, top_layers, len(layers), skip=lambda name: name.startswith(top))


class FrozenPrefixCache:
    """Hidden states entering an encoder's trained top layers, per text, shared by models with equal frozen parts."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 64) -> None:
        self.max_bytes, self.batch_size = int(max_bytes), int(batch_size)
        self._states: dict[str, dict[str, Tensor]] = {}  # frozen digest -> text -> (tokens, hidden)
        self._replay_ok: dict[str, bool] = {}
        self.bytes = 0

    def pool(self, model, texts: Sequence[str], top_layers: int) -> Tensor:
        """Mean-pooled encoder outputs (len(texts), in_dim), float32 on the CPU, in input order, in eval mode:
        the same numbers as `model.pool` up to float round-off."""
        layers = transformer_layers(model.encoder)
        if not 0 < top_layers < len(layers):
            raise ValueError(f"top_layers must be between 1 and {len(layers) - 1}, got {top_layers}")
        # Left padding shifts a text's positions by its batch's length: its hidden states are not the text's own.
        key = frozen_digest(model, top_layers) if getattr(model.tokenizer, "padding_side", "right") == "right" \
            else None
        if key is None:
            return pool_texts(model, texts, batch_size=self.batch_size)
        states = self._states.setdefault(key, {})
        return pool_texts(model, texts, batch_size=self.batch_size,
                          pool_batch=lambda batch: self._pool_batch(model, batch, layers, top_layers, key, states))

    def _pool_batch(self, model, texts: list[str], layers: nn.ModuleList, top_layers: int, key: str,
                    states: dict[str, Tensor]) -> Tensor:
        if self._replay_ok.get(key) is False:  # replay was found wrong for this frozen part
            return model.pool(texts)
        batch = {k: v.to(model.device) for k, v in model.tokenize(texts).items()}
        mask = batch["attention_mask"].bool()
        missing = [i for i, t in enumerate(texts) if t not in states]
        if missing:
            hidden = self._capture(model, {k: v[missing] for k, v in batch.items()}, layers[len(layers) - top_layers])
            for row, i in enumerate(missing):
                state = hidden[row][mask[i]].float().cpu().clone()
                if self.bytes + state.numel() * 4 > self.max_bytes:
                    return model.pool(texts)  # over budget: run this batch in full
                states[texts[i]] = state
                self.bytes += state.numel() * 4
        dtype = next(model.encoder.parameters()).dtype
        prefix = torch.zeros(*mask.shape, states[texts[0]].shape[-1], device=model.device, dtype=dtype)
        for i, t in enumerate(texts):
            prefix[i][mask[i]] = states[t].to(model.device, dtype)
        pooled = self._replay(model, batch, prefix, layers, top_layers)
        if key not in self._replay_ok:  # first use of this frozen part: check replay against a full pass
            full = model.pool(texts)
            self._replay_ok[key] = bool((pooled - full).abs().max() <= REPLAY_TOLERANCE)
            return pooled if self._replay_ok[key] else full
        return pooled

    @staticmethod
    def _capture(model, batch: dict, first_top: nn.Module) -> Tensor:
        """Run the encoder up to the first top layer and return the hidden states entering it."""
        captured: list[Tensor] = []

        def hook(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        handle = first_top.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            model.encoder(**batch)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0]

    @staticmethod
    def _replay(model, batch: dict, prefix: Tensor, layers: nn.ModuleList, top_layers: int) -> Tensor:
        """Run only the top layers on the stored hidden states: the encoder sees a layer list holding just them
        (the embeddings still run: cheap), and the first of them gets the stored states as its input."""
        saved = layers._modules
        top = list(saved.values())[len(saved) - top_layers:]

        def hook(module, args, kwargs):
            if args:
                return (prefix,) + tuple(args[1:]), kwargs
            return args, dict(kwargs, hidden_states=prefix)

        handle = top[0].register_forward_pre_hook(hook, with_kwargs=True)
        layers._modules = OrderedDict((str(i), m) for i, m in enumerate(top))
        try:
            hidden = model.encoder(**batch).last_hidden_state
        finally:
            layers._modules = saved
            handle.remove()
        return model.pool_hidden(hidden, batch["attention_mask"])
