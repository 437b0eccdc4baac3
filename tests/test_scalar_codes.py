"""Per-dimension Lloyd-Max levels and bit packing (qcompress.scalar_codes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompress.scalar_codes import decode, encode, fit_levels, pack, packed_bytes, unpack


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(0, 9), dim=st.integers(1, 23), seed=st.integers(0, 2**16))
def test_pack_round_trip_every_width(bits, rows, dim, seed):
    codes = torch.from_numpy(np.random.default_rng(seed).integers(0, 1 << bits, (rows, dim), dtype=np.uint8))
    packed = pack(codes, bits)
    assert packed.shape == (rows, packed_bytes(dim, bits)) and packed.dtype == torch.uint8
    assert torch.equal(unpack(packed, bits, dim), codes)


def test_packed_bit_order_is_little_endian_within_and_across_bytes():
    # dimension j holds bits j*b .. j*b+b-1 of the row, least significant first; bit i is bit i%8 of byte i//8
    codes = torch.tensor([[1, 2, 3]], dtype=torch.uint8)
    assert pack(codes, 2).tolist() == [[0b00111001]]  # 01 | 10 | 11, lowest dimension in the lowest bits
    assert pack(torch.tensor([[5, 1, 7]], dtype=torch.uint8), 3).tolist() == [[0b11001101, 0b00000001]]
    assert pack(torch.tensor([[0xA, 0x3]], dtype=torch.uint8), 4).tolist() == [[0x3A]]
    # the unused high bits of the last byte are zero
    assert pack(torch.tensor([[1]], dtype=torch.uint8), 1).tolist() == [[1]]


def test_pack_refuses_codes_too_wide_and_unpack_a_short_row():
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        pack(torch.tensor([[4]], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="take 2 bytes a row"):
        unpack(torch.zeros(3, 1, dtype=torch.uint8), 4, 3)
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        pack(torch.zeros(1, 1, dtype=torch.uint8), 0)


def test_levels_on_degenerate_data_are_finite_and_decode_exactly():
    same = torch.full((50, 3), 1.25)
    levels = fit_levels(same, 3)
    assert levels.shape == (3, 8) and torch.isfinite(levels).all()
    assert torch.equal(decode(encode(same, levels), levels), same)
    # fewer distinct values than levels: every value is still reproduced exactly
    few = torch.tensor([[0.0], [1.0], [1.0], [2.0]] * 5)
    levels = fit_levels(few, 4)
    assert torch.equal(decode(encode(few, levels), levels), few)


def test_lloyd_levels_beat_uniform_levels_on_crowded_values():
    # values crowded in a narrow band of [0, pi], as a trained head's angles are
    x = torch.from_numpy(np.random.default_rng(0).normal(1.6, 0.05, (4000, 4))).float()
    levels = fit_levels(x, 2)
    uniform = torch.linspace(0, torch.pi, 4).expand(4, 4).contiguous()
    fitted_error = (decode(encode(x, levels), levels) - x).pow(2).mean()
    uniform_error = (decode(encode(x, uniform), uniform) - x).pow(2).mean()
    assert fitted_error < uniform_error / 50


def test_lloyd_levels_of_a_uniform_distribution_are_the_cell_midpoints():
    x = torch.linspace(0, 1, 100001)[:, None]
    levels = fit_levels(x, 2, iterations=100)
    assert torch.allclose(levels[0], torch.tensor([0.125, 0.375, 0.625, 0.875]), atol=2e-3)


def test_encode_picks_the_nearest_level_against_brute_force():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(300, 5))).float()
    levels = fit_levels(x, 3)
    brute = (x[:, :, None] - levels[None]).abs().argmin(dim=2)  # first of equal distances: the lower level
    assert torch.equal(encode(x, levels).long(), brute)


def test_fit_levels_refuses_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_levels(torch.tensor([[0.0], [float("nan")]]), 1)
