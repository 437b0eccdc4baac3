"""Per-dimension scalar codes: Lloyd-Max levels fitted to each dimension's values, and the bit packing of codes.

A value of dimension j is stored at b bits as the index of its nearest of the 2^b levels of dimension j. The levels
minimise the squared error over the fit values (Lloyd-Max: 1-D k-means, started from the values' quantiles), so
they crowd where the values crowd: a trained head's angles sit in a narrow band, where uniform levels on [0, pi]
would waste most of their codes (../shared/docs/frontier-probe.md). Both the classical baseline (PCA + scalar
codes, `qcompress.bench`) and the quantum head's low-bit angle codes build on this module.

Packed layout (what a reader outside qcompress decodes): the codes of one row, b bits each, are one bit string in
which the code of dimension j occupies bits j*b .. j*b + b - 1, least significant bit first; bit i of the string is
bit (i mod 8) of byte (i div 8), least significant first (numpy's `packbits(..., bitorder="little")`). A row takes
ceil(d * b / 8) bytes; the unused high bits of the last byte are 0. At 8 bits a packed row is the codes themselves.

Example:
    >>> x = torch.tensor([[0.0, 10.0], [1.0, 11.0], [4.0, 14.0], [5.0, 15.0]])
    >>> levels = fit_levels(x, bits=1)
    >>> levels
    tensor([[ 0.5000,  4.5000],
            [10.5000, 14.5000]])
    >>> codes = encode(x, levels)
    >>> codes.T
    tensor([[0, 0, 1, 1],
            [0, 0, 1, 1]], dtype=torch.uint8)
    >>> packed = pack(codes, bits=1)
    >>> packed.shape, packed[:, 0].tolist()
    (torch.Size([4, 1]), [0, 0, 3, 3])
    >>> torch.equal(unpack(packed, bits=1, dim=2), codes)
    True
    >>> decode(codes, levels)[2].tolist()
    [4.5, 14.5]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from qcompress.errors import InputError

__all__ = ["MAX_BITS", "fit_levels", "encode", "decode", "pack", "unpack", "packed_bytes", "check_bits"]

MAX_BITS = 8
DEFAULT_ITERATIONS = 25
DEFAULT_FIT_ROWS = 1 << 18  # rows sampled (seeded) to fit the levels: 1-D k-means converges long before more help


def check_bits(bits: int) -> int:
    """`bits` if it is an integer in 1..8 (ValueError otherwise)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise InputError(f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}")
    return int(bits)


def packed_bytes(dim: int, bits: int) -> int:
    """Bytes of one packed row: ceil(dim * bits / 8)."""
    return math.ceil(dim * check_bits(bits) / 8)


def _columns(x: Tensor, max_rows: int, seed: int) -> Tensor:
    """(d, n) float64 columns of `x` (n, d), sorted, at most `max_rows` rows drawn without replacement (seeded)."""
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"levels are fitted on a non-empty 2-d array (rows, dimensions), got shape {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("cannot fit levels: the values contain NaN or infinite numbers")
    if x.shape[0] > max_rows:
        generator = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_rows]]
    return x.T.contiguous().sort(dim=1).values


def fit_levels(x: Tensor, bits: int, *, iterations: int = DEFAULT_ITERATIONS, max_rows: int = DEFAULT_FIT_ROWS,
               seed: int = 0) -> Tensor:
    """Lloyd-Max levels of every dimension of `x` (n, d): (d, 2^bits) float32, ascending in each row.

    Started from the quantiles (i + 1/2) / 2^bits of each dimension's values, then `iterations` Lloyd steps (each
    value to its nearest level, each level to the mean of its values). A level that no value chooses keeps its
    place, so degenerate data (all values equal, fewer distinct values than levels) gives repeated levels, never
    NaN; codes then use the first of equal levels.
    """
    count = 1 << check_bits(bits)
    cols = _columns(x, max_rows, seed)  # (d, n) sorted
    d, n = cols.shape
    positions = ((torch.arange(count, dtype=torch.float64) + 0.5) / count * n).long().clamp_(0, n - 1)
    levels = cols[:, positions]  # quantiles: already ascending
    for _ in range(iterations):
        codes = torch.searchsorted(_boundaries(levels), cols)  # (d, n) in 0..count-1
        sums = torch.zeros(d, count, dtype=torch.float64).scatter_add_(1, codes, cols)
        counts = torch.zeros(d, count, dtype=torch.float64).scatter_add_(1, codes, torch.ones_like(cols))
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), levels)
        if torch.equal(updated, levels):
            break
        levels = updated.sort(dim=1).values
    return levels.to(torch.float32)


