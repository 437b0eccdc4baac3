"""Low-bit angle codes (qcompress.codes): the codec, its storage, and exact top-k against the brute-force oracle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qcompress.search.codes as search_codes
from qcompress.codes import CODES_FILE, FIT_ROWS, PI32, AngleCodes, corpus_codec, stored_bits, topk
from qcompress.errors import InputError
from qcompress.scalar_codes import unpack
from qcompress.search import brute_force_topk


def crowded(rows: int, dim: int, seed: int, spread: float = 0.2) -> torch.Tensor:
    """Angles crowded around pi/2, as a trained head's are."""
    g = torch.Generator().manual_seed(seed)
    return (math.pi / 2 + spread * torch.randn(rows, dim, generator=g)).clamp(0, math.pi)


def oracle(queries, codes, codec, k, symmetric=False):
    if symmetric:
        queries = codec.decode(codec.encode(queries))
    return brute_force_topk(queries, codec.decode(codes), k)


def assert_same(result, expected):
    assert torch.equal(result[1], expected[1])
    assert torch.equal(result[0], expected[0])  # bit for bit: the reference formula per pair


# -- the codec ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip_every_bit_width(bits):
    for codec in (AngleCodes.fit(crowded(500, 11, bits), bits), AngleCodes.uniform(11, bits)):
        on_levels = codec.levels.T.contiguous()  # row l holds level l of every qubit
        codes = codec.encode(on_levels)
        assert codes.shape == (1 << bits, math.ceil(11 * bits / 8)) and codes.dtype == torch.uint8
        assert torch.equal(codec.decode(codes), on_levels)
        angles = crowded(300, 11, 99, spread=0.6)
        decoded = codec.decode(codec.encode(angles))
        # each angle's nearest level (equal distances: either level is the nearest)
        nearest = (angles[:, :, None] - codec.levels[None]).abs().min(2).values
        assert torch.equal((angles - decoded).abs(), nearest)


def test_packed_bit_order_by_hand():
    codec = AngleCodes.uniform(dim=3, bits=2)  # levels 0.39, 1.18, 1.96, 2.75
    codes = codec.encode(torch.tensor([[0.0, 1.2, 3.1]]))  # codes 0, 1, 3: 0b11_01_00, qubit 0 in the low bits
    assert codes.tolist() == [[0b110100]]
    codec = AngleCodes.uniform(dim=3, bits=3)
    angles = codec.levels[0][torch.tensor([[5, 1, 7]])]  # codes 5, 1, 7: 101 | 001 | 111 across two bytes
    assert codec.encode(angles).tolist() == [[0b11001101, 0b00000001]]
    assert AngleCodes.uniform(dim=1, bits=8).encode(torch.tensor([[math.pi]])).tolist() == [[255]]


@pytest.mark.parametrize("bits", range(1, 9))
def test_faiss_reads_the_packed_layout(bits):
    codec = AngleCodes.fit(crowded(200, 13, bits), bits)
    codes, queries = codec.encode(crowded(50, 13, 7)), crowded(3, 13, 8)
    layout = search_codes._Layout.of(codec)
    # one byte per group of floor(8 / bits) qubits, their codes LSB first
    per_qubit = unpack(codes, bits, 13).long()
    group = 8 // bits
    padded = torch.nn.functional.pad(per_qubit, (0, layout.subquantizers * group - 13)).view(50, -1, group)
    expected = (padded << (torch.arange(group) * bits)).sum(2)
    assert torch.equal(torch.from_numpy(layout.regroup(codes.numpy())).long(), expected)
    # faiss's sums of the query tables over those bytes are the scores of the decoded codes, up to rounding
    index = layout.index(codes.numpy(), layout.centroids())
    values, rows = index.search(layout.query_vectors(queries, codec.levels), 50)
    reference = torch.stack([(torch.log(torch.cos((q[None].double() - codec.decode(codes).double()) / 2) ** 2)).sum(1)
                             for q in queries])
    assert np.allclose(values, reference.gather(1, torch.from_numpy(rows)).numpy(), atol=1e-4)


