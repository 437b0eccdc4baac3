"""The distilled quantum head: trained label-free on the FIT documents, its angles stored at a few bits per qubit.

Training is `qcompress train --loss distill --head quantum --mixing pca` (`qcompress.training.train`): the head
learns to keep the frozen encoder's own cosine similarities between the fit documents (each document its own
pseudo-query against 512 random others), with the input rotated onto the fit documents' principal axes first;
batch 128 and head learning rate 3e-3 as in recipes/frontier.toml, `head_steps` steps (the bench's setting; a
seed per run: the head's initialisation and the data order).

Storage: B bytes per vector at b bits per qubit is 8 B / b qubits. How angles are stored at b bits is an
`AngleCodec`, registered by bits in `ANGLE_CODECS`:
    8 bits       `qcompress.quantization`'s uint8 codes round(theta / pi * 255), searched exactly by log-fidelity
                 with the float32 query angles (`qcompress.search.topk(..., corpus_codes=True)`);
    1, 2, 3, 4   low-bit angle codes (`qcompress.codes.AngleCodes`, SPEC §7): per-qubit Lloyd-Max levels fitted
                 on the fit documents' angles after training (post-training quantization: quantization-aware
                 training, `train --bits`, is measured by benchmarks/lowbit_training.py), searched exactly by
                 `qcompress.codes.topk` with the float32 query angles.
Every registered width adds its (qubits, bits) split to each budget; a head trained for a number of qubits is
reused by every width that needs it. Heads of fewer than `MIN_QUBITS` qubits (or half the input's size, if that is
smaller) are not trained: in the first inductive Cranfield bench, heads of 16-48 qubits at 8 bits kept 0.51-0.71 of
the float32 top 10, where PCA with scalar codes of the same bytes kept 0.69-0.84, and each head costs a training
per seed. Heads as wide as the input (no compression step) are not built either.

Example:
    >>> head_splits(16, 384)
    [(64, 2), (128, 1)]
    >>> head_splits(64, 384)
    [(64, 8), (128, 4), (256, 2)]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from qcompress.bench.methods.base import FitContext, Refusal, Setting
from qcompress.codes import AngleCodes
from qcompress.bench.topk import search_excluding
from qcompress.cache import project_pooled
from qcompress.mixing import mixing_fitted_numbers
from qcompress.quantization import quantize_angles
from qcompress.search import topk
from qcompress.search.codes import topk as codes_topk

__all__ = ["HEAD", "AngleCodec", "ANGLE_CODECS", "register_angle_codec", "unregister_angle_codec", "head_splits",
           "HEAD_BATCH_SIZE", "HEAD_LR", "MIN_QUBITS", "LOW_BITS"]

HEAD_BATCH_SIZE = 128  # recipes/frontier.toml's distilled heads
HEAD_LR = 3e-3
MIXING = "pca"
MIN_QUBITS = 64  # narrower heads are not trained (module docstring)
LOW_BITS = (1, 2, 3, 4)  # widths of the fitted low-bit codes the bench registers


@dataclass(frozen=True)
class AngleCodec:
    """How angles are stored at `bits` bits per qubit: `fit(fit angles) -> state`, `encode(state, angles) ->
    stored codes`, `topk(query angles, codes, state, k) -> (scores, indices)` (exact by log-fidelity, best first,
    ties to the lower index)."""

    bits: int
    fit: Callable[[Tensor], Any]
    encode: Callable[[Any, Tensor], Any]
    topk: Callable[[Tensor, Any, Any, int], tuple[Tensor, Tensor]] | None


def _uint8_topk(query_angles: Tensor, codes: Tensor, state: Any, k: int) -> tuple[Tensor, Tensor]:
    return topk(query_angles, codes, k, corpus_codes=True)


ANGLE_CODECS: dict[int, AngleCodec] = {
    8: AngleCodec(8, fit=lambda angles: None, encode=lambda state, angles: quantize_angles(angles),
                  topk=_uint8_topk),
}


def _low_bit(bits: int) -> AngleCodec:
    """Fitted low-bit codes (qcompress.codes): levels fitted on the fit documents' angles, exact top-k on codes."""
    return AngleCodec(bits, fit=lambda angles: AngleCodes.fit(angles, bits),
                      encode=lambda codec, angles: codec.encode(angles),
                      topk=lambda query_angles, codes, codec, k: codes_topk(query_angles, codes, codec, k))


ANGLE_CODECS.update({bits: _low_bit(bits) for bits in LOW_BITS})


