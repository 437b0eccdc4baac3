"""The head and fidelity against an independent state-vector simulation, gradcheck, counts and bad input."""

import math

import numpy as np
import pytest
import torch

from qcompress.quantum import (
    QuantumHead,
    encode_angles,
    fidelity,
    log_fidelity,
    pairwise_log_fidelity,
    quantum_head_num_parameters,
)


# --- an independent simulation: explicit complex matrices, kron, the 4x4 controlled-U, marginals -------------
def zyz_matrix(alpha, beta, gamma, delta):
    rz = lambda t: np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])  # noqa: E731
    ry = np.array(
        [[np.cos(gamma / 2), -np.sin(gamma / 2)], [np.sin(gamma / 2), np.cos(gamma / 2)]], dtype=np.complex128
    )
    return np.exp(1j * alpha) * rz(beta) @ ry @ rz(delta)


def simulate_head(theta_in, angles, out_dim):
    """theta_in (in_dim,), angles (k-1, 3, 4, out_dim) -> output angles (out_dim,), via state vectors."""
    k = angles.shape[0] + 1
    padded = np.concatenate([theta_in, np.zeros(k * out_dim - len(theta_in))])
    regs = padded.reshape(k, out_dim)
    encoded = lambda t: np.array([np.cos(t / 2), np.exp(1j * np.pi) * np.sin(t / 2)])  # noqa: E731
    out = np.empty(out_dim)
    for j in range(out_dim):
        acc = encoded(regs[k - 1, j])
        for s in range(k - 1):
            t = k - 2 - s
            ctrl = zyz_matrix(*angles[s, 0, :, j]) @ acc
            tgt = zyz_matrix(*angles[s, 1, :, j]) @ encoded(regs[t, j])
            state = np.kron(ctrl, tgt)  # control first: index = 2*control + target
            cu = np.eye(4, dtype=np.complex128)
            cu[2:, 2:] = zyz_matrix(*angles[s, 2, :, j])
            state = cu @ state
            probs = np.abs(state) ** 2
            p0, p1 = probs[0] + probs[2], probs[1] + probs[3]
            acc = np.array([np.sqrt(p0), np.sqrt(p1)], dtype=np.complex128)
        out[j] = 2 * np.arctan2(abs(acc[1]), abs(acc[0]))  # magnitudes; the phase is a convention
    return out


@pytest.mark.parametrize("in_dim,out_dim", [(8, 4), (12, 4), (10, 4), (9, 3), (6, 6), (7, 2), (16, 4)])
def test_head_matches_state_vector_simulation(in_dim, out_dim):
    torch.manual_seed(in_dim * 100 + out_dim)
    head = QuantumHead(in_dim, out_dim).double()
    theta = torch.rand(5, in_dim, dtype=torch.float64) * math.pi
    got = head(theta).detach().numpy()
    angles = head.unitary_angles().detach().numpy()
    for row in range(theta.shape[0]):
        want = simulate_head(theta[row].numpy(), angles, out_dim)
        np.testing.assert_allclose(got[row], want, atol=1e-6, rtol=0)


def test_head_output_range_and_shape_with_batch_dims():
    head = QuantumHead(12, 4)
    out = head(torch.rand(3, 2, 12) * math.pi)
    assert out.shape == (3, 2, 4)
    assert (out >= 0).all() and (out <= math.pi).all()


def test_unitary_angles_shape_and_range():
    head = QuantumHead(768, 256)
    angles = head.unitary_angles()
    assert angles.shape == (2, 3, 4, 256)
    assert (angles >= 0).all() and (angles <= 4 * math.pi).all()


def test_gradcheck_head_float64():
    torch.manual_seed(0)
    head = QuantumHead(10, 4).double()
    theta = (torch.rand(3, 10, dtype=torch.float64) * 2.5 + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, p: torch.func.functional_call(head, {"raw": p}, (t,)),
                                    (theta, head.raw.detach().clone().requires_grad_()))


def test_gradcheck_log_fidelity_float64():
    torch.manual_seed(1)
    a = (torch.rand(4, 16, dtype=torch.float64) * math.pi).requires_grad_()
    b = (torch.rand(4, 16, dtype=torch.float64) * math.pi).requires_grad_()
    assert torch.autograd.gradcheck(log_fidelity, (a, b))
    assert torch.autograd.gradcheck(lambda q, d: pairwise_log_fidelity(q, d), (a[:2], b))