def test_level_fitting_on_degenerate_data():
    same = torch.full((40, 3), 1.25)
    codec = AngleCodes.fit(same, 3)
    assert torch.equal(codec.levels, torch.full((3, 8), 1.25))
    assert torch.equal(codec.decode(codec.encode(same)), same)
    few = torch.tensor([[0.5], [1.0], [1.0], [2.0]] * 5)  # 3 distinct angles, 16 levels
    codec = AngleCodes.fit(few, 4)
    assert torch.equal(codec.decode(codec.encode(few)), few)
    assert (codec.levels[:, 1:] >= codec.levels[:, :-1]).all()
    # angles a rounding beyond [0, pi] give levels within it
    edge = AngleCodes.fit(torch.tensor([[-1e-6, 3.1416], [-1e-6, 3.1416]]), 1)
    assert edge.levels.min() >= 0 and edge.levels.max() <= PI32


def test_fitted_levels_beat_uniform_levels_on_crowded_angles():
    # the probe of issue 26 at small scale: recall@10 against the float32 angles' top-10, 2 bits per qubit
    docs, queries = crowded(3000, 32, 1, spread=0.1), crowded(20, 32, 2, spread=0.1)
    truth = brute_force_topk(queries, docs, 10)[1]

    def recall(codec):
        found = topk(queries, codec.encode(docs), codec, 10)[1]
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())])

    fitted, uniform = recall(AngleCodes.fit(docs, 2)), recall(AngleCodes.uniform(32, 2))
    assert fitted > uniform + 0.2, (fitted, uniform)


# -- bad input ----------------------------------------------------------------------------------------------------


def test_a_corrupt_or_short_code_column_is_a_one_line_error():
    codec = AngleCodes.uniform(dim=13, bits=4)  # 7 bytes, 4 bits unused in the last
    good = codec.encode(crowded(5, 13, 0))
    for bad, message in [
        (good[:, :6], r"uint8 rows of 7 bytes, got torch.uint8 of shape \(5, 6\)"),
        (good.to(torch.int16), "got torch.int16"),
        (good[0], r"shape \(7,\)"),
    ]:
        for call in (lambda: codec.decode(bad), lambda: topk(crowded(1, 13, 1), bad, codec, 3)):
            with pytest.raises(ValueError, match=message) as err:
                call()
            assert "\n" not in str(err.value)
    corrupt = good.clone()
    corrupt[3, -1] |= 0x80
    with pytest.raises(ValueError, match="codes row 3 sets unused bits of its last byte"):
        codec.decode(corrupt)


@pytest.mark.parametrize(
    "levels, bits, message",
    [
        (torch.tensor([[0.1, float("nan")]]), 1, "NaN"),
        (torch.tensor([[0.1, 3.2]]), 1, r"within \[0, pi\]; qubit 0"),
        (torch.tensor([[0.1, 0.2], [0.5, 0.4]]), 1, "ascending in each qubit; qubit 1"),
        (torch.zeros(2, 3), 1, r"shape \(qubits, 2\)"),
        (torch.zeros(2, 2, dtype=torch.int64), 1, "float angles"),
        (torch.zeros(2, 2), 9, "bits must be an integer from 1 to 8"),
    ],
)
def test_levels_are_checked(levels, bits, message):
    with pytest.raises(ValueError, match=message):
        AngleCodes(levels, bits)


def test_angles_and_arguments_are_checked():
    codec = AngleCodes.uniform(dim=3, bits=2)
    with pytest.raises(ValueError, match="have 4 qubits but the codec has 3"):
        codec.encode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="query_angles must be float"):
        topk(torch.zeros(1, 3, dtype=torch.uint8), codec.encode(torch.zeros(2, 3)), codec, 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        topk(torch.zeros(1, 3), codec.encode(torch.zeros(2, 3)), codec, 0)
    with pytest.raises(ValueError, match="at least one row"):
        AngleCodes.fit(torch.zeros(0, 3), 2)


# -- storage ------------------------------------------------------------------------------------------------------


def test_save_load_and_metadata_round_trip(tmp_path):
    codec = AngleCodes.fit(crowded(400, 9, 3), 5)
    codec.save(tmp_path / CODES_FILE)
    assert AngleCodes.load(tmp_path / CODES_FILE) == codec
    meta = json.loads(json.dumps(codec.to_metadata()))  # as it travels in Parquet key-value metadata
    assert AngleCodes.from_metadata(meta) == codec
    assert meta["bits"] == 5 and meta["bytes_per_vector"] == 6 and "LSB first" in meta["bit_order"]


def test_a_reader_outside_qcompress_decodes_with_the_metadata():
    codec = AngleCodes.fit(crowded(300, 7, 4), 3)
    codes = codec.encode(crowded(10, 7, 5)).numpy()
    meta = json.loads(json.dumps(codec.to_metadata()))
    b, d = meta["bits"], meta["dim"]
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : d * b].reshape(-1, d, b)  # as bit_order says
    values = (bits * (1 << np.arange(b))).sum(2)
    angles = np.array(meta["levels"], dtype=np.float32)[np.arange(d), values]
    assert np.array_equal(angles, codec.decode(torch.from_numpy(codes)).numpy())


