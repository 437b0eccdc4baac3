"""Fidelity of qubit angles (SPEC §2), ranked by log-fidelity: the paper's quantum-inspired models.

Example:
    >>> import torch
    >>> Fidelity().paired(torch.zeros(3), torch.zeros(3)), Fidelity().contrastive_paired(torch.zeros(1), torch.ones(1))
    (tensor(0.), tensor(0.7702))
"""

from __future__ import annotations

import torch
from torch import Tensor

from qcompress import search
from qcompress.quantum import log_fidelity, pairwise_log_fidelity, pairwise_log_fidelity_trainable
from qcompress.similarity.base import ANGLES, Similarity

__all__ = ["Fidelity"]


class Fidelity(Similarity):
    """Log-fidelity of angles in [0, pi] (stored as `angles`, float32 or 8-bit codes); exact top-k by
    `qcompress.search.topk`. Training uses the fidelity itself (the authors' logits are 20 x fidelity)."""

    name = "fidelity"
    output_kind = ANGLES
    label = "log-fidelity"
    st_function = "log_fidelity"  # set by qcompress.st_modules.AngleEncoding: sentence-transformers has no such name
    st_needs_qcompress = True
    distill_scale = 1.0  # log-fidelity of neighbours spans a few units

    def pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        return pairwise_log_fidelity(queries, docs)

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        return log_fidelity(a, b)

    def topk(self, queries: Tensor, docs: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return search.topk(queries, docs, k)

    def contrastive_pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        return torch.exp(self.pairwise(queries, docs))

    def contrastive_paired(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(self.paired(a, b))

    def student_pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        return pairwise_log_fidelity_trainable(queries, docs)

    def describe_output(self, dim: int) -> str:
        return f"{dim} qubit angles in [0, pi], compared by log-fidelity"
