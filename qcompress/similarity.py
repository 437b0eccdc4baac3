"""Similarity of embeddings by name ("fidelity" for angles, "cosine" for vectors), for ranking and training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.errors import InputError
from qcompress.quantum import log_fidelity, pairwise_log_fidelity

SIMILARITIES = ("cosine", "fidelity")


def check_similarity(name: str) -> str:
    if name not in SIMILARITIES:
        raise InputError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)}")
    return name


def pairwise_scores(queries: Tensor, docs: Tensor, similarity: str) -> Tensor:
    """Ranking scores (m, N): log-fidelity for angles, cosine for vectors. Higher is more similar.

    Example:
        >>> pairwise_scores(torch.ones(1, 3), torch.ones(2, 3), "cosine")
        tensor([[1.0000, 1.0000]])
    """
    if check_similarity(similarity) == "fidelity":
        return pairwise_log_fidelity(queries, docs)
    if queries.shape[-1] != docs.shape[-1]:
        raise InputError(f"vectors have different sizes: {queries.shape[-1]} and {docs.shape[-1]}")
    return F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T


def paired_scores(a: Tensor, b: Tensor, similarity: str, *, log: bool = True) -> Tensor:
    """Score of each row of `a` with the matching row of `b` (shapes broadcast, last dim is the embedding).

    For fidelity, `log=True` gives log-fidelity (for ranking) and `log=False` the fidelity itself (the authors'
    training logits are 20 x fidelity).
    """
    if check_similarity(similarity) == "fidelity":
        lf = log_fidelity(a, b)
        return lf if log else torch.exp(lf)
    return F.cosine_similarity(a, b, dim=-1)
