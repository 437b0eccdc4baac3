"""Running only the trained top layers of an encoder on stored hidden states: for evaluation and for training.

A model trained with `--train-layers L` changes only the top L transformer layers of its encoder (and its head):
the embeddings and the layers below are its base encoder's, bit for bit. Without dropout in those frozen layers,
the hidden states entering layer N-L are a function of the text alone, the same for the base encoder and for
every model trained from it. They are computed once per text and only the top L layers run per use:

- evaluation: an experiment that evaluates many such models on one corpus (the recipes: 4 variants x 3 seeds)
  calls `prefixes.pool(model, texts, top_layers=1)` for each model; the first call runs the whole encoder, later
  ones only the last layer;
- training (qcompress.training): `prefixes.bind(model, L)` gives a `FrozenPrefix` whose `pool(texts)` is
  `model.pool(texts)` for one batch, gradients and dropout in the top layers included, at the cost of the top
  layers only (forward and backward).

Each text's hidden states are computed on their own (a batch of one, no padding), so they do not depend on
which texts shared a batch: a resumed training run, or another run reading them from disk, gets the same bits.
They are stored as float32 (tokens, hidden) tensors, in memory up to `max_bytes`, and with a `folder` also on
disk (one safetensors file per text, recording the digest of its dtype, shape and bytes in its metadata: a file
that does not match it, or cannot be read, is refused in one line naming it; a file without one, from an older
qcompress, is computed again and rewritten); a text that fits nowhere is computed again when needed.

Keys: a digest of the frozen weights (everything of the encoder outside the top L layers), the tokenizer, the
max length and L, then the text. A model whose frozen part differs never sees another's hidden states. Replay
is checked once per key against a plain forward pass (a model whose layers pass state from one to the next,
such as T5's relative position bias, would fail that check and is simply run in full; so does a tokenizer that
pads on the left, which shifts a text's positions with its batch's length).

tests/test_frozen_prefix.py shows both uses with a tiny BERT.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from qcompress.atomic import atomic_file
from qcompress.cache import pool_texts, text_key, weights_digest
from qcompress.encoder import transformer_layers
from qcompress.errors import InputError
from qcompress.integrity import bytes_digest

__all__ = ["FrozenPrefixCache", "FrozenPrefix", "frozen_digest", "state_digest"]

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


@contextlib.contextmanager
def _all_eval(module: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block, then each back to its own mode (a training model mixes them:
    frozen layers in eval mode, trained layers in train mode)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def state_digest(state: Tensor) -> str:
    """The digest a frozen-prefix file records for its hidden states: of their dtype, shape and bytes.

    Example:
        >>> state_digest(torch.zeros(2, 3)) == state_digest(torch.zeros(3, 2))
        False
    """
    t = state.detach().cpu().contiguous()
    return bytes_digest(f"{t.dtype}:{tuple(t.shape)}\0".encode(), t.view(torch.uint8).numpy())


def _read_state(path: Path) -> Tensor | None:
    """The hidden states stored at `path`, checked against their digest; None for a file of an older qcompress
    (no digest: computed again). A damaged or altered file is an `InputError` naming it."""
    def damaged(why: str) -> InputError:
        return InputError(f"{path}: damaged frozen-prefix file ({why}); delete it (the cache only saves time)")

    try:
        with safe_open(str(path), "pt") as stored:
            recorded = (stored.metadata() or {}).get("digest")
            state = stored.get_tensor("hidden")
    except (OSError, SafetensorError) as err:
        raise damaged(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    if recorded is None:
        return None
    if state.dtype != torch.float32 or state.ndim != 2 or state_digest(state) != recorded:
        raise damaged("its hidden states do not match their digest")
    return state


class FrozenPrefixCache:
    """Hidden states entering an encoder's trained top layers, per text, shared by models with equal frozen parts.

    `folder`: also keep them on disk there (FOLDER/<frozen digest>/<text key>.safetensors), for later runs.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 64,
                 folder: str | os.PathLike | None = None) -> None:
        self.max_bytes, self.batch_size = int(max_bytes), int(batch_size)
        self.folder = Path(folder) if folder is not None else None
        self._states: dict[str, dict[str, Tensor]] = {}  # frozen digest -> text -> (tokens, hidden)
        self._replay_ok: dict[str, bool] = {}
        self.bytes = 0

    def bind(self, model, top_layers: int) -> FrozenPrefix | None:
        """The frozen prefix of `model` below its top `top_layers` layers, or None where replay cannot apply (a
        tokenizer that pads on the left). The frozen part must not change while the handle is used."""
        layers = transformer_layers(model.encoder)
        if not 0 < top_layers < len(layers):
            raise ValueError(f"top_layers must be between 1 and {len(layers) - 1}, got {top_layers}")
        # Left padding shifts a text's positions by its batch's length: its hidden states are not the text's own.
        if getattr(model.tokenizer, "padding_side", "right") != "right":
            return None
        return FrozenPrefix(self, model, top_layers, frozen_digest(model, top_layers))

    def pool(self, model, texts: Sequence[str], top_layers: int) -> Tensor:
        """Mean-pooled encoder outputs (len(texts), in_dim), float32 on the CPU, in input order, in eval mode:
        the same numbers as `model.pool` up to float round-off."""
        prefix = self.bind(model, top_layers)
        if prefix is None:
            return pool_texts(model, texts, batch_size=self.batch_size)
        return pool_texts(model, texts, batch_size=self.batch_size, pool_batch=prefix.pool_checked)

    # -- the store -------------------------------------------------------------------------------------------------

    def _file(self, key: str, text: str) -> Path | None:
        return self.folder / key / f"{text_key(text).hex()}.safetensors" if self.folder is not None else None

    def _get(self, key: str, text: str) -> Tensor | None:
        state = self._states.get(key, {}).get(text)
        path = self._file(key, text)
        if state is None and path is not None and path.is_file():
            state = _read_state(path)
            if state is not None:
                self._keep(key, text, state)
        return state

    def _put(self, key: str, text: str, state: Tensor) -> None:
        path = self._file(key, text)
        if path is not None:
            with atomic_file(path) as tmp:
                save_file({"hidden": state}, str(tmp), metadata={"digest": state_digest(state)})
        self._keep(key, text, state)

    def _keep(self, key: str, text: str, state: Tensor) -> None:
        size = state.numel() * state.element_size()
        if self.bytes + size <= self.max_bytes:
            self._states.setdefault(key, {})[text] = state
            self.bytes += size


