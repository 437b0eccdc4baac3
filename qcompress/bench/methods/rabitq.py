"""RaBitQ (faiss `IndexRaBitQ`, `qcompress.recipes.peers_rabitq`) at 1, 2 and 4 bits per dimension: for each, the
most PCA dimensions whose code, per-vector factors included (faiss's `code_size`), fits the budget. The PCA, the
seeded random rotation and RaBitQ's centroid are fit on the fit documents; the query stays float32 (qb = 0).
Randomised (the rotation): run over seeds.

Example:
    >>> rabitq_dims(16, 1, 384), rabitq_dims(16, 2, 384), rabitq_dims(64, 1, 384)
    (64, None, 384)
"""

from __future__ import annotations

from torch import Tensor

from qcompress.bench.methods.base import FitContext, Fitted, Refusal, RepresentationFitted, Setting
from qcompress.recipes.peers import representation
from qcompress.recipes.peers_rabitq import RABITQ_BITS, RABITQ_METHOD, code_size

__all__ = ["RABITQ", "rabitq_dims"]


def rabitq_dims(budget: int, bits: int, dim: int) -> int | None:
    """The most dimensions (<= dim) whose RaBitQ code of `bits` bits takes at most `budget` bytes; None if none."""
    low, high = 0, dim  # code_size grows with the dimensions: the largest that fits, by bisection
    while low < high:
        mid = (low + high + 1) // 2
        if code_size(mid, bits) <= budget:
            low = mid
        else:
            high = mid - 1
    return low or None


class _RaBitQ:
    name = RABITQ_METHOD
    randomised = True
    about = "PCA + random rotation + RaBitQ codes (faiss), factors included in the size, float32 query"

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        found = []
        for bits in RABITQ_BITS:
            dims = rabitq_dims(budget, bits, min(dim, n_fit))
            if dims is not None:
                found.append(Setting(self.name, (("dims", dims), ("bits", bits))))
        return found or [Refusal(self.name, budget, f"the per-vector factors alone exceed {budget} B")]

    def fixed(self, dim: int) -> list[Setting]:
        return []

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        return RepresentationFitted(representation(RABITQ_METHOD, fit_pooled, dim=setting.param("dims"),
                                                   bits=setting.param("bits"), seed=seed))


RABITQ = _RaBitQ()
