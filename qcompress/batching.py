"""The one loop that turns texts into tensors: batches formed longest-first, results put back in input order.

Sorting by length (as sentence-transformers does) keeps padding small; every text-to-vector path of qcompress
(`QCompressModel.encode`, the pooled-output cache, training's pooled inputs, the frozen-prefix replay) runs
through `map_batches`, so they batch, order and report progress the same way.

Example:
    >>> list(longest_first(["a", "ccc", "bb"], 2))
    [[1, 2], [0]]
    >>> map_batches(lambda batch: torch.tensor([[float(len(t))] for t in batch]), ["a", "ccc", "bb"], 2, width=1)
    tensor([[1.],
            [3.],
            [2.]])
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from qcompress.defaults import DEFAULT_BATCH_SIZE
from qcompress.errors import InputError

__all__ = ["DEFAULT_BATCH_SIZE", "longest_first", "map_batches", "eval_mode"]


def longest_first(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of `texts` in batches of `batch_size`, longest text first (ties keep input order)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval mode (no dropout) for the block, then back to the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def map_batches(
    fn: Callable[[list[str]], Tensor],
    texts: Sequence[str],
    batch_size: int,
    *,
    width: int,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """`fn` over longest-first batches of `texts`: float32 (len(texts), width) on the CPU, in input order.

    Runs without gradients (plain tensors, not inference tensors, so that a head with gradients can take the
    result); `on_batch(n)` is called after each batch with its size, for progress bars.
    """
    with torch.no_grad():
        out = torch.empty(len(texts), width, dtype=torch.float32)
        for idx in longest_first(texts, batch_size):
            out[idx] = fn([texts[i] for i in idx]).float().cpu()
            if on_batch is not None:
                on_batch(len(idx))
    return out
