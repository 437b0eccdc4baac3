"""The math of qcompress, in one place: angle encoding, fidelity of separable states, the compression head.

An embedding of n numbers is a product state of n qubits, each stored as one angle theta in [0, pi]
(SPEC §1). Two such states are compared by fidelity, prod_i cos^2((a_i - b_i)/2) (SPEC §2), which we always
handle in log space: a product of hundreds of factors below 1 underflows float32 to exactly 0.

`QuantumHead` compresses n_in qubits to n_out by the cascade of SPEC §3. Each qubit is tracked as a Bloch
vector (x, y, z); a ZYZ unitary is then a rotation, and a "measure and re-encode" step keeps only z. That gives
the closed form of SPEC §3 with O(1) real arithmetic per qubit pair and no 4x4 matrices.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from qcompress.errors import InputError
from qcompress.heads.sizes import check_sizes as _check_sizes, quantum_head_num_parameters  # re-exported

__all__ = [
    "encode_angles",
    "log_cos2_half",
    "log_fidelity",
    "fidelity",
    "pairwise_log_fidelity",
    "pairwise_log_fidelity_trainable",
    "QuantumHead",
    "quantum_head_num_parameters",
]

HALF_PI = math.pi / 2


def _check_finite(x: Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} has {bad} NaN or infinite value(s); angles must be finite numbers")


def encode_angles(u: Tensor) -> Tensor:
    """Map classical embedding values to qubit angles: theta = tanh(u) * pi/2 + pi/2, in [0, pi].

    Example:
        >>> encode_angles(torch.tensor([0.0, 100.0, -100.0]))
        tensor([1.5708, 3.1416, 0.0000])
    """
    _check_finite(u, "embedding")
    return torch.tanh(u) * HALF_PI + HALF_PI


def log_cos2_half(delta: Tensor) -> Tensor:
    """log cos^2(delta/2), accurate at both ends and never -inf or NaN (also in its gradient).

    Near delta = 0 the factor is 1 - sin^2(delta/2): log1p keeps the tiny differences between near
    neighbours. Near delta = pi the factor is cos^2 itself, clamped at the dtype's smallest normal number.
    Both branches get safe inputs so that torch.where's unused branch cannot poison the gradient.
    """
    half = delta * 0.5
    sin2 = torch.sin(half).square()
    near = sin2 < 0.5
    tiny = torch.finfo(delta.dtype).tiny
    log_near = torch.log1p(-torch.where(near, sin2, torch.zeros_like(sin2)))
    cos_abs = torch.where(near, torch.ones_like(half), torch.cos(half).abs())
    log_far = 2.0 * torch.log(cos_abs.clamp_min(tiny))
    return torch.where(near, log_near, log_far)


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise InputError(
            f"angle tensors have different numbers of qubits: {a.shape[-1]} and {b.shape[-1]} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)}); compare embeddings from the same model"
        )
    _check_finite(a, "first angle tensor")
    _check_finite(b, "second angle tensor")


def log_fidelity(a: Tensor, b: Tensor) -> Tensor:
    """Log-fidelity of two separable states given by their angles: sum_i log cos^2((a_i - b_i)/2).

    `a` (..., n) and `b` (..., n) broadcast against each other; the result has shape (...). Finite and correctly
    ordered in float32 even where the fidelity itself underflows to 0.

    Example:
        >>> a = torch.tensor([0.0, 1.0]); b = torch.tensor([0.0, 1.0])
        >>> log_fidelity(a, b)
        tensor(0.)
        >>> round(float(log_fidelity(torch.tensor([0.0]), torch.tensor([math.pi / 2]))), 4)  # log(1/2)
        -0.6931
    """
    _check_pair(a, b)
    return log_cos2_half(a - b).sum(dim=-1)


def fidelity(a: Tensor, b: Tensor) -> Tensor:
    """Fidelity |<a|b>|^2 = exp(log_fidelity(a, b)), in [0, 1]. Rank with `log_fidelity`, not with this."""
    return torch.exp(log_fidelity(a, b))


def pairwise_log_fidelity(queries: Tensor, docs: Tensor, *, chunk_elements: int = 1 << 24) -> Tensor:
    """All-pairs log-fidelity: queries (m, n) x docs (N, n) -> (m, N).

    Works through `docs` in chunks so that the (m, chunk, n) temporary holds at most `chunk_elements`
    numbers: memory is O(m*N + chunk), never O(m*N*n).

    Example:
        >>> pairwise_log_fidelity(torch.zeros(2, 3), torch.zeros(4, 3)).shape
        torch.Size([2, 4])
    """
    if queries.dim() != 2 or docs.dim() != 2:
        raise ValueError(
            f"expected 2-d angle tensors (rows, qubits), got shapes {tuple(queries.shape)} and {tuple(docs.shape)}"
        )
    _check_pair(queries, docs)
    m, n = queries.shape
    out = torch.empty(m, docs.shape[0], dtype=torch.result_type(queries, docs), device=queries.device)
    step = max(1, chunk_elements // max(1, m * n))
    for start in range(0, docs.shape[0], step):
        block = docs[start : start + step]
        out[:, start : start + block.shape[0]] = log_cos2_half(queries[:, None, :] - block[None, :, :]).sum(-1)
    return out


class _PairwiseLogFidelity(torch.autograd.Function):
    """2 log|cos((q - d)/2)| summed over qubits, with the analytic gradient -tan((q - d)/2) (d/dq; +tan for d)."""

    @staticmethod
    def forward(ctx, queries: Tensor, docs: Tensor) -> Tensor:
        ctx.save_for_backward(queries, docs)
        half = (queries[:, None, :] - docs[None, :, :]) * 0.5
        return torch.cos(half).abs_().clamp_min_(torch.finfo(half.dtype).tiny).log_().sum(-1).mul_(2.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        queries, docs = ctx.saved_tensors
        half = (queries[:, None, :] - docs[None, :, :]) * 0.5
        # tan is unbounded where a pair is antipodal in a qubit (fidelity 0): bounded like the forward's clamp.
        tangent = torch.tan(half).clamp_(-1e6, 1e6)
        grad_q = -torch.bmm(grad[:, None, :], tangent).squeeze(1)
        grad_d = torch.einsum("mn,mnk->nk", grad, tangent)
        return grad_q, grad_d


def pairwise_log_fidelity_trainable(queries: Tensor, docs: Tensor) -> Tensor:
    """All-pairs log-fidelity (m, N) for training losses: the values of `pairwise_log_fidelity` (without its log1p
    refinement for near-identical states, which ranking needs and a loss does not) at a fraction of the cost of
    autograd through it: one fused pass forward, one backward with the analytic gradient. Memory O(m N n).

    Example:
        >>> q = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
        >>> d = torch.rand(4, 5, dtype=torch.float64, requires_grad=True)
        >>> torch.autograd.gradcheck(pairwise_log_fidelity_trainable, (q, d))
        True
    """
    if queries.dim() != 2 or docs.dim() != 2:
        raise ValueError(
            f"expected 2-d angle tensors (rows, qubits), got shapes {tuple(queries.shape)} and {tuple(docs.shape)}"
        )
    _check_pair(queries, docs)
    return _PairwiseLogFidelity.apply(queries, docs)


class QuantumHead(nn.Module):
    """The quantum-inspired compression head of arXiv 2501.04591: n_in qubit angles -> n_out qubit angles.

    The n_in input qubits are split into k = ceil(n_in / n_out) consecutive registers r_0 .. r_{k-1} of n_out
    qubits. If n_in is not a multiple of n_out, the last register is padded with |0> qubits (theta = 0), which
    carry no information but keep the cascade uniform. The cascade (SPEC §3) starts with acc = r_{k-1}; step
    s = 0 .. k-2 takes the target register t = k-2-s and, qubit by qubit, applies U_ctrl to acc (the control),
    U_tgt to the target, the controlled unitary diag(I, U_cu), and keeps the target's marginal as the new acc
    (real, non-negative amplitudes). Inputs are encoded with phase pi (amplitudes cos, -sin); outputs have
    phase 0, so fidelity between outputs is again prod cos^2 of half the angle differences.

    Each of the 3 unitaries per pair and step has 4 ZYZ angles, stored raw and squashed as tanh(p)*2pi + 2pi
    (the authors' range [0, 4pi]); raw parameters are initialised from a standard normal, as the authors do.
    Of the 12 angles per pair, 5 only change global or unobservable phases (alpha of every unitary, beta of
    the control and of the controlled unitary): they are kept so that the parameter count is the paper's.

    Example:
        >>> head = QuantumHead(768, 256)
        >>> sum(p.numel() for p in head.parameters())
        6144
        >>> head(torch.rand(2, 768) * math.pi).shape
        torch.Size([2, 256])
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        _check_sizes(in_dim, out_dim)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.num_registers = math.ceil(in_dim / out_dim)
        self.pad = self.num_registers * out_dim - in_dim
        self.raw = nn.Parameter(torch.randn(self.num_registers - 1, 3, 4, out_dim))

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, registers={self.num_registers}, pad={self.pad}"

    def unitary_angles(self) -> Tensor:
        """Effective ZYZ angles, shape (k-1, 3, 4, out_dim): [step][control, target, controlled-U]
        [alpha, beta, gamma, delta][qubit]; step s combines the accumulated register with register k-2-s."""
        return torch.tanh(self.raw) * (2 * math.pi) + 2 * math.pi

    def forward(self, theta: Tensor) -> Tensor:
        """Input angles (..., in_dim) -> output angles (..., out_dim) in [0, pi]."""
        if theta.dim() == 0 or theta.shape[-1] != self.in_dim:
            raise ValueError(
                f"QuantumHead expects angles with last dimension {self.in_dim}, got shape {tuple(theta.shape)}"
            )
        _check_finite(theta, "input angles")
        if self.num_registers == 1:
            return theta
        if self.pad:
            theta = nn.functional.pad(theta, (0, self.pad))  # |0> qubits: theta = 0
        registers = theta.unflatten(-1, (self.num_registers, self.out_dim))
        angles = self.unitary_angles()
        cos_a, sin_a = torch.cos(angles), torch.sin(angles)

        # Bloch vector (x, 0, z) of the accumulated register; encoded inputs have phase pi, so x = -sin(theta).
        last = registers[..., -1, :]
        acc_x, acc_z = -torch.sin(last), torch.cos(last)
        for step in range(self.num_registers - 1):
            target = registers[..., self.num_registers - 2 - step, :]
            tgt_x, tgt_z = -torch.sin(target), torch.cos(target)
            (_, _, cg_c, cd_c), (_, _, sg_c, _) = cos_a[step, 0], sin_a[step, 0]
            (_, _, cg_t, cd_t), (_, _, sg_t, sd_t) = cos_a[step, 1], sin_a[step, 1]
            (_, _, cg_u, _), (_, _, sg_u, _) = cos_a[step, 2], sin_a[step, 2]
            # Rz(beta_t) of U_tgt and Rz(delta_u) of U_cu act back to back: one z rotation by their sum.
            phi = angles[step, 1, 1] + angles[step, 2, 3]
            c_phi, s_phi = torch.cos(phi), torch.sin(phi)

            # Control after U_ctrl = Rz Ry(gamma) Rz(delta): only its z matters, p_c = P(control = 1).
            ctrl_z = acc_z * cg_c - acc_x * cd_c * sg_c
            p_ctrl = 0.5 * (1.0 - ctrl_z)
            # Target after U_tgt (Rz(delta), then Ry(gamma)); its Rz(beta) is folded into phi.
            x1 = tgt_x * cd_t
            y1 = tgt_x * sd_t
            x1, z1 = x1 * cg_t + tgt_z * sg_t, tgt_z * cg_t - x1 * sg_t
            # ... and then through U_cu when the control is |1>: Rz(phi), Ry(gamma_u); the final Rz is unobservable.
            x2 = x1 * c_phi - y1 * s_phi
            z2 = z1 * cg_u - x2 * sg_u
            # Measure the target and re-encode with real amplitudes: z = P0 - P1 mixes the two branches.
            acc_z = z1 + p_ctrl * (z2 - z1)
            # (1 - z)(1 + z) rather than 1 - z^2 for accuracy near the poles; tiny keeps sqrt's gradient finite.
            acc_x = torch.sqrt(((1.0 - acc_z) * (1.0 + acc_z)).clamp_min(torch.finfo(acc_z.dtype).tiny))
        return torch.atan2(acc_x, acc_z)
