"""Label-free training by distillation (issue 18): the head learns to keep the encoder's own similarity structure.

The teacher is the same encoder without a head: cosine between pooled outputs (float32), computed once with the
encoder as loaded. A step takes `batch_size` pseudo-queries (rows) and scores each against the documents they came
from plus `distill_columns` documents drawn at random (columns); the loss is the listwise KL divergence

    KL( softmax(teacher_cosine / distill_temperature) || softmax(scale * student_similarity) )

per row, averaged over rows, where the student similarity is the model's own (log-fidelity for angles, cosine for
vectors) and `scale` is learned (its logarithm trains beside the head, starting where the student's logits spread
like the teacher's: log-fidelity has no natural unit). This is
the listwise similarity distillation of the embedding-compression literature (e.g. the "relational" or
"contrastive distillation" losses of TinyBERT-style embedding students), with random documents as the list;
no query text and no judgement is used.

Pseudo-queries (`pseudo_queries`): "documents" (each document stands for a query about itself, as the feasibility
probe of ../shared/docs/frontier-probe.md did) or "spans" (a seeded random span of 4 to 16 words of the document,
nearer to a short query).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcompress.data import load_collection
from qcompress.data.beir import bundled_path
from qcompress.errors import InputError
from qcompress.formats.texts import iter_texts
from qcompress.similarity import get_similarity
from qcompress.training.quantizer import coded_documents
from qcompress.training.step import backward_through_head, pool_batch

__all__ = ["PSEUDO_QUERIES", "DistillData", "read_corpus", "pseudo_queries", "distill_forward_backward",
           "column_indices", "initial_log_scale", "calibrate_log_scale", "teacher_vectors"]

PSEUDO_QUERIES = ("documents", "spans")
SPAN_WORDS = (4, 16)
CALIBRATION_TEXTS = 256  # documents whose similarities set the student's initial scale
_LEFT_OUT = -1e9  # a logit whose softmax weight is 0 (finite, so that KL's 0 * (a - b) stays 0, not NaN)


@dataclass
class DistillData:
    """The texts of a distillation run and the teacher's pooled outputs (L2-normalised: their dot is cosine)."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_texts: list[str]  # one pseudo-query per document, same order
    teacher_queries: Tensor
    teacher_docs: Tensor
    queries_are_documents: bool  # pseudo-queries "documents": row i's own document is left out of its list

    def __len__(self) -> int:
        return len(self.doc_texts)


def read_corpus(dataset: str | None, split: str = "train", trec_dir: str | None = None) -> list[tuple[str, str]]:
    """(id, text) of the documents to distil on: 'cranfield' (None), a BEIR folder's corpus.jsonl, a JSONL/TSV file
    of texts, or a collection `load_collection` knows. Empty texts are left out."""
    if dataset is None or dataset == "cranfield":
        path: Path | None = bundled_path("cranfield") / "corpus.jsonl"
    elif Path(dataset).is_dir():
        path = Path(dataset) / "corpus.jsonl"
        if not path.is_file():
            raise InputError("a folder to distil on needs a corpus.jsonl (BEIR layout)", file=path)
    elif Path(dataset).is_file() or dataset == "-":
        path = Path(dataset)
    else:
        path = None
    if path is not None:
        records = list(iter_texts(path, allow_empty=True))
    else:
        records = list(load_collection(dataset, split, trec_dir=trec_dir).corpus.items())
    records = [(i, t) for i, t in records if t.strip()]
    if len(records) < 2:
        raise InputError("distillation needs at least 2 non-empty documents", file=dataset or "cranfield")
    return records


def pseudo_queries(texts: list[str], kind: str, seed: int) -> list[str]:
    """One pseudo-query per text: the text itself ("documents") or a seeded random span of 4-16 words ("spans").

    Example:
        >>> pseudo_queries(["a b c d e f g h i j k l m n o p q r s t"], "spans", 0)[0].split()[0] in "abcdefghij"
        True
    """
    if kind not in PSEUDO_QUERIES:
        raise InputError(f"unknown pseudo_queries {kind!r}; choose one of {', '.join(PSEUDO_QUERIES)}")
    if kind == "documents":
        return list(texts)
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = text.split()
        length = rng.randint(*SPAN_WORDS)
        start = rng.randint(0, max(0, len(words) - length))
        out.append(" ".join(words[start : start + length]))
    return out