def test_bad_codec_files_and_descriptions_are_input_errors(tmp_path):
    path = tmp_path / CODES_FILE
    path.write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=f"{CODES_FILE}: not a readable safetensors file"):
        AngleCodes.load(path)
    from safetensors.torch import save_file

    save_file({"levels": torch.tensor([[0.2, 0.1]])}, str(path), metadata={"format": "qcompress-angle-codes",
                                                                            "version": "1", "bits": "1"})
    with pytest.raises(InputError, match="not a valid codec .*ascending"):
        AngleCodes.load(path)
    save_file({"weights": torch.zeros(1)}, str(path))
    with pytest.raises(InputError, match="not a qcompress-angle-codes file"):
        AngleCodes.load(path)
    meta = AngleCodes.uniform(2, 1).to_metadata()
    with pytest.raises(InputError, match='field "dim"'):
        AngleCodes.from_metadata({**meta, "dim": 3})
    with pytest.raises(InputError, match='field "levels"'):
        AngleCodes.from_metadata({**meta, "levels": [[0.0]]})


# -- which levels a corpus is coded with ---------------------------------------------------------------------------


class Model:
    """A stand-in for QCompressModel: what the levels rule reads."""

    def __init__(self, codec=None, output_kind="angles"):
        self.codec, self.output_kind = codec, output_kind


def test_the_levels_rule_of_compress_evaluate_and_quantize():
    own = AngleCodes.fit(crowded(300, 6, 20), 4)
    assert (stored_bits(Model(own), None), stored_bits(Model(own), 0), stored_bits(Model(own), 2)) == (4, 0, 2)
    assert stored_bits(Model(), None) == 0 and stored_bits(object(), None) == 0  # a model without a codec
    with pytest.raises(ValueError, match="outputs cosine vectors"):
        stored_bits(Model(output_kind="vectors"), 4)
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        stored_bits(Model(), 9)
    corpus = crowded(FIT_ROWS + 500, 6, 21)
    assert corpus_codec(4, corpus, own) == (own, "the model's codec (codes.safetensors)")
    fitted, source = corpus_codec(3, corpus, own)  # the model's codec has other bits: fitted on the corpus
    assert fitted == AngleCodes.fit(corpus[:FIT_ROWS], 3) != AngleCodes.fit(corpus, 3)
    assert source == f"fitted per qubit (Lloyd-Max, seed 0) on the first {FIT_ROWS} rows of the corpus"
    assert corpus_codec(2, corpus[:0])[0] == AngleCodes.uniform(6, 2)


# -- exact top-k --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
def test_topk_equals_the_oracle_at_every_bit_width(bits, symmetric):
    docs = crowded(700, 21, bits)
    docs[5] = docs[300] = docs[20]  # exact ties that the tie rule must settle
    codec = AngleCodes.fit(docs, bits)
    codes, queries = codec.encode(docs), crowded(6, 21, 100 + bits)
    queries[0] = docs[20]
    for k in (1, 10):
        assert_same(topk(queries, codes, codec, k, symmetric=symmetric), oracle(queries, codes, codec, k, symmetric))


def test_topk_edge_sizes():
    codec = AngleCodes.uniform(dim=4, bits=4)
    codes = codec.encode(crowded(5, 4, 0))
    scores, indices = topk(crowded(2, 4, 1), codes, codec, 9)  # k > N: every document
    assert scores.shape == indices.shape == (2, 5) and sorted(indices[0].tolist()) == [0, 1, 2, 3, 4]
    assert_same((scores, indices), oracle(crowded(2, 4, 1), codes, codec, 9))
    for result in (topk(torch.zeros(0, 4), codes, codec, 3), topk(torch.zeros(2, 4), codes[:0], codec, 3)):
        assert result[0].shape in ((0, 3), (2, 0)) and result[0].dtype == torch.float32
        assert result[1].dtype == torch.int64


