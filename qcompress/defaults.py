"""Defaults and choices that several layers name (the encoder, tokens per text, texts per batch, the pooling modes
and input mixings), kept free of heavy imports: the command line's --help states them without loading torch or
transformers. Each head's default similarity is the head kind's own (qcompress.heads), read through
`DEFAULT_SIMILARITY`.

Example:
    >>> DEFAULT_MAX_LENGTH, DEFAULT_BATCH_SIZE, DEFAULT_SIMILARITY["quantum"]
    (256, 64, 'fidelity')
"""

from qcompress.heads import DEFAULT_SIMILARITY  # head -> its default similarity (each head kind says)

__all__ = ["DEFAULT_ENCODER", "DEFAULT_MAX_LENGTH", "DEFAULT_BATCH_SIZE", "DEFAULT_SIMILARITY", "POOLINGS", "MIXINGS"]

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256  # tokens per text; longer texts are truncated
DEFAULT_BATCH_SIZE = 64  # texts per encoder batch
POOLINGS = ("mean", "cls", "max", "lasttoken")  # qcompress.pooling
MIXINGS = ("none", "permute", "hadamard", "pca")  # qcompress.mixing
