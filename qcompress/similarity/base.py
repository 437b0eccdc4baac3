"""`Similarity`: what one way of comparing embeddings owns. A new similarity subclasses it in its own file and is
listed in `qcompress.similarity.SIMILARITY_KINDS` (or registered with `register_similarity`).

Example:
    >>> from qcompress.similarity import get_similarity
    >>> cosine = get_similarity("cosine")
    >>> cosine.label, cosine.output_kind, cosine.st_function
    ('cosine', 'vectors', 'cosine')
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["Similarity", "ANGLES", "VECTORS"]

# The two kinds of embedding (model outputs, Parquet columns): qubit angles in [0, pi], and real vectors.
ANGLES, VECTORS = "angles", "vectors"


class Similarity:
    """How embeddings are compared. Subclasses set the attributes and write `pairwise`, `paired` and `topk`; the
    training similarities default to the ranking ones."""

    name: str = ""
    output_kind: str = VECTORS  # what it compares, "angles" or "vectors": also the Parquet column storing them
    label: str = ""  # its name in words (model cards)
    st_function: str = ""  # sentence-transformers' similarity_fn_name of a saved folder
    st_needs_qcompress: bool = False  # sentence-transformers computes it only with qcompress's modules
    distill_scale: float = 1.0  # initial scale of the student's similarity in distillation (qcompress.training.distill)

    def pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        """Ranking scores (m, N) of every query with every document; higher is more similar."""
        raise NotImplementedError

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        """Ranking score of each row of `a` with the matching row of `b` (shapes broadcast)."""
        raise NotImplementedError

    def topk(self, queries: Tensor, docs: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact top-k (scores, indices), each (m, min(k, N)), ties to the lower index (qcompress.search)."""
        raise NotImplementedError

    def contrastive_pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        """The similarity the contrastive loss multiplies by its logit scale (qcompress.training.step), all pairs."""
        return self.pairwise(queries, docs)

    def contrastive_paired(self, a: Tensor, b: Tensor) -> Tensor:
        """`contrastive_pairwise` of matching rows."""
        return self.paired(a, b)

    def student_pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        """The student's similarity in distillation (qcompress.training.distill), all pairs, with stable gradients."""
        return self.pairwise(queries, docs)

    def describe_output(self, dim: int) -> str:
        """What a text becomes, in words (model cards)."""
        return f"{dim}-dimensional {self.output_kind}, compared by {self.label}"
