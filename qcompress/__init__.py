"""qcompress: quantum-inspired compression of text embeddings, compared by fidelity (arXiv 2501.04591)."""

__version__ = "0.1.0"

from qcompress.quantum import (  # noqa: E402
    QuantumHead,
    encode_angles,
    fidelity,
    log_fidelity,
    pairwise_log_fidelity,
)
from qcompress.model import build_model, load_model  # noqa: E402

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
