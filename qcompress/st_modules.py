"""The sentence-transformers modules of a qcompress model folder: the angle encoding and the quantum head.

`SentenceTransformer(folder, trust_remote_code=True)` imports these classes by the names in the folder's
modules.json. sentence-transformers 6 asks for trust_remote_code before it imports any module class outside its own
package, an installed package's included (`sentence_transformers.util.import_module_class`), and none of its own
modules computes the quantum head or log-fidelity: so angle models need the flag, while the encoder, pooling,
normalisation and the linear head are its own modules (cosine models load without it). They compute exactly what
`qcompress.model.QCompressModel.project` computes, with qcompress's own functions.

A model's similarity: sentence-transformers 6 accepts only cosine, dot, euclidean and manhattan as
`similarity_fn_name` and has no public way to add one. Log-fidelity (SPEC §2) is none of them, so
`AngleEncoding.on_model_ready` (the hook sentence-transformers calls once the model is built) sets the model's
similarity functions to log-fidelity directly, under the name "log_fidelity": `model.similarity(a, b)` then
ranks angles as qcompress does. tests/test_sentence_transformers.py checks it against qcompress.

This module imports sentence-transformers (several seconds): nothing else in qcompress imports it; model folders
are written by `qcompress.st_folder` without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from qcompress.errors import InputError, require
from qcompress.mixing import InputMixing
from qcompress.quantum import QuantumHead, encode_angles, log_fidelity, pairwise_log_fidelity

# sentence-transformers 5 and older have no Module base class (nor the on_model_ready hook)
Module = require("sentence_transformers.base.modules", "loading qcompress model folders",
                 package="sentence-transformers>=6").Module

__all__ = ["LOG_FIDELITY", "AngleEncoding", "QuantumHeadModule", "InputMixingModule", "log_fidelity_similarity",
           "log_fidelity_similarity_pairwise"]

LOG_FIDELITY = "log_fidelity"
_EMBEDDING = "sentence_embedding"


def _as_batch(x: Any) -> Tensor:
    """What sentence-transformers' similarity functions accept (tensors, arrays, lists of either) as (n, dim)."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (Tensor, np.ndarray)):
        x = torch.stack([torch.as_tensor(v) for v in x])
    x = torch.as_tensor(x)
    return x.unsqueeze(0) if x.dim() == 1 else x


def log_fidelity_similarity(a: Any, b: Any) -> Tensor:
    """All-pairs log-fidelity (len(a), len(b)) of angle embeddings: the similarity of a qcompress angle model."""
    a, b = _as_batch(a), _as_batch(b)
    return pairwise_log_fidelity(a, b.to(a.device))


def log_fidelity_similarity_pairwise(a: Any, b: Any) -> Tensor:
    """Log-fidelity of each row of `a` with the same row of `b`."""
    a, b = _as_batch(a), _as_batch(b)
    return log_fidelity(a, b.to(a.device))


class AngleEncoding(Module):
    """theta = tanh(u) * pi/2 + pi/2 (SPEC §1) on the sentence embedding; makes log-fidelity the model's similarity."""

    config_keys = ["dim"]

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features[_EMBEDDING] = encode_angles(features[_EMBEDDING])
        return features

    def get_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)

    def on_model_ready(self, model) -> None:
        # sentence-transformers' similarity_fn_name setter refuses names it does not know; these are the attributes
        # its similarity() and similarity_pairwise() call.
        model._similarity_fn_name = LOG_FIDELITY
        model._similarity = log_fidelity_similarity
        model._similarity_pairwise = log_fidelity_similarity_pairwise


class _WeightedModule(Module):
    """A module whose config (`config_keys`) and weights (model.safetensors, safetensors only) are saved in its
    folder; loading refuses a folder without the weights (`what` names them in the message)."""

    what = "the module's weights"

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=True)  # safetensors only, never a pickle

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs) -> "_WeightedModule":
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        module = cls(**cls.load_config(model_name_or_path, **hub))
        if cls.load_file_path(model_name_or_path, filename="model.safetensors", **hub) is None:
            raise InputError(f"{model_name_or_path}: {subfolder}/model.safetensors is missing ({cls.what})")
        return cls.load_torch_weights(model_name_or_path, model=module, **hub)


class QuantumHeadModule(_WeightedModule):
    """The quantum compression head (qcompress.quantum.QuantumHead) as a sentence-transformers module: angles in,
    angles out. Weights: model.safetensors (`head.raw`)."""

    config_keys = ["in_dim", "out_dim"]
    what = "the head's weights"

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.head = QuantumHead(self.in_dim, self.out_dim)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features[_EMBEDDING] = self.head(features[_EMBEDDING])
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_dim


class InputMixingModule(_WeightedModule):
    """The fitted input mixing before the quantum head (qcompress.mixing.InputMixing): centring and an orthogonal
    map of the pooled vector. Weights: model.safetensors (`mixing.mean`, and `mixing.rotation` or `mixing.order`)."""

    config_keys = ["kind", "in_dim"]
    what = "the mixing's fitted weights"

    def __init__(self, kind: str, in_dim: int) -> None:
        super().__init__()
        self.kind, self.in_dim = str(kind), int(in_dim)
        self.mixing = InputMixing(self.kind, self.in_dim)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features[_EMBEDDING] = self.mixing(features[_EMBEDDING])
        return features

    def get_embedding_dimension(self) -> int:
        return self.in_dim
