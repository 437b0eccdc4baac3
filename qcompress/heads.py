"""Projection heads: the classical baseline (SPEC §4) beside the quantum head of `qcompress.quantum`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qcompress.errors import InputError
from qcompress.quantum import QuantumHead, _check_sizes

HEAD_KINDS = ("none", "linear", "quantum")


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


def classical_head_num_parameters(in_dim: int, out_dim: int) -> int:
    """Weights plus biases of Linear(in_dim, out_dim)."""
    _check_sizes(in_dim, out_dim)
    return in_dim * out_dim + out_dim


def build_head(kind: str, in_dim: int, out_dim: int | None) -> nn.Module | None:
    """`none` -> None, `linear` -> ClassicalHead, `quantum` -> QuantumHead."""
    if kind not in HEAD_KINDS:
        raise InputError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    if kind == "none":
        return None
    if out_dim is None:
        raise InputError(f"a {kind} head needs an output size (--dim)")
    return ClassicalHead(in_dim, out_dim) if kind == "linear" else QuantumHead(in_dim, out_dim)