def _boundaries(levels: Tensor) -> Tensor:
    """Midpoints between consecutive levels (d, L - 1): a value above boundary i is nearer to level i + 1."""
    return (levels[:, 1:] + levels[:, :-1]) / 2


def encode(x: Tensor, levels: Tensor) -> Tensor:
    """Codes (n, d) uint8: the index of each value's nearest level in its dimension (ties to the lower level)."""
    if x.dim() != 2 or levels.dim() != 2 or x.shape[1] != levels.shape[0]:
        raise ValueError(f"values of shape {tuple(x.shape)} do not fit levels of shape {tuple(levels.shape)} "
                         "(dimensions, levels per dimension)")
    boundaries = _boundaries(levels.to(torch.float64))
    values = x.detach().to(torch.float64).T.contiguous()
    # right=False: a value exactly on a boundary takes the lower level.
    return torch.searchsorted(boundaries, values).T.to(torch.uint8).contiguous()


def decode(codes: Tensor, levels: Tensor) -> Tensor:
    """Values (n, d) float32 of codes (n, d): level codes[i, j] of dimension j."""
    if codes.dim() != 2 or codes.shape[1] != levels.shape[0]:
        raise ValueError(f"codes of shape {tuple(codes.shape)} do not fit levels of shape {tuple(levels.shape)}")
    if codes.numel() and int(codes.max()) >= levels.shape[1]:
        raise ValueError(f"a code ({int(codes.max())}) is beyond the {levels.shape[1]} levels of its dimension")
    index = torch.arange(levels.shape[0]) * levels.shape[1] + codes.long()
    return levels.to(torch.float32).flatten()[index]


def pack(codes: Tensor, bits: int) -> Tensor:
    """Codes (n, d) uint8, each below 2^bits -> packed rows (n, ceil(d * bits / 8)) uint8 (module docstring)."""
    bits = check_bits(bits)
    array = np.ascontiguousarray(codes.detach().cpu().numpy(), dtype=np.uint8)
    if array.ndim != 2:
        raise ValueError(f"codes must be 2-d (rows, dimensions), got shape {array.shape}")
    if bits == MAX_BITS:
        return torch.from_numpy(array.copy())
    if array.size and int(array.max()) >> bits:
        raise ValueError(f"a code ({int(array.max())}) does not fit in {bits} bits")
    n, d = array.shape
    planes = np.unpackbits(array[:, :, None], axis=2, bitorder="little")[:, :, :bits]  # (n, d, bits)
    return torch.from_numpy(np.packbits(planes.reshape(n, d * bits), axis=1, bitorder="little"))


def unpack(packed: Tensor, bits: int, dim: int) -> Tensor:
    """Packed rows (n, ceil(dim * bits / 8)) uint8 -> codes (n, dim) uint8: the inverse of `pack`."""
    bits = check_bits(bits)
    array = np.ascontiguousarray(packed.detach().cpu().numpy(), dtype=np.uint8)
    width = packed_bytes(dim, bits)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"packed codes of {dim} dimensions at {bits} bits take {width} bytes a row, got shape "
                         f"{array.shape}")
    if bits == MAX_BITS:
        return torch.from_numpy(array.copy())
    n = array.shape[0]
    planes = np.unpackbits(array, axis=1, bitorder="little")[:, : dim * bits].reshape(n, dim, bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint8)
    return torch.from_numpy((planes * weights).sum(axis=2, dtype=np.uint16).astype(np.uint8))
