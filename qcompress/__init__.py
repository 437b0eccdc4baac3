"""qcompress: quantum-inspired compression of text embeddings, compared by fidelity (arXiv 2501.04591).

The public names are imported on first use (qcompress._lazy), so that the command line starts without torch.
"""

from qcompress._lazy import attach
from qcompress._version import __version__

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

__getattr__, __dir__ = attach(__name__, {
    "QuantumHead": "quantum",
    "encode_angles": "quantum",
    "fidelity": "quantum",
    "log_fidelity": "quantum",
    "pairwise_log_fidelity": "quantum",
    "build_model": "model",
    "load_model": "model",
})
