"""Similarities by name: the registry of how embeddings are compared ("fidelity" for angles, "cosine" for vectors).

Each similarity is one class in one file of this package (`base.Similarity` lists what it owns: its ranking
scores, its exact top-k, the similarity the training losses use, the kind of embedding it compares, which is also
the Parquet column that stores them, and its names in model cards and sentence-transformers). The names are known
without importing torch (the command line's choices); a class is imported when first asked for.

Example:
    >>> import torch
    >>> SIMILARITIES, get_similarity("fidelity").output_kind
    (('cosine', 'fidelity'), 'angles')
    >>> pairwise_scores(torch.ones(1, 3), torch.ones(2, 3), "cosine")
    tensor([[1.0000, 1.0000]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qcompress.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

    from qcompress.similarity.base import Similarity

__all__ = ["SIMILARITIES", "SIMILARITY_REGISTRY", "check_similarity", "get_similarity", "register_similarity",
           "pairwise_scores", "paired_scores"]

# name -> the class that owns it; a new similarity is one line here (or `register_similarity` from outside).
SIMILARITY_REGISTRY: Registry["Similarity"] = Registry("similarity", {
    "cosine": "qcompress.similarity.cosine:Cosine",
    "fidelity": "qcompress.similarity.fidelity:Fidelity",
})
SIMILARITIES = SIMILARITY_REGISTRY.names()  # the built-in ones (the command line's --similarity choices)
get_similarity = SIMILARITY_REGISTRY.get
register_similarity = SIMILARITY_REGISTRY.register


def check_similarity(name: str) -> str:
    """`name` if it is a registered similarity, else ValueError naming the choices."""
    get_similarity(name)
    return name


def pairwise_scores(queries: "Tensor", docs: "Tensor", similarity: str) -> "Tensor":
    """Ranking scores (m, N) of every query with every document: log-fidelity for angles, cosine for vectors.
    Higher is more similar."""
    return get_similarity(similarity).pairwise(queries, docs)


def paired_scores(a: "Tensor", b: "Tensor", similarity: str, *, log: bool = True) -> "Tensor":
    """Score of each row of `a` with the matching row of `b` (shapes broadcast, last dim is the embedding).

    For fidelity, `log=True` gives log-fidelity (for ranking) and `log=False` the fidelity itself (the authors'
    training logits are 20 x fidelity); a cosine is the same either way.
    """
    kind = get_similarity(similarity)
    return kind.paired(a, b) if log else kind.contrastive_paired(a, b)
