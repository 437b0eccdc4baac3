"""Head "linear": the paper's classical baseline (SPEC §4), Linear(in_dim, out_dim) + tanh, compared by cosine (or,
scaled to [0, pi], by fidelity). Its sentence-transformers modules: Dense(tanh), or Dense(identity) then
AngleEncoding (tanh(Wx + b) * pi/2 + pi/2).

Example:
    >>> LinearHeadKind().describe(type("Config", (), {"in_dim": 384, "dim": 128})())
    'a linear head (Linear + tanh, 49,280 parameters)'
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from qcompress.heads.base import HeadKind, StModule, angle_encoding_module, compares_angles
from qcompress.mixing import InputMixing
from qcompress.heads import sizes
from qcompress.heads.sizes import check_sizes as _check_sizes, classical_head_num_parameters  # re-exported
from qcompress.similarity.base import ANGLES, Similarity

__all__ = ["ClassicalHead", "classical_head_num_parameters", "LinearHeadKind"]

_TANH, _IDENTITY = "torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"


class ClassicalHead(nn.Module):
    """The paper's classical baseline: Linear(in_dim, out_dim) + tanh, compared by cosine.

    Example:
        >>> head = ClassicalHead(768, 256)
        >>> sum(p.numel() for p in head.parameters())
        196864
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        _check_sizes(in_dim, out_dim)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"ClassicalHead expects vectors with last dimension {self.in_dim}, got shape {tuple(x.shape)}"
            )
        return torch.tanh(self.linear(x))


class LinearHeadKind(HeadKind):
    """A `ClassicalHead`: vectors in [-1, 1] for cosine, those mapped to angles x * pi/2 + pi/2 for fidelity."""

    name = "linear"

    def build(self, in_dim: int, out_dim: int) -> nn.Module | None:
        return ClassicalHead(in_dim, out_dim)

    def num_parameters(self, in_dim: int, out_dim: int) -> int:
        return sizes.classical_head_num_parameters(in_dim, out_dim)

    def project(self, module: nn.Module | None, pooled: Tensor, similarity: Similarity,
                mixing: InputMixing | None) -> Tensor:
        out = module(pooled)  # tanh(W x + b) in [-1, 1]
        return out * (math.pi / 2) + (math.pi / 2) if similarity.output_kind == ANGLES else out

    def st_modules(self, config: Any, head_state: dict[str, Tensor] | None,
                   mixing_state: dict[str, Tensor] | None) -> list[StModule]:
        angles = compares_angles(config)
        dense = {"in_features": config.in_dim, "out_features": config.dim, "bias": True,
                 "activation_function": _IDENTITY if angles else _TANH}
        weights = {"linear.weight": head_state["linear.weight"], "linear.bias": head_state["linear.bias"]}
        modules = [("sentence_transformers.models.Dense", "Dense", dense, weights)]
        if angles:  # AngleEncoding's tanh is the Dense layer's: tanh(Wx + b) * pi/2 + pi/2
            modules.append(angle_encoding_module(config.dim))
        return modules

    def describe(self, config: Any) -> str:
        return f"a linear head (Linear + tanh, {self.num_parameters(config.in_dim, config.dim):,} parameters)"