def register_angle_codec(codec: AngleCodec) -> None:
    """Add (or replace) the codec of `codec.bits` bits per qubit."""
    ANGLE_CODECS[int(codec.bits)] = codec


def unregister_angle_codec(bits: int) -> None:
    ANGLE_CODECS.pop(int(bits), None)


def head_splits(budget: int, dim: int, min_qubits: int = MIN_QUBITS) -> list[tuple[int, int]]:
    """(qubits, bits) with qubits * bits = 8 * budget for each registered codec, most bits first, and
    min(min_qubits, dim / 2) <= qubits < dim."""
    total, lowest = 8 * budget, min(min_qubits, dim // 2)
    return [(total // bits, bits) for bits in sorted(ANGLE_CODECS, reverse=True)
            if total % bits == 0 and lowest <= total // bits < dim]


class HeadFitted:
    """A trained head (its model folder loaded) and the codec its angles are stored with."""

    def __init__(self, model, codec: AngleCodec, fit_pooled: Tensor) -> None:
        self.model, self.codec = model, codec
        self.trained_parameters = sum(p.numel() for p in model.head.parameters())
        self.fitted_numbers = self.trained_parameters + mixing_fitted_numbers(model.config.mixing, model.in_dim)
        self.state = codec.fit(self.angles(fit_pooled))

    def angles(self, pooled: Tensor) -> Tensor:
        return project_pooled(self.model, pooled)

    def encode(self, docs: Tensor) -> Any:
        return self.codec.encode(self.state, self.angles(docs))

    def search(self, queries: Tensor, stored: Any, k: int, exclude: Tensor | None = None) -> Tensor:
        query_angles = self.angles(queries)  # float32: only the documents are coded
        return search_excluding(lambda kk: self.codec.topk(query_angles, stored, self.state, kk), k, exclude)[1]

    def resident_bytes(self, stored: Any) -> int:
        return stored.element_size() * stored.numel() if isinstance(stored, Tensor) else int(stored.nbytes)


def _fit_file(context: FitContext) -> Path:
    """The fit documents as JSONL (what `train --dataset` reads), written once per run."""
    path = Path(context.work_dir) / "fit-documents.jsonl"
    if not path.is_file():
        path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n"
                                for i, t in zip(context.fit_ids, context.fit_texts)))
    return path


def train_head(qubits: int, seed: int, context: FitContext) -> Path:
    """The model folder of a head of `qubits` qubits distilled on the fit documents with `seed` (trained once
    per run: a second width of the same head reuses it)."""
    from qcompress.training import train

    folder = Path(context.work_dir) / f"head-{qubits}-seed{seed}"
    if (folder / "qcompress.json").is_file():
        return folder
    train({"loss": "distill", "head": "quantum", "mixing": MIXING, "dim": qubits, "batch_size": HEAD_BATCH_SIZE,
           "head_lr": HEAD_LR, "epochs": 1 << 20, "max_steps": context.head_steps, "pseudo_queries": "documents",
           "dataset": str(_fit_file(context)), "encoder": context.encoder, "max_length": context.max_length,
           "cache_dir": str(context.cache_dir) if context.cache_dir else None, "device": context.device,
           "seed": seed, "output": str(folder), "store_encoder": context.store_encoder})
    return folder


class _Head:
    name = "head"
    randomised = True
    about = ("quantum head distilled label-free on the fit documents (pca mixing), angles stored at 1-4 bits per "
             "qubit (fitted levels) or 8 (uniform), exact log-fidelity with float32 query angles")

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        found = [Setting(self.name, (("qubits", q), ("bits", b))) for q, b in head_splits(budget, dim)]
        return found or [Refusal(self.name, budget, f"{8 * budget} bits make no head of {min(MIN_QUBITS, dim // 2)} "
                                                    f"to {dim - 1} qubits at a registered width "
                                                    f"({', '.join(map(str, sorted(ANGLE_CODECS)))} bits)")]

    def fixed(self, dim: int) -> list[Setting]:
        return []

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext) -> HeadFitted:
        from qcompress.model import load_model

        bits = setting.param("bits")
        if bits not in ANGLE_CODECS:
            raise ValueError(f"no angle codec of {bits} bits per qubit is registered")
        folder = train_head(setting.param("qubits"), int(seed or 0), context)
        model = load_model(folder, device=context.device or "cpu")
        with torch.no_grad():
            return HeadFitted(model, ANGLE_CODECS[bits], fit_pooled)


HEAD = _Head()