def test_many_ties_widen_the_candidates_until_certified():
    # 1 bit on 2 qubits: 4 distinct codes among 500 rows, so the k-th score is shared by ~125 rows
    codec = AngleCodes.fit(crowded(500, 2, 0), 1)
    codes, queries = codec.encode(crowded(500, 2, 0)), crowded(3, 2, 1)
    for k in (1, 7, 130):
        assert_same(topk(queries, codes, codec, k, candidates=1), oracle(queries, codes, codec, k))


def test_near_ties_by_rounding_are_settled_by_the_certificate():
    # permutations of one multiset of codes under uniform levels and a constant query: equal scores in exact
    # arithmetic, which float sums in faiss's order and in the reference's order rank differently
    rng = np.random.default_rng(0)
    codec = AngleCodes.uniform(dim=12, bits=3)
    rows = np.stack([rng.permutation([0, 1, 2, 3, 4, 5, 6, 7, 0, 3, 5, 6]) for _ in range(2000)])
    codes = codec.encode(codec.levels[0][torch.from_numpy(rows)])
    queries = torch.tensor([[1.0] * 12, [2.0] * 12, [0.3] * 12])
    assert_same(topk(queries, codes, codec, 5, candidates=1), oracle(queries, codes, codec, 5))


def test_shards_and_threads_give_the_same_result(monkeypatch):
    monkeypatch.setattr(search_codes, "MIN_SHARD_ROWS", 100)
    docs = crowded(1000, 16, 2)
    codec = AngleCodes.fit(docs, 4)
    codes, queries = codec.encode(docs), crowded(40, 16, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # 3 shards of 334 rows, 3 blocks of queries
        assert_same(topk(queries, codes, codec, 10, candidates=4), oracle(queries, codes, codec, 10))
    finally:
        torch.set_num_threads(threads)


def test_an_index_built_once_answers_every_search_and_a_floor_only_drops_what_cannot_enter():
    docs = crowded(900, 16, 11)
    codec = AngleCodes.fit(docs, 3)
    codes = codec.encode(docs)
    index = search_codes.CodeIndex(codes, codec)
    assert len(index) == 900
    for seed, k, symmetric in ((12, 1, False), (13, 10, True), (14, 900, False)):
        queries = crowded(5, 16, seed)
        assert_same(index.search(queries, k, symmetric=symmetric), oracle(queries, codes, codec, k, symmetric))
    # a floor (the k-th score of earlier batches) may leave out what scores below it; the rows stay exact above it
    codec = AngleCodes.uniform(dim=4, bits=2)  # levels 0.39, 1.18, 1.96, 2.75
    near = [[0.4] * 4, [0.4, 0.4, 0.4, 1.2], [0.4, 0.4, 1.2, 1.2]]  # three distinct best scores ...
    codes = codec.encode(torch.tensor([[2.7] * 4] * 100 + near + [[2.0] * 4] * 300))  # ... then 300 tied ones
    queries = torch.full((2, 4), 0.4)
    index = search_codes.CodeIndex(codes, codec)
    scores, indices = oracle(queries, codes, codec, 7)
    rounds = []
    original = index._candidates
    index._candidates = lambda *args: rounds.append(1) or original(*args)
    assert_same(index.search(queries, 7, candidates=1), (scores, indices))
    assert len(rounds) > 1  # the ties at the 7th score take more candidates to settle ...
    rounds.clear()
    floor = scores[:, 2]  # ... but when only the three best can enter, none
    got_scores, got = index.search(queries, 7, floor=floor, candidates=1)
    assert len(rounds) == 1
    assert torch.equal(got_scores[:, :3], scores[:, :3]) and torch.equal(got[:, :3], indices[:, :3])


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), dim=st.integers(1, 20), size=st.integers(1, 80), m=st.integers(1, 4),
       k=st.integers(1, 90), pool=st.integers(1, 80), symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_topk_equals_the_oracle_on_random_data(bits, dim, size, m, k, pool, symmetric, seed):
    rng = np.random.default_rng(seed)
    distinct = rng.uniform(0, math.pi, (pool, dim)).astype(np.float32)  # a small pool: duplicate rows, ties
    docs = torch.from_numpy(distinct[rng.integers(0, pool, size)])
    codec = AngleCodes.fit(docs, bits, seed=seed)
    codes, queries = codec.encode(docs), torch.from_numpy(rng.uniform(0, math.pi, (m, dim)).astype(np.float32))
    assert_same(topk(queries, codes, codec, k, symmetric=symmetric, candidates=int(rng.integers(1, 8))),
                oracle(queries, codes, codec, k, symmetric))
