"""Input mixing before the quantum head: a centring and an orthogonal map of the pooled vector (issue 18).

Output qubit j of the quantum head sees only input qubits j, j + n_out, j + 2 n_out, ... (one per register, SPEC
§3): on a frozen encoder it cannot combine information across dimensions the way PCA does. An orthogonal map in
front of the angle encoding decides which dimensions share an output qubit, and centring by the corpus mean puts
the angles where tanh is steep. Kinds (`MIXINGS`):

    none       the paper's head: the pooled vector as it is
    permute    centre, then order dimensions by variance (largest first), so that output qubit j combines the
               dimensions of rank j, j + n_out, ...: 0 trained parameters, 2 x in_dim fitted numbers
    hadamard   centre, then a seeded randomized Hadamard rotation (random signs, a random permutation, and
               orthonormal Hadamard blocks of the largest power of two dividing in_dim): 0 trained parameters,
               in_dim fitted numbers (the mean); the rotation is rebuilt from the seed
    pca        centre, then rotate onto the principal axes of the documents (largest variance first): a fitted
               orthogonal rotation, in_dim x in_dim + in_dim fitted numbers

The fit uses the pooled outputs of the training texts (no labels). Every map is orthogonal, so the centred
vector's geometry (its cosines) is unchanged; only which coordinates meet in the head changes.

Example:
    >>> import torch
    >>> x = torch.randn(200, 12) * torch.arange(1, 13)
    >>> mix = InputMixing.fit("pca", x)
    >>> y = mix(x)
    >>> bool(y.var(0)[0] > y.var(0)[-1]), torch.allclose(y.norm(dim=1), (x - x.mean(0)).norm(dim=1), atol=1e-3)
    (True, True)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from qcompress.defaults import MIXINGS
from qcompress.errors import InputError
from qcompress.heads.sizes import mixing_fitted_numbers  # re-exported: defined beside the head sizes

__all__ = ["MIXINGS", "InputMixing", "hadamard_rotation", "mixing_fitted_numbers"]

HADAMARD_SEED = 0


def _hadamard(n: int) -> Tensor:
    """Sylvester's Hadamard matrix of order n (a power of two), entries +-1."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_rotation(n: int, seed: int = HADAMARD_SEED) -> Tensor:
    """A seeded randomized Hadamard rotation (n, n), float64, orthogonal: rows of x @ R mix every block.

    R = D P B with random signs D, a random permutation P and blocks of orthonormal Hadamard matrices B of the
    largest power of two dividing n (384 -> 128, 768 -> 256). The same seed gives the same matrix everywhere.

    Example:
        >>> r = hadamard_rotation(12)
        >>> torch.allclose(r @ r.T, torch.eye(12, dtype=torch.float64))
        True
    """
    block = n & -n  # the largest power of two dividing n
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    order = torch.randperm(n, generator=generator)
    blocks = torch.block_diag(*[_hadamard(block) / math.sqrt(block)] * (n // block))
    return signs[:, None] * blocks[order]


class InputMixing(nn.Module):
    """x -> (x - mean) @ R for a fitted mean and an orthogonal R of the chosen kind (see the module docstring).

    Buffers (saved with the model, safetensors): `mean` (in_dim), and `rotation` (in_dim, in_dim) for pca or
    `order` (in_dim, int64) for permute; hadamard rebuilds its rotation from `HADAMARD_SEED`. A fresh module is
    the identity until `fit` (or a loaded state) sets it.
    """

    def __init__(self, kind: str, in_dim: int) -> None:
        super().__init__()
        if kind not in MIXINGS or kind == "none":
            raise InputError(f"unknown mixing {kind!r}; choose one of {', '.join(MIXINGS[1:])}")
        self.kind, self.in_dim = kind, in_dim
        self.register_buffer("mean", torch.zeros(in_dim))
        if kind == "pca":
            self.register_buffer("rotation", torch.eye(in_dim))
        elif kind == "permute":
            self.register_buffer("order", torch.arange(in_dim))
        elif kind == "hadamard":
            self.register_buffer("rotation", hadamard_rotation(in_dim).float(), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, in_dim={self.in_dim}"

    @classmethod
    def fit(cls, kind: str, pooled: Tensor) -> "InputMixing":
        """Fit the mixing on pooled vectors (rows: texts), in float64."""
        x = pooled.detach().double().cpu()
        if x.dim() != 2 or x.shape[0] < 2:
            raise InputError(f"fitting a mixing needs at least 2 pooled vectors (rows), got shape {tuple(x.shape)}")
        mixing = cls(kind, x.shape[1])
        mean = x.mean(0)
        centred = x - mean
        with torch.no_grad():
            mixing.mean.copy_(mean)
            if kind == "pca":
                _, _, vh = torch.linalg.svd(centred, full_matrices=True)
                mixing.rotation.copy_(vh.T)
            elif kind == "permute":
                mixing.order.copy_(torch.argsort(centred.var(0), descending=True, stable=True))
        return mixing

    def load_checked(self, state: dict[str, Tensor]) -> None:
        """Load a saved state, refusing (`InputError`, with the reason) what `fit` could not have made: a tensor
        missing or of another shape, numbers that are not finite, a permute `order` that is not each of
        0..in_dim-1 once (as integers), a pca rotation that is not orthogonal.

        Example:
            >>> mixing = InputMixing("permute", 3)
            >>> mixing.load_checked({"mean": torch.zeros(3), "order": torch.tensor([2, 0, 1])})
            >>> mixing.load_checked({"mean": torch.zeros(3), "order": torch.tensor([2, 0, 3])})
            Traceback (most recent call last):
            ...
            qcompress.errors.InputError: `order` must hold each of 0..2 once, as integers
        """
        expected = self.state_dict()
        for name, value in expected.items():
            got = state.get(name)
            if got is None or tuple(got.shape) != tuple(value.shape):
                raise InputError(f"`{name}` must be a tensor of shape {tuple(value.shape)}, got "
                                 f"{None if got is None else tuple(got.shape)}")
            if got.is_floating_point() and not torch.isfinite(got).all():
                raise InputError(f"`{name}` holds numbers that are not finite")
        if self.kind == "permute":
            order = state["order"]
            if order.is_floating_point() or order.dtype == torch.bool or \
                    not torch.equal(order.long().sort().values, torch.arange(self.in_dim)):
                raise InputError(f"`order` must hold each of 0..{self.in_dim - 1} once, as integers")
        if self.kind == "pca":
            rotation = state["rotation"].double()
            if (rotation.T @ rotation - torch.eye(self.in_dim, dtype=torch.float64)).abs().max() > 1e-3:
                raise InputError("`rotation` is not orthogonal")
        self.load_state_dict(state)

    def forward(self, x: Tensor) -> Tensor:
        centred = x - self.mean.to(x.dtype)
        if self.kind == "permute":
            return centred[..., self.order]
        return centred @ self.rotation.to(x.dtype)
