"""Exact search: topk/FidelityIndex against brute force (bit for bit, ties included), codes, Parquet, bad input."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import qcompress.search.features as features_module
import qcompress.search.pairs as pairs_module
import qcompress.search.stream as stream_module
from qcompress.codes import AngleCodes
from qcompress.errors import InputError
from qcompress.formats import EmbeddingWriter, dequantize_angles, quantize_angles
from qcompress.quantum import pairwise_log_fidelity
from qcompress.search import (
    FidelityIndex,
    brute_force_topk,
    brute_force_topk_cosine,
    decode_codes,
    search_parquet,
    topk,
    topk_cosine,
)


def angles(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.rand(rows, dim, generator=torch.Generator().manual_seed(seed)) * math.pi


def with_duplicates(corpus: torch.Tensor) -> torch.Tensor:
    """Copies of row 20 at rows 5 and 600 (before and after it): exact ties that the tie rule must settle."""
    corpus = corpus.clone()
    corpus[5] = corpus[20]
    corpus[min(600, len(corpus) - 1)] = corpus[20]
    return corpus


def assert_same(result, expected):
    assert torch.equal(result[1], expected[1])
    assert torch.equal(result[0], expected[0])  # bit for bit: the same reference formula per pair


@pytest.mark.parametrize("codes", [False, True], ids=["float32", "uint8"])
@pytest.mark.parametrize(
    "size, dim, m, k, candidates",
    [
        (1500, 128, 6, 10, 16),  # random angles: the seed cannot certify, refinement runs
        (1200, 37, 5, 7, 8),  # a partial last block of qubits
        (900, 5, 4, 3, 128),  # fewer qubits than a block; certified by the seed
        (700, 20, 1, 1, 4),  # a single query, k = 1
    ],
)
def test_topk_equals_brute_force(size, dim, m, k, candidates, codes):
    corpus = with_duplicates(angles(size, dim, 1))
    queries = angles(m, dim, 2)
    queries[0] = corpus[20]  # its three copies tie at score 0
    if codes:
        corpus = quantize_angles(corpus)
    expected = brute_force_topk(queries, corpus, k, corpus_codes=codes)
    assert_same(topk(queries, corpus, k, corpus_codes=codes, candidates=candidates), expected)
    index = FidelityIndex(corpus, corpus_codes=codes, candidates=candidates)
    assert_same(index.search(queries, k), expected)
    if k >= 3:
        assert expected[1][0, :3].tolist() == [5, 20, 600 if size > 600 else size - 1]
    # The scores are the log-fidelities of the (decoded) angles, sorted best first.
    docs = decode_codes(corpus) if codes else corpus
    full = pairwise_log_fidelity(queries, docs)
    assert torch.equal(expected[0], full.gather(1, expected[1]))
    assert (expected[0][:, :-1] >= expected[0][:, 1:]).all()


def test_the_seed_fails_then_refinement_settles_it():
    # Random angles are far apart: the Jensen bound is loose, the k-th seed score cannot beat the bound of the
    # (C+1)-th document, and every query goes through the staged refinement.
    corpus, queries = angles(3000, 64, 3), angles(8, 64, 4)
    index = FidelityIndex(corpus, candidates=10)
    result = index.search(queries, 10)
    assert index.last_stats["seed_certified"] == 0
    assert index.last_stats["refined_pairs"] > 0
    assert index.last_stats["exact_pairs"] < 8 * 3000 / 4  # ... and still scores a small part exactly
    assert_same(result, brute_force_topk(queries, corpus, 10))


def test_near_neighbours_are_certified_by_the_seed():
    g = torch.Generator().manual_seed(6)
    corpus = angles(3000, 64, 5)
    for centre in (3, 1000, 2999):  # 40 neighbours around each of three rows
        corpus[centre + 1 - 40 * (centre == 2999) : centre + 40 - 40 * (centre == 2999)] = (
            corpus[centre] + 0.05 * torch.randn(39, 64, generator=g)
        )
    queries = corpus[[3, 1000, 2999]] + 0.01 * torch.randn(3, 64, generator=g)
    index = FidelityIndex(corpus)
    result = index.search(queries, 5)
    assert index.last_stats["seed_certified"] == 3
    assert index.last_stats["exact_pairs"] == 3 * 128
    assert_same(result, brute_force_topk(queries, corpus, 5))


def test_near_ties_from_rounding_agree_with_brute_force():
    # Permuted copies of one row have the same true fidelity to a constant query, but float32 sums them in
    # different orders: scores differ in the last bits. The safety margins must keep every such candidate.
    g = torch.Generator().manual_seed(7)
    base = 1.3 + 0.8 * (torch.rand(48, generator=g) - 0.5)  # close to query 0, far from query 1
    perms = torch.stack([base[torch.randperm(48, generator=g)] for _ in range(400)])
    corpus = torch.cat([angles(1600, 48, 8), perms])[torch.randperm(2000, generator=g)]
    queries = torch.full((3, 48), 1.3)
    queries[1] = 0.2
    expected = brute_force_topk(queries, corpus, 25)
    top = expected[0][0]
    assert len(set(top.tolist())) < 25 and top[0] - top[-1] < 1e-5  # exact ties and last-bit near-ties
    for candidates in (1, 8, 300):
        for chunk in (1 << 22, 3000):  # rows refined pooled, or one at a time (the query broadcast)
            index = FidelityIndex(corpus, candidates=candidates, chunk_elements=chunk)
            assert_same(index.search(queries, 25), expected)


def test_many_copies_keep_the_lowest_indices_in_order():
    corpus = angles(1000, 16, 9)
    corpus[100:900] = corpus[50]
    scores, indices = topk(corpus[50:51], corpus, 40, candidates=8)
    assert indices[0].tolist() == [50] + list(range(100, 139))
    assert scores.eq(0).all()


@pytest.mark.parametrize("k", [250, 300, 10_000])
def test_k_at_or_above_the_corpus_size_returns_all_rows_sorted(k):
    corpus, queries = angles(250, 8, 10), angles(3, 8, 11)
    scores, indices = topk(queries, corpus, k)
    assert scores.shape == indices.shape == (3, 250)
    assert sorted(indices[0].tolist()) == list(range(250))
    assert_same((scores, indices), brute_force_topk(queries, corpus, k))


def test_empty_inputs():
    scores, indices = topk(torch.zeros(0, 4), torch.zeros(10, 4), 3)
    assert scores.shape == indices.shape == (0, 3)
    scores, indices = topk(torch.zeros(2, 4), torch.zeros(0, 4), 3)
    assert scores.shape == (2, 0)


def test_temporaries_stay_within_the_chunk(monkeypatch):
    corpus, queries = angles(3000, 40, 12), angles(5, 40, 13)
    expected = brute_force_topk(queries, corpus, 10)
    sizes = {"exact": [], "features": [], "cos": []}
    real = (pairs_module.log_cos2_half, features_module.angle_features, FidelityIndex._block_cos)

    def exact(delta):
        sizes["exact"].append(delta.numel())
        return real[0](delta)

    def features(x):
        sizes["features"].append(x.numel() * 2)
        return real[1](x)

    def block_cos(self, *args):
        out = real[2](self, *args)
        sizes["cos"].append(out.numel())
        return out

    monkeypatch.setattr(pairs_module, "log_cos2_half", exact)
    monkeypatch.setattr(features_module, "angle_features", features)
    monkeypatch.setattr(FidelityIndex, "_block_cos", block_cos)
    chunk = 2000
    index = FidelityIndex(corpus, cache_features=False, candidates=8, chunk_elements=chunk)
    assert index.features is None
    assert_same(index.search(queries, 10), expected)
    assert sizes["exact"] and max(sizes["exact"]) <= chunk
    assert sizes["cos"] and max(sizes["cos"]) <= chunk
    assert max(sizes["features"][1:]) <= chunk  # [0] is the queries' features
    assert index.last_stats["refined_pairs"] > 0


def test_decode_codes_matches_the_file_format():
    codes = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(decode_codes(codes), torch.from_numpy(dequantize_angles(codes.numpy())))


@pytest.mark.parametrize(
    "queries, corpus, k, kwargs, match",
    [
        (torch.zeros(4), torch.zeros(3, 4), 1, {}, "queries must be 2-d.*queries\\[None\\]"),
        (torch.zeros(1, 4), torch.zeros(2, 3, 4), 1, {}, "corpus must be 2-d"),
        (torch.zeros(1, 4), torch.zeros(3, 5), 1, {}, "4 qubits but the corpus has 5"),
        (torch.zeros(1, 4), torch.zeros(3, 4), 0, {}, "k must be a positive integer"),
        (torch.zeros(1, 4), torch.zeros(3, 4), True, {}, "k must be a positive integer"),
        (torch.tensor([[0.0, math.nan]]), torch.zeros(3, 2), 1, {}, "queries has 1 NaN"),
        (torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [0.0, math.inf]]), 1, {}, "corpus has NaN.*first in row 1"),
        (torch.zeros(1, 2), torch.zeros(3, 2, dtype=torch.uint8), 1, {}, "corpus_codes=True"),
        (torch.zeros(1, 2), torch.zeros(3, 2), 1, {"corpus_codes": True}, "expects a uint8 tensor"),
        (torch.zeros(1, 2, dtype=torch.long), torch.zeros(3, 2), 1, {}, "queries must hold float angles"),
        (torch.zeros(1, 2), torch.zeros(3, 2), 1, {"candidates": 0}, "candidates must be a positive"),
    ],
)
def test_bad_input_raises_value_error(queries, corpus, k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        topk(queries, corpus, k, **kwargs)


def test_brute_force_checks_its_input_too():
    with pytest.raises(ValueError, match="NaN"):
        brute_force_topk(torch.zeros(1, 2), torch.tensor([[math.nan, 0.0]]), 1)


def test_topk_cosine_equals_brute_force_with_ties():
    g = torch.Generator().manual_seed(14)
    corpus = torch.randn(2000, 24, generator=g)
    corpus[7] = corpus[3] * 2.0  # same direction: tie with row 3
    corpus[11] = 0.0  # a zero vector scores 0
    queries = torch.randn(4, 24, generator=g)
    queries[0] = corpus[3]
    expected = brute_force_topk_cosine(queries, corpus, 6)
    for candidates in (1, 32):
        assert_same(topk_cosine(queries, corpus, 6, candidates=candidates), expected)
    assert expected[1][0, :2].tolist() == [3, 7]
    assert topk_cosine(queries, corpus[:5], 50)[1].shape == (4, 5)
    with pytest.raises(ValueError, match="same model"):
        topk_cosine(queries, corpus[:, :3], 2)


def write_embeddings(path, ids, values, *, encoding="float32", column="angles", row_group_size=300):
    meta = {"encoder": "test", "similarity": "cosine" if column == "vectors" else "fidelity"}
    with EmbeddingWriter(path, dim=values.shape[1], metadata=meta, encoding=encoding, column=column,
                         row_group_size=row_group_size) as writer:
        writer.write(ids, values)


@pytest.mark.parametrize("encoding", ["float32", "uint8"])
def test_search_parquet_streams_a_folder(tmp_path, encoding):
    corpus = with_duplicates(angles(1500, 24, 15))
    ids = [f"doc{i}" for i in range(len(corpus))]
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_embeddings(folder / "a.parquet", ids[:700], corpus[:700].numpy(), encoding=encoding)
    write_embeddings(folder / "b.parquet", ids[700:], corpus[700:].numpy(), encoding=encoding)
    queries = angles(4, 24, 16)
    queries[0] = corpus[20]
    codes = encoding == "uint8"
    expected = brute_force_topk(queries, quantize_angles(corpus) if codes else corpus, 8, corpus_codes=codes)
    scores, found = search_parquet(queries, folder, 8, batch_rows=256, candidates=8)
    assert torch.equal(scores, expected[0])
    assert found == [[ids[i] for i in row] for row in expected[1].tolist()]
    single = search_parquet(queries, folder / "a.parquet", 3000)
    assert len(single[1][0]) == 700


@pytest.mark.parametrize("bits", [1, 3, 4])
def test_search_parquet_ranks_low_bit_codes_as_the_oracle(tmp_path, bits):
    # float32 queries against the levels of the stored codes: brute force over the decoded codes, bit for bit,
    # with the batches' top-k merged (each batch's search pruned by the running k-th score) and ties to the lower row
    corpus = with_duplicates(angles(1500, 24, 30 + bits))
    codec = AngleCodes.fit(corpus, bits)
    ids = [f"doc{i}" for i in range(len(corpus))]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, part in (("a.parquet", slice(0, 700)), ("b.parquet", slice(700, None))):
        with EmbeddingWriter(folder / name, dim=24, metadata={"encoder": "test", "similarity": "fidelity"},
                             encoding="codes", codec=codec, row_group_size=300) as writer:
            writer.write(ids[part], corpus[part])
    queries = angles(5, 24, 40 + bits)
    queries[0] = corpus[20]
    expected = brute_force_topk(queries, codec.decode(codec.encode(corpus)), 8)
    scores, found = search_parquet(queries, folder, 8, batch_rows=256)
    assert torch.equal(scores, expected[0])
    assert found == [[ids[i] for i in row] for row in expected[1].tolist()]
    with pytest.raises(ValueError, match="23 qubits but the corpus has 24"):
        search_parquet(queries[:, :23], folder, 3)


def test_search_parquet_reads_fewer_rows_a_batch_for_many_queries(tmp_path, monkeypatch):
    # The (queries x rows) scores of a batch stay under SCORES_PER_BATCH: 40 queries with a budget of 4,000 scores
    # read 100 rows a batch, and the result is the same as the whole corpus's.
    corpus = angles(1000, 8, 21)
    ids = [f"doc{i}" for i in range(len(corpus))]
    write_embeddings(tmp_path / "c.parquet", ids, corpus.numpy())
    queries = angles(40, 8, 22)
    monkeypatch.setattr(stream_module, "SCORES_PER_BATCH", 4000)
    monkeypatch.setattr(stream_module, "MIN_BATCH_ROWS", 1)
    seen = []
    original = stream_module.scan_embeddings
    monkeypatch.setattr(stream_module, "scan_embeddings",
                        lambda path, **kw: seen.append(kw["batch_rows"]) or original(path, **kw))
    scores, found = search_parquet(queries, tmp_path / "c.parquet", 5, candidates=8)
    expected = brute_force_topk(queries, corpus, 5)
    assert seen == [100]
    assert torch.equal(scores, expected[0])
    assert found == [[ids[i] for i in row] for row in expected[1].tolist()]


def test_search_parquet_ranks_vectors_by_cosine(tmp_path):
    vectors = torch.randn(500, 12, generator=torch.Generator().manual_seed(17))
    write_embeddings(tmp_path / "v.parquet", [f"v{i}" for i in range(500)], vectors.numpy(), column="vectors")
    queries = vectors[[9, 99]]
    scores, found = search_parquet(queries, tmp_path / "v.parquet", 3, batch_rows=128)
    expected = brute_force_topk_cosine(queries, vectors, 3)
    assert found == [[f"v{i}" for i in row] for row in expected[1].tolist()]
    assert torch.equal(scores, expected[0])


def test_search_parquet_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        search_parquet(torch.zeros(1, 4), tmp_path / "missing.parquet", 3)
    write_embeddings(tmp_path / "e.parquet", ["a", "b"], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="3 qubits but the corpus has 4"):
        search_parquet(torch.zeros(1, 3), tmp_path / "e.parquet", 1)
    with pytest.raises(ValueError, match="k must be"):
        search_parquet(torch.zeros(1, 4), tmp_path / "e.parquet", 0)


@pytest.mark.parametrize("bad, words", [(math.nan, "has NaN"), (3.5, "angles must be radians in \\[0, pi\\]")])
def test_search_parquet_names_the_bad_row(tmp_path, bad, words):
    write_embeddings(tmp_path / "ok.parquet", ["a", "b", "c"], np.zeros((3, 2), dtype=np.float32))
    table = pq.read_table(tmp_path / "ok.parquet")
    values = pa.array([[0.0, 0.0], [0.0, 0.0], [bad, 0.0]], type=table.schema.field("angles").type)
    pq.write_table(table.set_column(1, table.schema.field("angles"), values), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=f'bad.parquet.*row 3 \\(id "c"\\).*{words}'):
        search_parquet(torch.zeros(1, 2), tmp_path / "bad.parquet", 1)


def test_one_shot_search_finds_the_first_bad_row_while_scanning():
    # Without cached features the corpus is checked chunk by chunk during the scan (no separate pass): the error
    # must still name the first bad row, whichever chunk or thread met it first.
    corpus = torch.rand(5000, 8) * math.pi
    corpus[4321, 3] = math.inf
    corpus[2500, 0] = math.nan
    with pytest.raises(ValueError, match="corpus has NaN or infinite values \\(first in row 2500\\)"):
        topk(torch.rand(3, 8), corpus, 2, candidates=4, chunk_elements=1 << 10)
    index = FidelityIndex(corpus[:2000], cache_features=False, candidates=4, chunk_elements=1 << 10)
    index.search(torch.rand(3, 8), 2)
    assert index.max_abs == float(corpus[:2000].abs().max())  # measured by the scan, as a separate pass would


@pytest.mark.parametrize("shape", [(40, 6), (40, 7), (40, 2)])
def test_code_features_by_pairs_equal_one_lookup_per_code(shape):
    from qcompress.search.features import CODE_FEATURES, code_features

    codes = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    for part in (codes, codes[:, 1:3], codes[::2]):  # even and odd widths, contiguous or not
        expected = CODE_FEATURES[part.long()].reshape(part.shape[0], -1)
        assert torch.equal(code_features(part), expected)


def test_read_ahead_yields_in_order_and_raises_where_the_error_is():
    from qcompress.search.stream import read_ahead

    def items():
        yield 1
        yield 2
        raise ValueError("bad batch 3")

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]
    assert list(read_ahead(iter([]))) == []


@pytest.mark.parametrize("cuts", [[0, 40], [0, 1, 2, 40], [0, 13, 27, 40]])
def test_topk_merged_batch_by_batch_equals_the_whole(cuts):
    # Scores on a coarse grid: many exact ties, some straddling the batch boundaries.
    scores = torch.randint(0, 5, (3, 40), generator=torch.Generator().manual_seed(30)).float()
    from qcompress.search import TopK, select_topk

    best = TopK(3, 7)
    for start, end in zip(cuts, cuts[1:]):
        part, local = select_topk(scores[:, start:end], 7)
        best.add(part, local + start)
    assert_same((best.scores, best.indices), select_topk(scores, 7))
    assert best.scores.dtype == torch.float32 and best.indices.dtype == torch.int64


@pytest.mark.parametrize("codes", [False, True])
def test_pair_scores_do_not_depend_on_how_pairs_are_cut(codes):
    from qcompress.search import cosine_pairs, log_fidelity_pairs

    corpus, queries = angles(50, 24, 31), angles(4, 24, 32)
    corpus = quantize_angles(corpus) if codes else corpus
    rows, docs = torch.randint(0, 4, (300,)), torch.randint(0, 50, (300,))
    whole = log_fidelity_pairs(queries, corpus, rows, docs, codes=codes, chunk_elements=1 << 20)
    assert torch.equal(whole, log_fidelity_pairs(queries, corpus, rows, docs, codes=codes, chunk_elements=24 * 7))
    full = pairwise_log_fidelity(queries, decode_codes(corpus) if codes else corpus)
    assert torch.equal(whole, full[rows, docs])  # the oracle's formula, bit for bit
    if not codes:
        unit = torch.nn.functional.normalize(queries, dim=-1)
        pieces = cosine_pairs(unit, corpus, rows, docs, chunk_elements=5)
        assert torch.equal(cosine_pairs(unit, corpus, rows, docs), pieces)
