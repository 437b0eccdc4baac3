"""The loss of one batch and its gradients (SPEC §5).

One training example is (query, one positive, N hard negatives); the loss is cross-entropy over the N + 1 logits
`logit_scale x similarity` with the positive first, where similarity is the fidelity itself for angle models
(the authors' 20 x fidelity) and cosine for vector models. `in_batch_negatives` adds every other document of
the batch as an extra column (documents judged relevant to the query are masked out).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.similarity import get_similarity
from qcompress.training.config import TrainConfig
from qcompress.training.negatives import Examples
from qcompress.training.quantizer import coded_documents

__all__ = ["forward_backward", "in_batch_mask", "pool_batch", "backward_through_head"]


def _logits(model, cfg: TrainConfig, eq: Tensor, ed: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(logits, target) for queries eq (B, d) and their documents ed (B, 1+N, d), positive first."""
    B, cols = ed.shape[0], ed.shape[1]
    similarity = get_similarity(model.similarity)  # fidelity itself for angles, cosine for vectors
    if not cfg.in_batch_negatives:
        sim = similarity.contrastive_paired(eq[:, None, :], ed)
        return cfg.logit_scale * sim, torch.zeros(B, dtype=torch.long, device=eq.device)
    sim = similarity.contrastive_pairwise(eq, ed.reshape(B * cols, -1))
    logits = (cfg.logit_scale * sim).masked_fill(mask, float("-inf"))
    return logits, torch.arange(B, device=eq.device) * cols


def in_batch_mask(examples: Examples, qi: Tensor, di: Tensor) -> Tensor:
    """(B, B*(1+N)) True where a column is another copy of a document judged relevant to the row's query."""
    cols = di.reshape(-1).tolist()
    mask = torch.zeros(len(qi), len(cols), dtype=torch.bool)
    for row, q in enumerate(qi.tolist()):
        relevant = examples.relevant[q]
        for j, d in enumerate(cols):
            if j != row * di.shape[1] and examples.doc_ids[d] in relevant:
                mask[row, j] = True
    return mask


def pool_batch(model, pooled, query_rows: Tensor, doc_rows: Tensor, query_texts: Sequence[str],
               doc_texts: Sequence[str], pool: Callable[[list[str]], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Pooled outputs of the queries and documents at `query_rows` / `doc_rows`: rows of `pooled` (query vectors,
    document vectors) for a frozen encoder, else their texts through `pool` (default `model.pool`; with gradients),
    each with its role's prompt."""
    device = model.device
    if pooled is not None:
        return pooled[0][query_rows.to(device)], pooled[1][doc_rows.to(device)]
    pool = pool or model.pool
    return (pool(model.prompted([query_texts[i] for i in query_rows.tolist()], "query")),
            pool(model.prompted([doc_texts[i] for i in doc_rows.tolist()], "document")))


def backward_through_head(pq: Tensor, pd: Tensor, loss_of: Callable[[Tensor, Tensor], Tensor],
                          trains_encoder: bool) -> tuple[float, float]:
    """`loss_of(queries, documents)` on pooled outputs, backward; returns (loss, seconds of head fwd + bwd).

    The head runs on detached pooled outputs so that its forward + backward can be timed on its own; the encoder's
    backward then continues from their gradients (the same gradients as one backward pass)."""
    start = time.perf_counter()
    hq, hd = pq.detach().requires_grad_(trains_encoder), pd.detach().requires_grad_(trains_encoder)
    loss = loss_of(hq, hd)
    loss.backward()
    head_seconds = time.perf_counter() - start
    if trains_encoder:
        torch.autograd.backward([pq, pd], [hq.grad, hd.grad])
    return loss.item(), head_seconds


def forward_backward(model, cfg: TrainConfig, examples: Examples, batch: Tensor, pooled,
                     pool: Callable[[list[str]], Tensor] | None = None) -> tuple[float, float]:
    """Loss of one batch of examples, with gradients accumulated; returns (loss, seconds of head fwd + bwd).

    `pooled` is (query vectors, document vectors) for a frozen encoder, or None to run the encoder: `pool`
    (default `model.pool`; qcompress.frozen_prefix runs only the trained layers) turns one batch of texts into
    pooled outputs with gradients. Each distinct text of the batch is encoded once (a query with several
    positives appears several times).
    """
    qi, di = examples.ex_query[batch], examples.ex_docs[batch]
    uq, q_inv = torch.unique(qi, return_inverse=True)
    ud, d_inv = torch.unique(di.reshape(-1), return_inverse=True)
    device = model.device
    pq, pd = pool_batch(model, pooled, uq, ud, examples.query_texts, examples.doc_texts, pool)
    mask = in_batch_mask(examples, qi, di).to(device) if cfg.in_batch_negatives else None

    def loss_of(hq: Tensor, hd: Tensor) -> Tensor:
        eq = model.project(hq)[q_inv.to(device)]
        ed = coded_documents(model, model.project(hd))[d_inv.to(device)].reshape(di.shape[0], di.shape[1], -1)
        return F.cross_entropy(*_logits(model, cfg, eq, ed, mask))

    return backward_through_head(pq, pd, loss_of, trains_encoder=pooled is None)
