"""Defaults and choices that several layers name (the encoder, tokens per text, texts per batch, each head's
similarity, the pooling modes and input mixings), kept free of heavy imports: the command line's --help states them without loading torch or
transformers.

Example:
    >>> DEFAULT_MAX_LENGTH, DEFAULT_BATCH_SIZE, DEFAULT_SIMILARITY["quantum"]
    (256, 64, 'fidelity')
"""

__all__ = ["DEFAULT_ENCODER", "DEFAULT_MAX_LENGTH", "DEFAULT_BATCH_SIZE", "DEFAULT_SIMILARITY", "POOLINGS", "MIXINGS"]

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256  # tokens per text; longer texts are truncated
DEFAULT_BATCH_SIZE = 64  # texts per encoder batch
DEFAULT_SIMILARITY = {"quantum": "fidelity", "linear": "cosine", "none": "cosine"}  # head -> similarity
POOLINGS = ("mean", "cls", "max", "lasttoken")  # qcompress.pooling
MIXINGS = ("none", "permute", "hadamard", "pca")  # qcompress.mixing
