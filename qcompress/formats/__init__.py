"""Every file format at qcompress's edges: input texts and pairs, embedding Parquet, TREC runs and qrels.

One module per format; this package re-exports their public names, so `from qcompress.formats import X` works
for all of them:

    texts       (id, text) records from JSONL, TSV, stdin or Parquet; (query, passage) pairs
    embeddings  the embedding Parquet format (SPEC §6) and its reader, `scan_embeddings`, that every read uses
    metadata    an embedding file's key-value metadata: one readable key per field, older files' one JSON value
    columns     the Arrow types a DataFrame writes embedding columns back as, converted to qcompress's own
    meta_copy   `copy_metadata`: a file's metadata put back on a copy that a DataFrame round trip stripped
    writer      `EmbeddingWriter`: writes embedding Parquet through pyarrow, crash-safe and resumable
    ids         `UniqueIds`: duplicate ids in streams of millions of rows, in compact memory
    trec        TREC run files and TREC/BEIR qrels
    lines       numbered lines of a file or stdin, shared by the line-based readers

Readers raise `qcompress.errors.InputError` naming the file, the 1-based line (or row) and the field, so that the
CLI prints one line and exits 1. Writers never leave a partial file at the final path.
"""

from qcompress._lazy import attach

__all__ = [
    "iter_texts",
    "read_texts",
    "read_parquet_texts",
    "read_pairs",
    "METADATA_KEY",
    "MODEL_FIELDS",
    "EmbeddingWriter",
    "RowGroup",
    "UniqueIds",
    "has_texts",
    "count_embedding_rows",
    "read_texts_by_id",
    "Embeddings",
    "EmbeddingBatch",
    "partial_path",
    "scan_embeddings",
    "read_embeddings",
    "read_embedding_metadata",
    "iter_embedding_batches",
    "quantize_angles",
    "dequantize_angles",
    "check_same_model",
    "copy_metadata",
    "write_run",
    "read_run",
    "read_qrels",
    "iter_qrels",
]

# Imported on first use (qcompress._lazy): reading a TREC run needs neither pyarrow nor torch. The 8-bit codes
# live in qcompress.quantization; re-exported here, where they were first defined.
__getattr__, __dir__ = attach(__name__, {
    "METADATA_KEY": "metadata", "MODEL_FIELDS": "metadata", "EmbeddingBatch": "embeddings",
    "Embeddings": "embeddings", "check_same_model": "metadata", "copy_metadata": "meta_copy", "iter_embedding_batches": "embeddings",
    "partial_path": "embeddings", "read_embedding_metadata": "embeddings", "read_embeddings": "embeddings",
    "scan_embeddings": "embeddings", "count_embedding_rows": "embeddings", "has_texts": "embeddings",
    "read_texts_by_id": "embeddings",
    "iter_texts": "texts", "read_pairs": "texts", "read_parquet_texts": "texts", "read_texts": "texts",
    "iter_qrels": "trec", "read_qrels": "trec", "read_run": "trec", "write_run": "trec",
    "EmbeddingWriter": "writer", "RowGroup": "writer", "UniqueIds": "ids",
    "dequantize_angles": "qcompress.quantization", "quantize_angles": "qcompress.quantization",
})
