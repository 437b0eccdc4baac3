"""qcompress: quantum-inspired compression of text embeddings, compared by fidelity (arXiv 2501.04591)."""

from qcompress._version import __version__
from qcompress.quantum import (
    QuantumHead,
    encode_angles,
    fidelity,
    log_fidelity,
    pairwise_log_fidelity,
)
from qcompress.model import build_model, load_model

__all__ = [
    "__version__",
    "QuantumHead",
    "encode_angles",
    "fidelity",
    "log_fidelity",
    "pairwise_log_fidelity",
    "build_model",
    "load_model",
]
