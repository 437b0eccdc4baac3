"""Binary codes with rescoring: the sign bits of the embedding (sentence-transformers' "ubinary", D/8 bytes), the
best `rescore_k` documents by Hamming distance re-ranked by the float32 query's dot product with their +-1 bits
(sentence-transformers' rescoring: no bytes beyond the bits). Both stages read only the stored bits, a chunk of
documents at a time; the second unpacks just the candidates' bits.

Example:
    >>> import torch
    >>> docs = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    >>> fitted = BINARY.fit(BINARY.fixed(16)[0], docs, None, None)
    >>> stored = fitted.encode(docs)
    >>> stored.shape, fitted.search(docs[:3], stored, 1).flatten().tolist()
    ((200, 2), [0, 1, 2])
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.bench.methods.base import FitContext, Setting
from qcompress.bench.topk import chunked_topk, leave_out
from qcompress.recipes.peers import DEFAULT_RESCORE_K, quantize
from qcompress.recipes.representation import hamming_scores
from qcompress.search import select_topk

__all__ = ["BINARY", "BinaryRescored"]

QUERY_BLOCK = 64  # queries whose candidates' bits are unpacked at once: 64 x 100 x D floats


class BinaryRescored:
    fitted_numbers = 0
    trained_parameters = 0

    def __init__(self, dim: int, rescore_k: int = DEFAULT_RESCORE_K) -> None:
        self.dim, self.rescore_k = dim, rescore_k

    def encode(self, docs: Tensor) -> np.ndarray:
        return quantize(docs.float(), "ubinary")

    def search(self, queries: Tensor, stored: np.ndarray, k: int, exclude: Tensor | None = None) -> Tensor:
        bits = quantize(queries.float(), "ubinary")
        r = max(k, self.rescore_k)
        extra = 1 if exclude is not None else 0
        first = chunked_topk(lambda s, e: hamming_scores(bits, stored[s:e]), len(stored), r + extra)
        candidates = leave_out(*first, exclude, r)[1].sort(dim=1).values  # ascending: ties to the lower index
        unit = F.normalize(queries.float(), dim=-1)
        scores = torch.empty(candidates.shape)
        for s in range(0, len(candidates), QUERY_BLOCK):  # +-1 bits of a block of queries' candidates at a time
            rows = candidates[s : s + QUERY_BLOCK].numpy()
            signs = np.unpackbits(stored[rows], axis=-1)[..., : self.dim].astype(np.float32) * 2 - 1
            scores[s : s + QUERY_BLOCK] = torch.einsum("mrd,md->mr", torch.from_numpy(signs), unit[s : s + QUERY_BLOCK])
        return candidates.gather(1, select_topk(scores, k)[1])

    def resident_bytes(self, stored: np.ndarray) -> int:
        return int(stored.nbytes)


class _Binary:
    name = "binary"
    randomised = False
    about = "sign bits, the best 100 by Hamming distance rescored by the float32 query against their +-1 bits"

    def settings(self, budget: int, dim: int, n_fit: int) -> list:
        return []  # D/8 bytes: a size of its own

    def fixed(self, dim: int) -> list[Setting]:
        return [Setting(self.name, fixed_size=True)]

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None,
            context: FitContext | None) -> BinaryRescored:
        return BinaryRescored(int(fit_pooled.shape[1]), context.rescore_k if context else DEFAULT_RESCORE_K)


BINARY = _Binary()
