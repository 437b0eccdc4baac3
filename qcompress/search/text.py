"""Ad-hoc search of a compressed corpus with query texts (`qcompress search`): each query is encoded with a model
that must be the corpus's own (its `model_id` is compared), ranked exactly (`qcompress.search.stream.search_parquet`),
and each hit comes with its text when the corpus keeps texts (`compress --store-text`).

Example:
    >>> import tempfile, pathlib
    >>> from qcompress.compress import compress
    >>> from qcompress.model import build_model
    >>> model = build_model("minilm", similarity="fidelity")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "c.parquet"
    >>> _ = compress([("1", "Lift is a force."), ("2", "Drag slows a plane.")], out, model, store_text=True)
    >>> hit = search_texts(model, ["what is lift"], out, k=1)[0][0]
    >>> hit.id, hit.text
    ('1', 'Lift is a force.')
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Sequence

from qcompress.compress import embedding_metadata
from qcompress.formats import check_same_model, has_texts, read_embedding_metadata, read_texts_by_id
from qcompress.search.stream import search_parquet

__all__ = ["Hit", "search_texts"]


@dataclass(frozen=True)
class Hit:
    """One result: its rank (1-based), id, score (log-fidelity, or cosine for vector files) and stored text."""

    rank: int
    id: str
    score: float
    text: str | None


def search_texts(model, queries: Sequence[str], corpus: str | PathLike, k: int = 10) -> list[list[Hit]]:
    """The top-k hits of each query text in an embedding file or folder, best first (ties to the earlier row).
    The queries are encoded as queries (the model's query prompt before each).

    Raises `InputError` when the corpus was not made by `model` (encoder, head, dim, similarity or weights
    differ): its scores would mean nothing.
    """
    check_same_model(embedding_metadata(model), read_embedding_metadata(corpus), what=f"the model and {corpus}")
    values = model.encode(list(queries), role="query", convert_to_tensor=True)  # the query prompt, as `compress --role query` puts it
    scores, ids = search_parquet(values, corpus, k)
    texts = read_texts_by_id(corpus, {doc for row in ids for doc in row}) if has_texts(corpus) else {}
    return [
        [Hit(rank, doc, score, texts.get(doc)) for rank, (doc, score) in enumerate(zip(row, row_scores), 1)]
        for row, row_scores in zip(ids, scores.tolist())
    ]
