"""How big the heads are, as arithmetic without torch: `qcompress count-params` answers from here in a fraction of
a second, and the head kinds (`qcompress.heads.quantum`, `.linear`) and the input mixing (`qcompress.mixing`) count
their parameters with the same formulas.

Example:
    >>> quantum_head_num_parameters(768, 256), classical_head_num_parameters(768, 256)
    (6144, 196864)
    >>> mixing_fitted_numbers("pca", 384)
    147840
"""

from __future__ import annotations

import math

from qcompress.defaults import MIXINGS
from qcompress.errors import InputError

__all__ = ["check_sizes", "quantum_head_num_parameters", "classical_head_num_parameters", "mixing_fitted_numbers"]


def check_sizes(in_dim: int, out_dim: int) -> None:
    """Both sizes positive integers, and out_dim <= in_dim (a head compresses); `InputError` otherwise."""
    for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if out_dim > in_dim:
        raise InputError(
            f"out_dim ({out_dim}) is larger than in_dim ({in_dim}): the head compresses, choose out_dim <= in_dim"
        )


def quantum_head_num_parameters(in_dim: int, out_dim: int) -> int:
    """12 * (k - 1) * out_dim with k = ceil(in_dim / out_dim) registers (SPEC §3)."""
    check_sizes(in_dim, out_dim)
    return 12 * (math.ceil(in_dim / out_dim) - 1) * out_dim


def classical_head_num_parameters(in_dim: int, out_dim: int) -> int:
    """Weights plus biases of Linear(in_dim, out_dim)."""
    check_sizes(in_dim, out_dim)
    return in_dim * out_dim + out_dim


def mixing_fitted_numbers(kind: str, in_dim: int) -> int:
    """How many numbers an input mixing (`qcompress.mixing`) fits to data (none are trained by gradient).

    Example:
        >>> [mixing_fitted_numbers(k, 384) for k in MIXINGS]
        [0, 768, 384, 147840]
    """
    if kind not in MIXINGS:
        raise InputError(f"unknown mixing {kind!r}; choose one of {', '.join(MIXINGS)}")
    return {"none": 0, "permute": 2 * in_dim, "hadamard": in_dim, "pca": in_dim * in_dim + in_dim}[kind]