def column_indices(rows: Tensor, n: int, extra: int, seed: int, step: int) -> Tensor:
    """The documents a step scores: the rows' own documents, then `extra` others drawn without replacement from a
    generator seeded by (seed, step), so that a resumed run draws the same ones."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * step + 1)
    others = torch.randperm(n, generator=generator)
    others = others[~torch.isin(others, rows)][:extra]
    return torch.cat([rows, others])


def _similarities(model, a: Tensor, b: Tensor) -> Tensor:
    """The student's similarity: log-fidelity for angles, cosine for vectors."""
    return get_similarity(model.similarity).student_pairwise(a, b)


def distill_forward_backward(model, cfg, data: DistillData, batch: Tensor, step: int, log_scale: nn.Parameter,
                             pooled: tuple[Tensor, Tensor] | None, pool=None) -> tuple[float, float]:
    """The distillation loss of one batch of pseudo-queries, with gradients accumulated; (loss, head seconds).

    `pooled` is (pseudo-query vectors, document vectors) for a frozen encoder, else None: the trained layers run
    through `pool` (default `model.pool`) on the batch's texts.
    """
    cols = column_indices(batch, len(data), cfg.distill_columns, cfg.seed, step)
    device = model.device
    teacher = data.teacher_queries[batch].to(device) @ data.teacher_docs[cols].to(device).T / cfg.distill_temperature
    # A document as its own pseudo-query matches itself exactly (cosine and fidelity 1): that column would take
    # nearly all of the teacher's mass and teach nothing about the neighbours, so it is left out.
    own = (batch[:, None] == cols[None, :]).to(device) if data.queries_are_documents else None
    if own is not None:
        teacher = teacher.masked_fill(own, _LEFT_OUT)
    target = F.log_softmax(teacher, dim=-1)
    pq, pd = pool_batch(model, pooled, batch, cols, data.query_texts, data.doc_texts, pool)

    def loss_of(hq: Tensor, hd: Tensor) -> Tensor:
        documents = coded_documents(model, model.project(hd))  # float32 unless training for codes (--bits)
        student = _similarities(model, model.project(hq), documents) * log_scale.exp()
        if own is not None:
            student = student.masked_fill(own, _LEFT_OUT)
        return F.kl_div(F.log_softmax(student, dim=-1), target, log_target=True, reduction="batchmean")

    return backward_through_head(pq, pd, loss_of, trains_encoder=pooled is None)


def initial_log_scale(similarity: str) -> nn.Parameter:
    """The student scale's logarithm before calibration: the similarity's own initial scale (`distill_scale`)."""
    return nn.Parameter(torch.tensor(math.log(get_similarity(similarity).distill_scale)))


@torch.no_grad()
def calibrate_log_scale(model, cfg, data: DistillData, pooled: tuple[Tensor, Tensor]) -> None:
    """Start the student's scale where its logits spread like the teacher's on the first documents.

    Log-fidelity has no natural unit: between L2-normalised 384-d embeddings it differs by thousandths, between raw
    ones by units. A fixed initial scale then leaves the student's softmax flat (or saturated) for hundreds of steps
    while the scale's logarithm creeps at the learning rate; matching the standard deviations removes that phase."""
    rows = torch.arange(min(len(data), CALIBRATION_TEXTS))
    teacher = data.teacher_queries[rows] @ data.teacher_docs[rows].T / cfg.distill_temperature
    pq, pd = pool_batch(model, pooled, rows, rows, data.query_texts, data.doc_texts)
    student = _similarities(model, model.project(pq), model.project(pd)).cpu()
    off_diagonal = ~torch.eye(len(rows), dtype=torch.bool)
    spread = student[off_diagonal].std()
    if torch.isfinite(spread) and spread > 0:
        model.distill_log_scale.copy_(torch.log(teacher[off_diagonal].std() / spread))


def teacher_vectors(pooled: Tensor) -> Tensor:
    """The teacher's view of pooled outputs: L2-normalised float32 (their dot product is cosine)."""
    return F.normalize(pooled.float(), dim=-1)
