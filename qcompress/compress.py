"""The library side of `qcompress compress`: texts -> one Parquet file of angles (or vectors), chunk by chunk.

The input streams through: each chunk of `chunk_size` records is read (the reader checks every line and refuses
duplicate ids, in memory that grows with the ids only: `qcompress.formats.ids`), encoded and written as one row
group, in input order, before the next is read; memory does not grow with the corpus. Inside a chunk
`model.encode` batches texts longest-first so that padding is small. `EmbeddingWriter` keeps each finished chunk
as a part in `OUT.partial/` (locked against a second run writing OUT) and at the end rewrites the parts into OUT
through pyarrow, so an interrupted run (or a bad line half-way) leaves no `OUT`, and `resume=True` continues after
the chunks already written: each chunk's input (ids and texts) has a digest in the writer's journal, and a resume
whose input differs in any finished chunk is refused, naming it.

Low-bit codes (`bits`, SPEC §7; by default for a model trained with `--bits`): the levels are the model's when
it has a codec of those bits, else fitted on the first `qcompress.codes.FIT_ROWS` (4,096) rows of the input
(`qcompress.codes.corpus_codec`): those rows are encoded first, then the writer opens with the codec in its
metadata, which its journal keeps, so that a resumed run codes its rows with the same levels
(`qcompress.formats.writer.earlier_metadata`).

Example:
    >>> from qcompress.model import build_model                                   # doctest: +SKIP
    >>> from qcompress.formats import iter_texts                                  # doctest: +SKIP
    >>> model = build_model("minilm", similarity="fidelity")                      # doctest: +SKIP
    >>> compress(iter_texts("corpus.jsonl"), "corpus.parquet", model)             # doctest: +SKIP
    Compressed(rows=1398, resumed=0)
"""

from __future__ import annotations

import hashlib
import itertools
from os import PathLike
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import Tensor

from qcompress.cache import encode, weights_digest
from qcompress.codes import FIT_ROWS, AngleCodes, corpus_codec, model_codec, stored_bits
from qcompress.errors import InputError
from qcompress._version import __version__
from qcompress.formats import EmbeddingWriter
from qcompress.formats.embeddings import CODES
from qcompress.formats.writer import earlier_metadata
from qcompress.quantization import check_encoding

__all__ = ["compress", "Compressed", "chunk_digest", "embedding_metadata", "model_id", "DEFAULT_CHUNK"]

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
    """The metadata of an embedding file: `model.describe()` (encoder, pooling, prompts...), `model_id`, how to
    load the model again (`model_ref`, when the model knows: `QCompressModel.reference`), the role its texts were
    encoded as and the prompt put before them, the backend that ran the encoder (qcompress.backends: the same model,
    so `model_id` is the same; a resume with another backend is refused), qcompress version."""
    reference = getattr(model, "reference", None)
    return dict(model.describe(), model_id=model_id(model), role=role, prompt=model.prompt(role),
                backend=getattr(model, "backend_variant", "torch"), qcompress_version=__version__,
                **({"model_ref": reference} if reference else {}))


class Compressed(NamedTuple):
    """What `compress` did: rows in the file, and how many of them an earlier run had written (`resume`). (A file
    of low-bit codes names its codec in its metadata: `qcompress.formats.embeddings.codec_of`.)"""

    rows: int
    resumed: int


def chunk_digest(records: list[tuple[str, str]]) -> str:
    """A digest of a chunk's ids and texts, in order (length-prefixed: no two chunks share one by concatenation).

    Example:
        >>> chunk_digest([("a", "bc")]) == chunk_digest([("ab", "c")])
        False
    """
    h = hashlib.blake2b(digest_size=16)
    for doc_id, text in records:
        for part in (doc_id.encode("utf-8"), text.encode("utf-8")):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


Encoded = Callable[[list[tuple[str, str]]], Tensor]  # a chunk of records -> its angles


