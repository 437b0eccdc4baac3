"""PCA + per-dimension Lloyd-Max scalar codes (`qcompress.recipes.peers_scalar`), every (dims, bits) split of a
budget: dims * bits = 8 B bits per vector with 1 <= bits <= 8 and dims <= D, each run and reported (the report
marks the best split per budget). The PCA (centred by the FIT documents' mean) and the levels are fit on the fit
documents; the query stays float32.

Example:
    >>> splits(16, 384)
    [(128, 1), (64, 2), (32, 4), (16, 8)]
    >>> splits(48, 384)
    [(384, 1), (192, 2), (128, 3), (96, 4), (64, 6), (48, 8)]
    >>> splits(128, 384)
    [(256, 4), (128, 8)]
"""

from __future__ import annotations

from torch import Tensor

from qcompress.bench.methods.base import FitContext, Fitted, Refusal, RepresentationFitted, Setting
from qcompress.recipes.peers import representation
from qcompress.recipes.peers_scalar import SCALAR_METHOD
from qcompress.scalar_codes import MAX_BITS

__all__ = ["PCA_SCALAR", "splits"]


def splits(budget: int, dim: int) -> list[tuple[int, int]]:
    """(dims, bits) with dims * bits = 8 * budget, 1 <= bits <= 8 and dims <= dim, most dimensions first."""
    total = 8 * budget
    return [(total // bits, bits) for bits in range(1, MAX_BITS + 1) if total % bits == 0 and total // bits <= dim]


class _PcaScalar:
    name = SCALAR_METHOD
    randomised = False
    about = "PCA (centred by the fit mean) + Lloyd-Max scalar codes per dimension, float32 query"

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        found = [Setting(self.name, (("dims", d), ("bits", b))) for d, b in splits(budget, min(dim, n_fit))]
        return found or [Refusal(self.name, budget, f"no dims x bits = {8 * budget} with bits <= 8 and dims <= {dim}")]

    def fixed(self, dim: int) -> list[Setting]:
        return []

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        return RepresentationFitted(representation(SCALAR_METHOD, fit_pooled, dim=setting.param("dims"),
                                                   bits=setting.param("bits")))


PCA_SCALAR = _PcaScalar()
