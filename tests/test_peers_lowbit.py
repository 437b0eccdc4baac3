"""The low-bit peers of issue 24 (PCA + Lloyd-Max scalar codes, RaBitQ) and the seeds and bit widths of PQ / OPQ /
LSH: sizes from the stored arrays, rankings against the exact cosine, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qcompress.recipes import peers
from qcompress.recipes.peers_rabitq import code_size
from qcompress.recipes.peers_scalar import scalar_representation
from qcompress.search import select_topk


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(2.0, 0.3, 32)
    mean = torch.randn(32, generator=g) * 2
    docs = mean + torch.randn(600, 32, generator=g) * scale
    queries = mean + torch.randn(40, 32, generator=g) * scale
    return docs, queries


def _recall(rep, docs, queries, k=10) -> float:
    truth = select_topk(F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T, k)[1]
    found = select_topk(rep.score(rep.queries(queries), rep.documents(docs)), k)[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


@pytest.mark.parametrize("dim,bits", [(32, 1), (16, 2), (12, 3), (8, 4), (32, 8)])
def test_pca_scalar_stores_packed_codes_of_the_size_it_says(data, dim, bits):
    docs, _ = data
    rep = peers.representation("pca-scalar", docs, dim=dim, bits=bits)
    stored = rep.documents(docs)
    assert stored.dtype == torch.uint8 and stored.shape == (600, math.ceil(dim * bits / 8))
    assert rep.bytes_per_vector == stored.shape[1]
    assert rep.fitted_parameters == dim * 32 + 32 + dim * 2**bits


def test_pca_scalar_scores_the_cosine_of_the_reconstruction(data):
    docs, queries = data
    rep = peers.representation("pca-scalar", docs, dim=12, bits=3)
    pca = peers.representation("pca", docs, dim=12)
    # The oracle, written out: reconstruct each document in the embedding space and take the cosine.
    from qcompress.scalar_codes import decode, fit_levels, unpack

    levels = fit_levels(pca.documents(docs), 3)
    coordinates = decode(unpack(rep.documents(docs), 3, 12), levels).double()
    mean = docs.double().mean(0)
    axes = torch.linalg.svd(docs.double() - mean, full_matrices=False)[2][:12]  # the PCA's own decomposition
    reconstruction = mean + coordinates @ axes
    expected = F.normalize(queries.double(), dim=-1) @ F.normalize(reconstruction, dim=-1).T
    assert torch.allclose(rep.score(rep.queries(queries), rep.documents(docs)).double(), expected, atol=1e-4)


def test_pca_scalar_converges_to_the_encoders_ranking_and_the_centred_variant_does_not(data):
    docs, queries = data
    full = peers.representation("pca-scalar", docs, dim=32, bits=8)
    assert _recall(full, docs, queries) >= 0.95
    recalls = [_recall(peers.representation("pca-scalar", docs, dim=16, bits=b), docs, queries) for b in (1, 2, 4)]
    assert recalls == sorted(recalls) and recalls[0] < recalls[-1]
    centred = scalar_representation(docs, peers.representation("pca", docs, dim=32), bits=8, reconstruct=False)
    assert _recall(centred, docs, queries) < _recall(full, docs, queries)


@pytest.mark.parametrize("dim,bits", [(32, 1), (16, 2), (24, 4)])
def test_rabitq_stores_faiss_code_size_and_follows_the_cosine(data, dim, bits):
    docs, queries = data
    rep = peers.representation("rabitq", docs, dim=dim, bits=bits, seed=1)
    stored = rep.documents(docs)
    assert stored.dtype == np.uint8 and stored.shape == (600, code_size(dim, bits)) == (600, rep.bytes_per_vector)
    if dim == 32 and bits == 1:
        assert code_size(32, 1) == 4 + 8  # the sign bits and 8 bytes of factors
    assert _recall(rep, docs, queries) > 0.15  # 10 of 600 at random: 0.017


def test_rabitq_at_full_width_and_4_bits_keeps_most_of_the_ranking_and_is_seeded(data):
    docs, queries = data
    rep = peers.representation("rabitq", docs, bits=4, seed=3)
    recalls = [_recall(peers.representation("rabitq", docs, bits=b, seed=3), docs, queries) for b in (1, 2)]
    assert recalls[0] < recalls[1] < _recall(rep, docs, queries) and _recall(rep, docs, queries) >= 0.7
    same = peers.representation("rabitq", docs, bits=4, seed=3)
    other = peers.representation("rabitq", docs, bits=4, seed=4)
    assert np.array_equal(rep.documents(docs), same.documents(docs))
    assert not np.array_equal(rep.documents(docs), other.documents(docs))
    with pytest.raises(ValueError, match="1, 2, 4 bits per dimension, not 3"):
        peers.representation("rabitq", docs, bits=3)


def test_pq_with_fewer_bits_per_sub_quantizer_and_seeds(data):
    docs, queries = data
    rep = peers.representation("pq", docs, code_bytes=8, bits=4, seed=1)
    stored = rep.documents(docs)
    assert stored.shape == (600, 8) and rep.bytes_per_vector == 8  # 16 sub-quantizers of 4 bits
    assert np.array_equal(stored, peers.representation("pq", docs, code_bytes=8, bits=4, seed=1).documents(docs))
    assert _recall(rep, docs, queries) > 0.3
    with pytest.raises(ValueError, match="16 must divide 30"):
        peers.representation("opq", docs[:, :30], code_bytes=8, bits=4)
    with pytest.raises(ValueError, match="not a whole number of 3-bit sub-quantizers"):
        peers.representation("pq", docs, code_bytes=8, bits=3)


def test_lsh_seeds_draw_other_hyperplanes(data):
    docs, _ = data
    default = peers.representation("lsh", docs, code_bytes=8).documents(docs)
    assert np.array_equal(default, peers.representation("lsh", docs, code_bytes=8).documents(docs))
    seeded = [peers.representation("lsh", docs, code_bytes=8, seed=s).documents(docs) for s in (1, 1, 2)]
    assert np.array_equal(seeded[0], seeded[1]) and not np.array_equal(seeded[0], seeded[2])


def test_the_low_bit_methods_need_their_settings(data):
    docs, _ = data
    assert peers.LOW_BIT_METHODS == ("pca-scalar", "rabitq")
    with pytest.raises(ValueError, match="needs bits"):
        peers.representation("pca-scalar", docs, dim=8)
    with pytest.raises(ValueError, match="needs 0 < dim <= 32"):
        peers.representation("pca-scalar", docs, bits=2)
