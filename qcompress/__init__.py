"""qcompress: quantum-inspired compression of text embeddings, compared by fidelity (arXiv 2501.04591).

The public names are imported on first use (qcompress._lazy), so that the command line starts without torch.
"""

import sys

from qcompress._lazy import attach
from qcompress._version import DISTRIBUTION, __version__

__all__ = [
    "__version__",
    "QuantumHead",
    "encode_angles",
    "fidelity",
    "log_fidelity",
    "pairwise_log_fidelity",
    "build_model",
    "load_model",
    "default_model_folder",
]

__getattr__, __dir__ = attach(__name__, {
    "QuantumHead": "quantum",
    "encode_angles": "quantum",
    "fidelity": "quantum",
    "log_fidelity": "quantum",
    "pairwise_log_fidelity": "quantum",
    "build_model": "model",
    "load_model": "model",
    "default_model_folder": "default_folder",
})

# A model folder asks sentence-transformers for qcompress-embeddings>=VERSION (config_sentence_transformers.json's
# "requirements"). It looks the version up as an imported module's __version__ under the distribution's name
# (qcompress_embeddings) before the installed metadata; a source checkout that was not pip-installed has no
# metadata, so once qcompress is imported it answers under that name too (`import qcompress` before
# `SentenceTransformer(folder)` then loads from a fresh clone).
sys.modules.setdefault(DISTRIBUTION.replace("-", "_"), sys.modules[__name__])