def _chunks(records: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def _skip_finished(records: Iterator[tuple[str, str]], writer: EmbeddingWriter) -> None:
    """Consume the input rows that the earlier run wrote, checking each finished chunk's digest."""
    first = 1
    for number, group in enumerate(writer.row_groups, 1):
        chunk = list(itertools.islice(records, group.rows))
        last = first + group.rows - 1
        if len(chunk) < group.rows:
            raise InputError(
                f"cannot resume: the earlier run wrote {writer.rows_written} rows, but this input has only "
                f"{first - 1 + len(chunk)}; use the same input, or run without --resume to start over"
            )
        if group.digest is None or chunk_digest(chunk) != group.digest:
            raise InputError(
                f"cannot resume: chunk {number} (rows {first}-{last}) of this input differs from the one the earlier "
                "run wrote (ids or texts changed); use the same input, or run without --resume to start over"
            )
        first = last + 1


def compress(
    records: Iterable[tuple[str, str]],
    out: str | PathLike,
    model,
    *,
    batch_size: int = 64,
    encoding: str = "float32",
    bits: int | None = None,
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    cache=None,
    on_batch: Callable[[int], None] | None = None,
    role: str | None = "document",
    store_text: bool = False,
) -> Compressed:
    """Encode (id, text) records with `model` and write them to the Parquet file `out`, a chunk at a time.

    `records` may be any iterable (`qcompress.formats.iter_texts` streams a file, checking it as it goes); ids must be
    unique (the readers check). Angle models write `angles` (float32, or 8-bit codes with encoding="uint8") or
    low-bit `codes` (`bits` per qubit, module docstring; None: the model's own bits when it has a codec, else
    float32; 0: float32); cosine models write float32 `vectors`; `store_text=True` adds each row's `text`.
    `on_batch(n)` is called as rows are done (first with the rows skipped by `resume`). `cache`, a
    `qcompress.cache.PooledCache`, skips the encoder for texts it holds and keeps the new pooled outputs (so a later
    `evaluate --cache` of the same encoder does not encode the corpus again). `role` ("document" or "query") chooses
    the model's prompt put before each text, and is recorded in the file's metadata. Raises `InputError` when
    another run is writing `out`, or when `resume` finds that the earlier run's input differs from `records`.
    """
    column = model.output_kind
    check_encoding(encoding, column)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if encoding != "float32" and bits:
        raise InputError(f"{encoding} encoding and {bits}-bit codes are two ways to store the angles; choose one")
    bits = stored_bits(model, bits, role) if encoding == "float32" else 0
    records = iter(records)

    def encoded(chunk: list[tuple[str, str]]) -> Tensor:
        return encode(model, [t for _, t in chunk], batch_size=batch_size, cache=cache, on_batch=on_batch, role=role)

    codec, source, ahead = _levels(model, bits, out, resume, records, chunk_size, encoded) if bits else (None,) * 3
    with EmbeddingWriter(
        out, dim=model.dim, metadata=embedding_metadata(model, role), encoding=CODES if codec else encoding,
        column=column, resume=resume, row_group_size=chunk_size, texts=store_text, codec=codec, levels_source=source,
    ) as writer:
        resumed = writer.rows_written
        if resumed:
            _skip_finished(records, writer)
            if on_batch is not None:
                on_batch(resumed)
        rest = ((chunk, encoded(chunk)) for chunk in _chunks(records, chunk_size))
        for chunk, values in itertools.chain(ahead or [], rest):
            writer.write([doc_id for doc_id, _ in chunk], values, texts=[t for _, t in chunk] if store_text else None,
                         digest=chunk_digest(chunk))
        rows = writer.rows_written
    return Compressed(rows, resumed)


def _levels(model, bits: int, out, resume: bool, records: Iterator[tuple[str, str]], chunk_size: int,
            encoded: Encoded) -> tuple[AngleCodes, str, list[tuple[list[tuple[str, str]], Tensor]]]:
    """The codec of a compressed file (module docstring), where its levels come from, and the chunks encoded to
    fit them ((records, angles) pairs, to be written first; none when the levels are known without)."""
    own = model_codec(model)
    if own is not None and own.bits == bits:
        return (*corpus_codec(bits, torch.empty(0, model.dim), own), [])
    earlier = (earlier_metadata(out) or {}).get(CODES) if resume else None
    if isinstance(earlier, dict) and earlier.get("bits") == bits:  # the interrupted run's levels, from its journal
        return AngleCodes.from_metadata(earlier), earlier.get("levels_source"), []
    ahead, rows = [], 0
    while rows < FIT_ROWS and (chunk := list(itertools.islice(records, chunk_size))):
        ahead.append((chunk, encoded(chunk)))
        rows += len(chunk)
    first = torch.cat([values for _, values in ahead]) if ahead else torch.empty(0, model.dim)
    return (*corpus_codec(bits, first.float()), ahead)
