"""What a bench method is: the settings that reach a byte budget, a fit, stored codes, a search.

A method family (`Method`) answers, for a budget of B bytes per stored document vector, which settings reach it
(`Setting`s, or a `Refusal` saying why none can: too few fit documents, no split of the dimensions...). A setting
is fit on the fit documents' pooled encoder outputs (with a seed when the family is randomised) into a `Fitted`:
it encodes the evaluated documents into stored arrays and searches them with queries' pooled outputs, returning
the best k document indices per query (ties to the lower index) with a query's own document left out when asked.

Stored bytes per vector are measured from the arrays `encode` returns (`stored_bytes`), never declared. Bytes held
while searching (`resident_bytes`) are what the search keeps for the whole corpus: for every method here the
stored codes themselves, scored a chunk of documents at a time (`qcompress.bench.topk`).

`RepresentationFitted` runs any `qcompress.recipes.peers` representation this way, so the bench and the recipes
share one implementation of each baseline.

Example:
    >>> from qcompress.recipes.peers import representation
    >>> docs = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> fitted = RepresentationFitted(representation("float16", docs))
    >>> stored = fitted.encode(docs)
    >>> stored_bytes(stored, len(docs)), fitted.search(docs[:2], stored, 2).tolist()
    (4.0, [[0, 1], [1, 0]])
    >>> fitted.search(docs[:2], stored, 2, exclude=torch.tensor([0, 1])).tolist()
    [[1, 3], [0, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from qcompress.bench.topk import chunked_topk, search_excluding

__all__ = ["Setting", "Refusal", "Fitted", "Method", "FitContext", "RepresentationFitted", "stored_bytes"]


@dataclass(frozen=True)
class Setting:
    """One way to run a family: its parameters (ordered), and whether it has a size of its own (float32, int8...)
    rather than one chosen for a budget."""

    family: str
    params: tuple[tuple[str, Any], ...] = ()
    fixed_size: bool = False

    @property
    def label(self) -> str:
        """The family and its parameters, e.g. "pca-scalar dims=128 bits=2"."""
        return " ".join([self.family, *(f"{k}={v}" for k, v in self.params)])

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Refusal:
    """A budget a family cannot reach, and why (said in the output)."""

    family: str
    budget: int
    reason: str


@dataclass
class FitContext:
    """What a fit may need beyond the fit documents' pooled outputs (the head trains on their texts)."""

    fit_ids: Sequence[str]
    fit_texts: Sequence[str]
    encoder: str | None = None  # the encoder's name or folder, as `build_model` takes it
    max_length: int | None = None
    device: str | None = None
    cache_dir: Path | None = None  # pooled-output cache holding the fit documents (the head's training reads it)
    work_dir: Path | None = None  # scratch space for the run (deleted afterwards)
    store_encoder: bool = True  # a trained head's folder holds the encoder (False: names it by its Hub id)
    head_steps: int = 150
    rescore_k: int = 100


class Fitted(Protocol):
    fitted_numbers: int  # numbers fitted or trained on the fit documents (fixed size: codebooks, rotations, heads)
    trained_parameters: int  # of those, the ones trained by gradient (a head's)

    def encode(self, docs: Tensor) -> Any:
        """Pooled outputs (n, D) of evaluated documents -> their stored form (arrays)."""

    def search(self, queries: Tensor, stored: Any, k: int, exclude: Tensor | None = None) -> Tensor:
        """Pooled outputs (m, D) of queries -> (m, k) indices of the best stored documents, best first, ties to the
        lower index; `exclude[i]` is left out of query i's ranking."""

    def resident_bytes(self, stored: Any) -> int:
        """Bytes the search keeps for the whole corpus (stored codes, cached features)."""


class Method(Protocol):
    name: str
    randomised: bool
    about: str

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        """The settings that reach `budget` bytes per vector for `dim`-dimensional embeddings and `n_fit` fit
        documents (none: a `Refusal` saying why)."""

    def fixed(self, dim: int) -> list[Setting]:
        """Settings with a size of their own, run whatever the budgets (float32, float16, int8, binary)."""

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext) -> Fitted:
        """Fit `setting` on the fit documents' pooled outputs (n_fit, D)."""


def _nbytes(array: Any) -> int:
    if isinstance(array, Tensor):
        return array.element_size() * array.numel()
    if isinstance(array, np.ndarray):
        return int(array.nbytes)
    if isinstance(array, (tuple, list)):
        return sum(_nbytes(a) for a in array)
    raise TypeError(f"cannot measure the size of a stored {type(array).__name__}")


def stored_bytes(stored: Any, n: int) -> float:
    """Bytes per document of a stored form (an array, or a tuple of arrays), measured from the arrays."""
    return _nbytes(stored) / n if n else 0.0


class RepresentationFitted:
    """A `qcompress.recipes.peers` representation searched chunk by chunk: it keeps only the stored rows."""

    def __init__(self, rep, *, trained_parameters: int = 0) -> None:
        self.rep = rep
        self.fitted_numbers = int(rep.fitted_parameters)
        self.trained_parameters = trained_parameters

    def encode(self, docs: Tensor) -> Any:
        return self.rep.documents(docs)

    def scores(self, queries: Any, stored: Any) -> Callable[[int, int], Tensor]:
        """score(start, end): the queries' scores against stored rows start..end-1."""
        return lambda start, end: self.rep.score(queries, stored[start:end])

    def search(self, queries: Tensor, stored: Any, k: int, exclude: Tensor | None = None) -> Tensor:
        form = self.rep.queries(queries)
        score = self.scores(form, stored)
        return search_excluding(lambda kk: chunked_topk(score, len(stored), kk), k, exclude)[1]

    def resident_bytes(self, stored: Any) -> int:
        return _nbytes(stored)
