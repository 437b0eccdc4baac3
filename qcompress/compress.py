"""The library side of `qcompress compress`: texts -> one Parquet file of angles (or vectors), chunk by chunk.

The input is read and validated whole before anything is encoded (a bad line 10,000 fails at once, leaving no
output). It is then encoded in chunks of `chunk_size` rows, each chunk written as one row group in input order;
inside a chunk `model.encode` batches texts longest-first so that padding is small. `EmbeddingWriter` keeps
finished chunks in `OUT.partial/` and renames the complete file into place at the end, so an interrupted run
leaves no `OUT`, and `resume=True` continues after the chunks already written.

Example:
    >>> from qcompress.model import build_model                                   # doctest: +SKIP
    >>> from qcompress.formats import read_texts                                  # doctest: +SKIP
    >>> model = build_model("minilm", similarity="fidelity")                      # doctest: +SKIP
    >>> compress(read_texts("corpus.jsonl"), "corpus.parquet", model)             # doctest: +SKIP
    1398
"""

from __future__ import annotations

from os import PathLike
from typing import Callable, Sequence

from qcompress.cache import encode, weights_digest
from qcompress.errors import InputError
from qcompress._version import __version__
from qcompress.formats import EmbeddingWriter
from qcompress.quantization import check_encoding

__all__ = ["compress", "embedding_metadata", "model_id", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 4096  # rows per chunk = per row group: the unit of progress and of --resume


def model_id(model) -> str:
    """A digest of everything that decides a model's outputs: encoder and head weights, tokenizer, config.

    Two files with the same encoder name, head and size but different trained weights get different ids, so
    `check_same_model` refuses to score one against the other.
    """
    tok = model.tokenizer
    config = model.config
    fields = [config.head, config.dim, config.similarity, config.pooling, config.max_length, config.normalize,
              config.query_prompt, config.document_prompt]
    return weights_digest(model, type(tok).__name__, len(tok), *fields)


def embedding_metadata(model, role: str | None = None) -> dict:
    """The metadata of an embedding file: `model.describe()` (encoder, pooling, prompts...), `model_id`, the role
    its texts were encoded as and the prompt that put before them, qcompress version."""
    return dict(model.describe(), model_id=model_id(model), role=role, prompt=model.prompt(role),
                qcompress_version=__version__)


def compress(
    records: Sequence[tuple[str, str]],
    out: str | PathLike,
    model,
    *,
    batch_size: int = 64,
    encoding: str = "float32",
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    cache=None,
    on_batch: Callable[[int], None] | None = None,
    role: str | None = "document",
) -> int:
    """Encode (id, text) records with `model` and write them to the Parquet file `out`; return the rows encoded
    by this call (fewer than len(records) when resuming).

    Angle models write `angles` (float32, or 8-bit codes with encoding="uint8"); cosine models write float32
    `vectors`. `on_batch(n)` is called as rows are done (first with the rows skipped by `resume`). `cache`, a
    `qcompress.cache.PooledCache`, skips the encoder for texts it holds and keeps the new pooled outputs (so a
    later `evaluate --cache` of the same encoder does not encode the corpus again). `role` ("document" or
    "query") chooses the model's prompt put before each text, and is recorded in the file's metadata.
    """
    column = model.output_kind
    check_encoding(encoding, column)
    metadata = embedding_metadata(model, role)
    with EmbeddingWriter(
        out, dim=model.dim, metadata=metadata, encoding=encoding, column=column, resume=resume,
        row_group_size=chunk_size,
    ) as writer:
        start = writer.rows_written
        if start:
            if start > len(records) or records[start - 1][0] != writer.last_id:
                found = f'row {start} has id "{records[start - 1][0]}"' if start <= len(records) else (
                    f"it has only {len(records)} rows")
                raise InputError(
                    f'cannot resume: the earlier run wrote {start} rows ending with id "{writer.last_id}", but in '
                    f"this input {found}; use the same input, or run without --resume to start over"
                )
            if on_batch is not None:
                on_batch(start)
        for first in range(start, len(records), chunk_size):
            chunk = records[first : first + chunk_size]
            values = encode(model, [text for _, text in chunk], batch_size=batch_size, cache=cache, on_batch=on_batch,
                            role=role)
            writer.write([doc_id for doc_id, _ in chunk], values)
    return len(records) - start
