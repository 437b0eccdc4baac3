"""The library side of `qcompress quantize`: a file (or folder) of float32 angles -> one file of low-bit codes (SPEC
§7), without encoding any text again.

The levels follow the rule of `compress --bits` (`qcompress.codes.corpus_codec`): the model's own codec when one
is given and has those bits, else levels fitted on the first FIT_ROWS rows of the input. So quantizing the float32
file that `compress` wrote gives the file that `compress --bits` writes: the same codes under the same levels, and
the input's metadata (model, role, prompt) with the codec's description. The input streams through a batch at a
time (checked as every read is: `scan_embeddings`), its texts kept when it has them; the output is written by
`EmbeddingWriter`, so it appears only when complete.

Example:
    >>> import tempfile, pathlib
    >>> from qcompress.formats import EmbeddingWriter, read_embeddings
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> angles = torch.rand(100, 8) * math.pi
    >>> with EmbeddingWriter(folder / "f32.parquet", dim=8, metadata={"similarity": "fidelity"}) as w:
    ...     w.write([f"d{i}" for i in range(100)], angles)
    >>> done = quantize(folder / "f32.parquet", folder / "4bit.parquet", 4)
    >>> done.rows, done.codec
    (100, AngleCodes(dim=8, bits=4, bytes_per_vector=4))
    >>> torch.equal(read_embeddings(folder / "4bit.parquet").values, done.codec.decode(done.codec.encode(angles)))
    True
"""

from __future__ import annotations

import math  # noqa: F401 (the module docstring's example uses it)
from os import PathLike
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from qcompress.codes import FIT_ROWS, AngleCodes, corpus_codec, model_codec
from qcompress.compress import embedding_metadata
from qcompress.errors import InputError
from qcompress.formats import EmbeddingWriter, check_same_model, has_texts, read_embedding_metadata, scan_embeddings
from qcompress.formats.embeddings import CODES

__all__ = ["quantize", "Quantized"]

BATCH_ROWS = 1 << 16
# Metadata the output sets itself (the writer, from its arguments and version); the rest is the input's.
_OWN_KEYS = ("dim", "encoding", "column", CODES, "qcompress_version")


class Quantized(NamedTuple):
    """What `quantize` wrote: rows, the codec, and where its levels came from."""

    rows: int
    codec: AngleCodes
    levels_source: str


def quantize(source: str | PathLike, out: str | PathLike, bits: int, *, model=None,
             on_rows: Callable[[int], None] | None = None) -> Quantized:
    """Code the float32 angles of the embedding file or folder `source` at `bits` per qubit into the file `out`
    (module docstring); `model` (a `QCompressModel`, the one that made `source`) gives its codec's levels when it
    has `bits`. `on_rows(n)` reports rows written. `InputError` for a file of vectors or of codes (8-bit or
    low-bit), and for a model other than the source's."""
    meta = read_embedding_metadata(source)
    if meta["column"] == "vectors":
        raise InputError("holds cosine vectors; only angle files (fidelity models) are coded", file=source)
    if meta["encoding"] != "float32":
        coded = f"{meta[CODES].get('bits')}-bit" if meta["encoding"] == CODES else "uint8 (8-bit)"
        raise InputError(f"is already coded ({coded} codes); quantize the float32 file it was made from",
                         file=source, field="encoding")
    if model is not None:
        check_same_model(embedding_metadata(model), meta, what=f"the model and {source}")
    own, dim = model_codec(model), int(meta["dim"])
    first = _first_rows(source, dim) if own is None or own.bits != bits else torch.empty(0, dim)
    codec, levels_source = corpus_codec(bits, first, own)
    texts = has_texts(source)
    kept = {key: value for key, value in meta.items() if key not in _OWN_KEYS}
    with EmbeddingWriter(out, dim=dim, metadata=kept, encoding=CODES, codec=codec, levels_source=levels_source,
                         texts=texts) as writer:
        _, batches = scan_embeddings(source, batch_rows=BATCH_ROWS, unique=True, texts=texts)
        for batch in batches:
            writer.write(batch.ids.to_pylist(), batch.values, texts=batch.texts.to_pylist() if texts else None)
            if on_rows is not None:
                on_rows(len(batch.ids))
        rows = writer.rows_written
    return Quantized(rows, codec, levels_source)


def _first_rows(source: str | PathLike, dim: int) -> Tensor:
    """The angles of the first FIT_ROWS rows of `source` (all of them when it has fewer), across a folder's files."""
    _, batches = scan_embeddings(source, batch_rows=FIT_ROWS)
    parts, rows = [torch.empty(0, dim)], 0
    for batch in batches:
        parts.append(batch.values)
        rows += len(batch.values)
        if rows >= FIT_ROWS:
            break
    return torch.cat(parts)[:FIT_ROWS]
