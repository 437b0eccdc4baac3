"""Defaults and choices that several layers name (the encoder, tokens per text, texts per batch, the pooling modes
and input mixings), kept free of heavy imports: the command line's --help states them without loading torch or
transformers. Each head's default similarity is the head kind's own (qcompress.heads), read through
`DEFAULT_SIMILARITY`.

Example:
    >>> DEFAULT_MAX_LENGTH, DEFAULT_BATCH_SIZE, DEFAULT_SIMILARITY["quantum"]
    (256, 64, 'fidelity')
"""

from qcompress.heads import DEFAULT_SIMILARITY  # head -> its default similarity (each head kind says)

__all__ = ["DEFAULT_ENCODER", "DEFAULT_MAX_LENGTH", "DEFAULT_BATCH_SIZE", "DEFAULT_SIMILARITY", "POOLINGS", "MIXINGS",
           "BENCH_METHODS", "BENCH_BYTES", "BENCH_SEEDS", "BENCH_PSEUDO_QUERIES", "BENCH_HEAD_STEPS",
           "PSEUDO_QUERY_KINDS", "BACKENDS", "TORCH_BACKENDS"]

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256  # tokens per text; longer texts are truncated
DEFAULT_BATCH_SIZE = 64  # texts per encoder batch
POOLINGS = ("mean", "cls", "max", "lasttoken")  # qcompress.pooling
MIXINGS = ("none", "permute", "hadamard", "pca")  # qcompress.mixing
# What runs the encoder (qcompress.backends); the torch ones run on the model's device, the others are CPU runtimes.
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
TORCH_BACKENDS = ("torch", "torch-bf16")

# qcompress bench (qcompress.bench): its method families, in the order they are run and listed
BENCH_METHODS = ("float32", "float16", "int8", "binary", "pca-scalar", "pq", "opq", "rabitq", "lsh", "head")
BENCH_BYTES = (16, 32, 48, 64, 128)  # byte budgets per stored document vector
BENCH_SEEDS = (42, 43, 44)  # seeds of the randomised methods (those of recipes/frontier.toml)
BENCH_PSEUDO_QUERIES = 2000  # evaluated documents drawn as pseudo-queries
BENCH_HEAD_STEPS = 150  # distillation steps per head (batch 128): the bundled Cranfield bench in < 15 min on 2 cores
PSEUDO_QUERY_KINDS = ("documents", "spans")  # qcompress.training.distill.PSEUDO_QUERIES