class FrozenPrefix:
    """One model's frozen part below its top layers, bound to a FrozenPrefixCache (from `FrozenPrefixCache.bind`)."""

    def __init__(self, cache: FrozenPrefixCache, model, top_layers: int, key: str) -> None:
        self.cache, self.model, self.top_layers, self.key = cache, model, top_layers, key
        self.layers = transformer_layers(model.encoder)

    def pool(self, texts: Sequence[str]) -> Tensor:
        """`model.pool(texts)` as one batch, running only the top layers on the stored hidden states: in the
        model's mode (dropout where its top layers train), with gradients for the top layers' parameters."""
        model = self.model
        batch = {k: v.to(model.device) for k, v in model.tokenize(list(texts)).items()}
        mask = batch["attention_mask"].bool()
        states = self.states(texts)
        dtype = next(model.encoder.parameters()).dtype
        # Padding rows stay zero: attention masks them out and pooling skips them, as in a full pass.
        prefix = torch.zeros(*mask.shape, states[0].shape[-1], device=model.device, dtype=dtype)
        for i, state in enumerate(states):
            prefix[i][mask[i]] = state.to(model.device, dtype)
        return self._replay(batch, prefix)

    def replays(self, texts: Sequence[str]) -> bool:
        """Whether replay gives the full forward pass's pooled outputs on `texts` (within REPLAY_TOLERANCE);
        checked once per frozen part, then remembered."""
        if self.key not in self.cache._replay_ok:
            with _all_eval(self.model), torch.no_grad():
                gap = (self.pool(texts) - self.model.pool(list(texts))).abs().max()
            self.cache._replay_ok[self.key] = bool(gap <= REPLAY_TOLERANCE)
        return self.cache._replay_ok[self.key]

    def pool_checked(self, texts: list[str]) -> Tensor:
        """`pool`, or the full forward pass where replay was found wrong for this frozen part (evaluation)."""
        return self.pool(texts) if self.replays(texts) else self.model.pool(texts)

    def states(self, texts: Sequence[str]) -> list[Tensor]:
        """The (tokens, hidden) states entering the top layers, per text: stored, or computed from the text alone."""
        found = [self.cache._get(self.key, t) for t in texts]
        missing = {t: None for t, state in zip(texts, found) if state is None}
        if missing:
            computed = dict(zip(missing, self._capture(list(missing))))
            for text, state in computed.items():
                self.cache._put(self.key, text, state)
            found = [state if state is not None else computed[t] for t, state in zip(texts, found)]
        return found

    def _capture(self, texts: list[str]) -> list[Tensor]:
        """Run the frozen part on each text alone (eval mode, no gradients) and keep what enters the top layers."""
        model, captured = self.model, []

        def hook(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        first_top, handle = self.layers[len(self.layers) - self.top_layers], None
        try:  # a Ctrl-C anywhere in here leaves the model as it was
            handle = first_top.register_forward_pre_hook(hook, with_kwargs=True)
            with _all_eval(model.encoder), torch.no_grad():
                for text in texts:
                    batch = {k: v.to(model.device) for k, v in model.tokenize([text]).items()}
                    try:
                        model.encoder(**batch)
                    except _Stop:
                        pass
        finally:
            if handle is not None:
                handle.remove()
        return [hidden[0].float().cpu().clone() for hidden in captured]

    def _replay(self, batch: dict, prefix: Tensor) -> Tensor:
        """Run only the top layers on `prefix`: the encoder sees a layer list holding just them (the embeddings
        still run: cheap, and frozen), and the first of them gets the stored states as its input."""
        model, layers = self.model, self.layers
        saved = layers._modules
        top = list(saved.values())[len(saved) - self.top_layers:]

        def hook(module, args, kwargs):
            if args:
                return (prefix,) + tuple(args[1:]), kwargs
            return args, dict(kwargs, hidden_states=prefix)

        handle = None
        try:  # a Ctrl-C anywhere in here leaves the model as it was
            handle = top[0].register_forward_pre_hook(hook, with_kwargs=True)
            layers._modules = OrderedDict((str(i), m) for i, m in enumerate(top))
            hidden = model.encoder(**batch).last_hidden_state
        finally:
            layers._modules = saved
            if handle is not None:
                handle.remove()
        return model.pool_hidden(hidden, batch["attention_mask"]).float()
