"""8-bit storage of qubit angles: code = round(theta / pi * 255), one table to decode (SPEC §6).

Every place that stores or reads 8-bit codes (the embedding Parquet writer and reader, the search's feature
tables, the peers' "uint8 angles") uses these functions, so a code means the same angle everywhere.

Example:
    >>> import numpy as np
    >>> codes = quantize_angles(np.array([0.0, math.pi / 2, math.pi]))
    >>> codes
    array([  0, 128, 255], dtype=uint8)
    >>> dequantize_angles(codes)
    array([0.       , 1.5769563, 3.1415927], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from qcompress.errors import InputError

__all__ = ["ENCODINGS", "DECODE", "quantize_angles", "dequantize_angles", "decode_codes", "check_encoding"]

ENCODINGS = ("float32", "uint8")
# code -> angle, computed in float64 and rounded once to float32: the angle every reader uses for a code.
DECODE = (torch.arange(256, dtype=torch.float64) * (math.pi / 255.0)).to(torch.float32)


def check_encoding(encoding: str, output_kind: str) -> str:
    """`encoding` if a model whose outputs are `output_kind` ("angles" or "vectors") can be stored that way.

    Example:
        >>> check_encoding("uint8", "vectors")
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: uint8 encoding quantises qubit angles in [0, pi]; this model outputs cosine vectors, which are stored as float32
    """
    if encoding not in ENCODINGS:
        raise InputError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if encoding == "uint8" and output_kind != "angles":
        raise InputError(
            "uint8 encoding quantises qubit angles in [0, pi]; this model outputs cosine vectors, which are stored "
            "as float32"
        )
    return encoding


def quantize_angles(theta: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Angles in [0, pi] -> 8-bit codes round(theta/pi*255), clipped to [0, 255]; numpy in, numpy out (torch alike)."""
    if isinstance(theta, Tensor):
        t = theta.detach().to(torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError("angles contain NaN or infinite values; cannot quantise them")
        return torch.round(t / math.pi * 255.0).clamp(0, 255).to(torch.uint8)
    a = np.asarray(theta, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("angles contain NaN or infinite values; cannot quantise them")
    return np.clip(np.rint(a / math.pi * 255.0), 0, 255).astype(np.uint8)


def dequantize_angles(codes: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """8-bit codes -> float32 angles `DECODE[code]` (error at most pi/510 against the quantised angle)."""
    if isinstance(codes, Tensor):
        return decode_codes(codes)
    return DECODE.numpy()[np.asarray(codes, dtype=np.uint8)]


def decode_codes(codes: Tensor) -> Tensor:
    """uint8 codes (a tensor of any shape) -> float32 angles, by table look-up.

    Example:
        >>> decode_codes(torch.tensor([[0, 255]], dtype=torch.uint8))
        tensor([[0.0000, 3.1416]])
    """
    return DECODE[codes.to(torch.int64)]
