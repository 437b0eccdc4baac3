"""`QCompressEncoder`: a qcompress model as an MTEB encoder (mteb 2's `EncoderProtocol`), compared by its own
similarity: log-fidelity for angle models, cosine for vector models.

MTEB calls `encode(inputs, task_metadata=..., hf_split=..., hf_subset=..., prompt_type=...)` with a DataLoader
of batches (dicts whose "text" is a list of strings) and expects one row a text, as a numpy array; mteb 1's
`encode(sentences, task_name=..., prompt_type=...)` with a list of strings works too. `prompt_type` "query" or
"document" encodes with the model's prompt for that role (`QCompressModel.encode(role=...)`), none for other
tasks. MTEB ranks retrieval candidates and scores pairs by the encoder's `similarity` / `similarity_pairwise`:
here the model's own, so an angle model is evaluated by log-fidelity, as qcompress ranks, not by the cosine of its
angles. `mteb_model_meta` names the model for MTEB's result files (mteb must be installed for it: `pip install
mteb`; the rest needs only qcompress).

Example:
    >>> import mteb                                                    # doctest: +SKIP
    >>> from qcompress import load_model                               # doctest: +SKIP
    >>> encoder = QCompressEncoder(load_model("models/qbec"))          # doctest: +SKIP
    >>> mteb.evaluate(encoder, mteb.get_tasks(tasks=["SciFact"]))      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qcompress.batching import DEFAULT_BATCH_SIZE
from qcompress.similarity import get_similarity, pairwise_scores

__all__ = ["QCompressEncoder"]

_ROLES = {"query": "query", "document": "document", "passage": "document"}


def _texts(inputs: Any) -> list[str]:
    """The texts of what MTEB passes: a DataLoader (or any iterable) of batches {"text": [...]}, or the texts."""
    if isinstance(inputs, str):
        return [inputs]
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and "text" in item:
            batch = item["text"]
            texts.extend([batch] if isinstance(batch, str) else list(batch))
        else:
            raise TypeError(f"expected texts or batches with a 'text' field, got {type(item).__name__}")
    return texts


def _role(prompt_type: Any) -> str | None:
    """MTEB's PromptType (an enum of "query" and "document") as a qcompress role; None for symmetric tasks."""
    name = getattr(prompt_type, "value", prompt_type)
    return _ROLES.get(str(name).lower()) if name is not None else None


class QCompressEncoder:
    """An MTEB encoder over a `qcompress.model.QCompressModel` (module docstring).

    Example (MTEB's retrieval search calls it this way):
        >>> from qcompress.model import build_model
        >>> encoder = QCompressEncoder(build_model("minilm", similarity="fidelity", device="cpu"))
        >>> queries = encoder.encode([{"text": ["what is lift?"]}], task_metadata=None, hf_split="test",
        ...                          hf_subset="default", prompt_type="query")
        >>> docs = encoder.encode(["Lift holds an aircraft up.", "Heat flows into the wall."], task_name="x")
        >>> queries.shape, encoder.similarity(queries, docs).argmax().item()
        ((1, 384), 0)
    """

    def __init__(self, model: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, name: str | None = None) -> None:
        self.model, self.batch_size = model, batch_size
        self.name = name or _model_name(model)

    def encode(self, inputs: Any, *, task_metadata: Any = None, hf_split: str | None = None,
               hf_subset: str | None = None, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """(texts, dim) float32 numpy embeddings of the texts of `inputs`, with the prompt of `prompt_type`'s role.
        `batch_size` among the keyword arguments (MTEB's encode_kwargs) overrides the encoder's own."""
        texts = _texts(inputs)
        if not texts:
            return np.empty((0, self.model.dim), dtype=np.float32)
        return self.model.encode(texts, role=_role(prompt_type), batch_size=int(kwargs.get("batch_size") or
                                                                                self.batch_size))

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """(n1, n2) scores of every pair, by the model's similarity (log-fidelity of angles, or cosine)."""
        a, b = _matrix(embeddings1), _matrix(embeddings2)
        return pairwise_scores(a, b, self.model.similarity)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Tensor:
        """(n,) scores of matching rows, by the model's similarity."""
        return get_similarity(self.model.similarity).paired(_matrix(embeddings1), _matrix(embeddings2))

    @property
    def mteb_model_meta(self) -> Any:
        """The model as MTEB's `ModelMeta` names it in its results (needs mteb)."""
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        scoring = ScoringFunction.COSINE if self.model.similarity == "cosine" else ScoringFunction.CUSTOM
        reference = getattr(self.model, "reference", None) or {}
        return ModelMeta.create_empty(overwrites={
            "name": self.name, "revision": reference.get("revision") or "local",
            "embed_dim": self.model.dim, "max_tokens": self.model.max_length, "similarity_fn_name": scoring,
            "framework": ["PyTorch"], "n_parameters": sum(p.numel() for p in self.model.parameters()),
        })


def _matrix(values: Any) -> Tensor:
    """Embeddings (numpy or torch, one row or several) as a 2-D float32 tensor."""
    if not isinstance(values, Tensor):
        values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))  # a reversed view needs a copy
    tensor = values.float()
    return tensor[None] if tensor.dim() == 1 else tensor


def _model_name(model: Any) -> str:
    """An `org/name` for MTEB's result folders: the model's Hub id, else `qcompress/<folder or encoder name>`."""
    reference = getattr(model, "reference", None) or {}
    if reference.get("hub_id"):
        return reference["hub_id"]
    where = reference.get("folder") or reference.get("encoder") or "model"
    return f"qcompress/{Path(str(where)).name}"
