"""[cos θ; sin θ] features of angles: their inner product is the sum of cos(a_i - b_i) over qubits, which bounds
log-fidelity (SPEC §2). The exact search's matmul and the approximate index's IVF work on them.

The layout only has to match between queries and documents: interleaved [cos a0, sin a0, cos a1, sin a1, ...],
the features of a block of qubits are one contiguous slice. 8-bit codes get theirs by table look-up (no cos/sin
per element), from the same decoded angles as `qcompress.quantization.decode_codes`.

Example:
    >>> angle_features(torch.tensor([[0.0, math.pi / 6]]))
    tensor([[1.0000, 0.0000, 0.8660, 0.5000]])
"""

from __future__ import annotations

import math  # noqa: F401 (the module docstring's example uses it)
import sys

import torch
from torch import Tensor

from qcompress.quantization import DECODE

__all__ = ["angle_features", "code_features", "features_of", "CODE_FEATURES"]

# cos and sin of each code's angle (qcompress.quantization.DECODE): the features of 8-bit corpora, by look-up.
CODE_FEATURES = torch.stack([torch.cos(DECODE), torch.sin(DECODE)], dim=1)
# The features of two neighbouring codes at once, indexed by the pair's bytes read as one 16-bit number (in the
# machine's byte order): half the look-ups, from a 1 MiB table, measured faster than one look-up per code.
_PAIR = torch.arange(1 << 16)
_FIRST, _SECOND = (_PAIR & 255, _PAIR >> 8) if sys.byteorder == "little" else (_PAIR >> 8, _PAIR & 255)
_PAIR_FEATURES = torch.cat([CODE_FEATURES[_FIRST], CODE_FEATURES[_SECOND]], 1).contiguous()
del _PAIR, _FIRST, _SECOND


def angle_features(angles: Tensor) -> Tensor:
    """(rows, n) float32 angles -> (rows, 2n) features, cos and sin written in place (no temporaries)."""
    out = torch.empty(angles.shape[0], angles.shape[1], 2, dtype=torch.float32)
    torch.cos(angles, out=out[:, :, 0])
    torch.sin(angles, out=out[:, :, 1])
    return out.view(angles.shape[0], -1)


def code_features(codes: Tensor) -> Tensor:
    """`angle_features` of the angles that (rows, n) uint8 codes stand for, by table look-up.

    Example:
        >>> torch.equal(code_features(torch.tensor([[0, 255]], dtype=torch.uint8)), CODE_FEATURES[[0, 255]].view(1, 4))
        True
    """
    rows, n = codes.shape
    if n % 2 == 0 and codes.is_contiguous():
        pairs = codes.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
        return _PAIR_FEATURES.index_select(0, pairs.flatten()).view(rows, -1)
    return CODE_FEATURES.index_select(0, codes.flatten().to(torch.int32)).view(rows, -1)


def features_of(values: Tensor, *, codes: bool = False) -> Tensor:
    """The features of float32 angles, or of uint8 codes when `codes`."""
    return code_features(values) if codes else angle_features(values)
