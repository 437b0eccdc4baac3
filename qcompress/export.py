"""`export_features`: an embedding file as inner-product features, for a vector database (LanceDB, DuckDB, faiss...).

Log-fidelity is not an inner product, but it is bounded by one (SPEC §2): with f(θ) = [cos θ_i, sin θ_i] (2n
float32 numbers, cos and sin of each qubit side by side),

    log-fidelity(q, d) <= n · log(mean_i cos²((q_i - d_i)/2)) = n · log((1 + <f(q), f(d)>/n) / 2),

which increases with the inner product <f(q), f(d)> = Σ_i cos(q_i - d_i). So the documents with the largest inner
product are the candidates: a vector database's top 100 by inner product, re-ranked by the exact log-fidelity
(`qcompress score QUERIES CORPUS --candidates RUN`), gives the exact top 10 whenever the true top 10 are among
the candidates (the bound is not a ranking: check the recall on your data, as `score --index` does). Cosine
files export their vectors L2-normalised: there the inner product is the cosine itself.

The output is Parquet with `id`, `features` (fixed-size list of float32: 2n for angles and codes, decoded to
their angles, n for vectors), the `text` when the file keeps it, and the key-value metadata `qcompress.features`
(JSON: what the features are, the source's model fields, model_id and encoding). It is written atomically.

Example:
    >>> import tempfile, pathlib, pyarrow.parquet as pq
    >>> from qcompress.formats import EmbeddingWriter
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with EmbeddingWriter(folder / "c.parquet", dim=2, metadata={"similarity": "fidelity"}) as w:
    ...     w.write(["a", "b"], torch.tensor([[0.0, math.pi / 2], [math.pi, 0.0]]))
    >>> export_features(folder / "c.parquet", folder / "f.parquet")
    2
    >>> pq.read_table(folder / "f.parquet").column("features").to_pylist()[0]
    [1.0, 0.0, -4.371138828673793e-08, 1.0]
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import torch  # noqa: F401 (the module docstring's example uses it)
import torch.nn.functional as F

from qcompress.atomic import atomic_file
from qcompress.formats.embeddings import TEXT_COLUMN, has_texts, scan_embeddings
from qcompress.formats.lines import PathLike
from qcompress.formats.metadata import MODEL_FIELDS
from qcompress.search.features import angle_features

__all__ = ["export_features", "log_fidelity_bound", "FEATURES_KEY", "BATCH_ROWS"]

FEATURES_KEY = b"qcompress.features"  # not an embedding file: `score` refuses it (it has no qcompress.column)
BATCH_ROWS = 1 << 16

_ANGLES = ("features of qubit angles: cos(theta_i), sin(theta_i) side by side (2n float32); "
           "<f(q), f(d)> = sum_i cos(q_i - d_i), and log-fidelity(q, d) <= n * log((1 + <f(q), f(d)> / n) / 2): "
           "rank candidates by inner product, re-rank them by exact log-fidelity (qcompress score --candidates)")
_VECTORS = "the vectors L2-normalised (n float32): the inner product is the cosine"


def export_features(corpus: PathLike, out: PathLike) -> int:
    """Write the inner-product features of an embedding file or folder (module docstring) to `out`; the rows
    written. The corpus is read a batch at a time and checked as every read is (`scan_embeddings`)."""
    texts = has_texts(corpus)
    meta, batches = scan_embeddings(corpus, batch_rows=BATCH_ROWS, unique=True, texts=texts)
    vectors, dim = meta["column"] == "vectors", int(meta["dim"])
    width = dim if vectors else 2 * dim
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("features", pa.list_(pa.float32(), width),
                                                                     nullable=False)]
    if texts:
        fields.append(pa.field(TEXT_COLUMN, pa.string(), nullable=False))
    described = {"features": _VECTORS if vectors else _ANGLES, "dim": width, "qubits": None if vectors else dim,
                 "source": {key: meta.get(key) for key in (*MODEL_FIELDS, "model_id", "model_ref", "encoding")}}
    schema = pa.schema(fields, metadata={FEATURES_KEY: json.dumps(described, sort_keys=True)})
    rows = 0
    with atomic_file(out) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for batch in batches:
            values = batch.values.float()
            features = F.normalize(values, dim=-1) if vectors else angle_features(values)
            column = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1).numpy()), width)
            arrays = [batch.ids, column] + ([batch.texts] if texts else [])
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(batch.ids)
    return rows


def log_fidelity_bound(qubits: int, inner: float) -> float:
    """The upper bound on log-fidelity that an inner product of angle features gives (module docstring):
    n · log((1 + inner / n) / 2), increasing in `inner`.

    Example:
        >>> log_fidelity_bound(2, 2.0), log_fidelity_bound(2, 0.0) == 2 * math.log(0.5)
        (0.0, True)
    """
    return qubits * math.log((1 + inner / qubits) / 2) if inner > -qubits else -math.inf
