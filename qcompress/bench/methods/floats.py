"""The encoder's own vectors: float32 (the reference every recall is measured against) and float16.

    float32   the pooled vectors as they are, searched by `qcompress.search.topk_cosine`: the very search that
              makes the bench's truth, so its recall is 1 by construction (a check of the bench, not a result)
    float16   the vectors rounded to float16, query and documents (`qcompress.recipes.peers`' float16), cosine

Example:
    >>> import torch
    >>> docs = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    >>> fitted = FLOAT32.fit(FLOAT32.fixed(8)[0], docs, None, None)
    >>> fitted.search(docs[:2], fitted.encode(docs), 1).tolist()
    [[0], [1]]
"""

from __future__ import annotations

from torch import Tensor

from qcompress.bench.methods.base import FitContext, Fitted, RepresentationFitted, Setting
from qcompress.bench.topk import search_excluding
from qcompress.recipes.peers import representation
from qcompress.search import topk_cosine

__all__ = ["FLOAT32", "FLOAT16", "exact_topk"]


def exact_topk(queries: Tensor, docs: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """(m, k) indices of the exact cosine top-k of float32 vectors (ties to the lower index), each query's
    `exclude` document left out: the bench's truth."""
    return search_excluding(lambda kk: topk_cosine(queries.float(), docs.float(), kk), k, exclude)[1]


class _Float32Fitted:
    fitted_numbers = 0
    trained_parameters = 0

    def encode(self, docs: Tensor) -> Tensor:
        return docs.float().contiguous()

    def search(self, queries: Tensor, stored: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
        return exact_topk(queries, stored, k, exclude)

    def resident_bytes(self, stored: Tensor) -> int:
        return stored.element_size() * stored.numel()


class _Float:
    randomised = False

    def __init__(self, name: str, about: str) -> None:
        self.name, self.about = name, about

    def settings(self, budget: int, dim: int, n_fit: int) -> list:
        return []  # a size of its own: see `fixed`

    def fixed(self, dim: int) -> list[Setting]:
        return [Setting(self.name, fixed_size=True)]

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        if self.name == "float32":
            return _Float32Fitted()
        return RepresentationFitted(representation("float16", fit_pooled))


FLOAT32 = _Float("float32", "the encoder's float32 vectors, exact cosine (the reference: recall 1)")
FLOAT16 = _Float("float16", "vectors rounded to float16 (query too), cosine")
