"""int8 codes with a float32 query: sentence-transformers' `quantize_embeddings(..., "int8")` of the L2-normalised
documents, per-dimension ranges calibrated on the FIT documents (`qcompress.recipes.peers`' int8+rescore), scored
by the float32 query's dot product with the codes. D bytes per vector.

Example:
    >>> import torch
    >>> docs = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    >>> fitted = INT8.fit(INT8.fixed(8)[0], docs, None, None)
    >>> stored = fitted.encode(docs)
    >>> stored.dtype, stored.shape
    (dtype('int8'), (50, 8))
"""

from __future__ import annotations

from torch import Tensor

from qcompress.bench.methods.base import FitContext, Fitted, RepresentationFitted, Setting
from qcompress.recipes.peers import representation

__all__ = ["INT8"]


class _Int8:
    name = "int8"
    randomised = False
    about = "int8 codes (ranges calibrated on the fit documents), float32 query"

    def settings(self, budget: int, dim: int, n_fit: int) -> list:
        return []  # D bytes: a size of its own

    def fixed(self, dim: int) -> list[Setting]:
        return [Setting(self.name, fixed_size=True)]

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        return RepresentationFitted(representation("int8+rescore", fit_pooled))


INT8 = _Int8()