@pytest.mark.parametrize(
    "in_dim,out_dim,quantum,classical",
    [(768, 384, 4608, 295296), (768, 256, 6144, 196864), (768, 128, 7680, 98432), (768, 64, 8448, 49216)],
)
def test_parameter_counts_of_spec(in_dim, out_dim, quantum, classical):
    from qcompress.heads import ClassicalHead

    assert sum(p.numel() for p in QuantumHead(in_dim, out_dim).parameters()) == quantum
    assert quantum_head_num_parameters(in_dim, out_dim) == quantum
    assert sum(p.numel() for p in ClassicalHead(in_dim, out_dim).parameters()) == classical


def test_log_fidelity_float32_where_product_underflows():
    gen = torch.Generator().manual_seed(7)
    a = torch.rand(768, generator=gen, dtype=torch.float64) * math.pi
    b = torch.rand(768, generator=gen, dtype=torch.float64) * math.pi
    plain_product = torch.prod(torch.cos((a.float() - b.float()) / 2) ** 2)
    assert plain_product.item() == 0.0
    lf32 = log_fidelity(a.float(), b.float())
    lf64 = log_fidelity(a, b)
    assert torch.isfinite(lf32)
    assert abs(lf32.item() - lf64.item()) <= 1e-3 * abs(lf64.item())


def test_log_fidelity_orders_underflowing_pairs():
    torch.manual_seed(3)
    q = torch.rand(768) * math.pi
    near = q + 0.05 * torch.randn(768)
    far = torch.rand(768) * math.pi
    assert fidelity(q, far).item() == 0.0  # underflows ...
    assert log_fidelity(q, near) > log_fidelity(q, far)  # ... but log-fidelity still ranks


def test_log_fidelity_matches_direct_formula_and_is_symmetric():
    torch.manual_seed(4)
    a = torch.rand(3, 20, dtype=torch.float64) * math.pi
    b = torch.rand(3, 20, dtype=torch.float64) * math.pi
    direct = torch.log(torch.prod(torch.cos((a - b) / 2) ** 2, dim=-1))
    torch.testing.assert_close(log_fidelity(a, b), direct)
    torch.testing.assert_close(log_fidelity(a, b), log_fidelity(b, a))
    assert torch.all(log_fidelity(a, a) == 0)


def test_log_fidelity_opposite_angles_is_finite():
    out = log_fidelity(torch.zeros(4), torch.full((4,), math.pi))
    assert torch.isfinite(out)


def test_pairwise_matches_broadcast_and_chunks():
    torch.manual_seed(5)
    q, d = torch.rand(3, 8) * math.pi, torch.rand(50, 8) * math.pi
    want = log_fidelity(q[:, None, :], d[None, :, :])
    torch.testing.assert_close(pairwise_log_fidelity(q, d), want)
    torch.testing.assert_close(pairwise_log_fidelity(q, d, chunk_elements=30), want)


def test_encode_angles():
    theta = encode_angles(torch.tensor([-50.0, 0.0, 50.0]))
    torch.testing.assert_close(theta, torch.tensor([0.0, math.pi / 2, math.pi]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_angles_are_refused(bad):
    x = torch.zeros(2, 8)
    x[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        log_fidelity(x, torch.zeros(2, 8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        QuantumHead(8, 4)(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_angles(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pairwise_log_fidelity(torch.zeros(1, 8), x)


def test_wrong_last_dimension_is_refused():
    with pytest.raises(ValueError, match="last dimension 8"):
        QuantumHead(8, 4)(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="different numbers of qubits"):
        log_fidelity(torch.zeros(8), torch.zeros(7))
    with pytest.raises(ValueError, match="2-d"):
        pairwise_log_fidelity(torch.zeros(8), torch.zeros(3, 8))


@pytest.mark.parametrize("in_dim,out_dim,match", [
    (4, 8, "larger than in_dim"), (0, 4, "positive"), (8, 0, "positive"), (-3, 1, "positive"), (8.0, 4, "positive"),
])
def test_bad_sizes_are_refused(in_dim, out_dim, match):
    with pytest.raises(ValueError, match=match):
        QuantumHead(in_dim, out_dim)
