"""Data-parallel training under `torchrun --nproc-per-node N qcompress train ...` (torch.distributed).

torchrun starts N processes and tells each its place through the environment (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR/PORT); `setup` reads it and joins the process group: gloo on CPUs, nccl on GPUs (process r uses
cuda:LOCAL_RANK). Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op, so one code path
serves both.

How a step runs on N processes (qcompress.training.loop):
    - every process builds the same model (same seed) and walks the same seeded order of examples; the global
      batch of --batch-size examples is cut into N contiguous shards (`shard`), one per process;
    - each process computes the mean loss over its shard and its gradients; `reduce_gradients` then sums, over
      processes, gradient x (shard size / global batch size) with one all_reduce: exactly the gradient of the
      mean loss over the global batch, also when the batch does not split evenly (the last one of an epoch) or a
      shard is empty. Every process then takes the same optimizer step.
    - only rank 0 writes: checkpoints, the live log, the model folder, the plot. Each other rank keeps its own
      random-number state (dropout) in OUT.ckpt/rng-rank<r>.safetensors beside rank 0's checkpoint, so --resume
      continues every rank's dropout stream. Data preparation (mined negatives, pooled outputs: cached) runs on
      rank 0 first; the others then read the cache instead of repeating the work.

This is the arithmetic of torch's DistributedDataParallel (an all_reduce average of the gradients after
backward) without the DDP wrapper: a qcompress step runs the head's backward on detached pooled outputs (to time
the head on its own) and then the encoder's, two backward passes per forward, which DDP's reducer does not
support; one flat all_reduce after both is the same sum. It does not overlap communication with backward as
DDP's buckets do; for the encoders qcompress trains (the last layers of a MiniLM/BERT: 7-28 M parameters,
28-112 MB of float32 gradients) that is milliseconds on NVLink.

With the hard negatives of each example (the default), the loss of an example depends only on its own
documents, so N processes compute the same thing as one (up to float rounding in the order of sums).
`--in-batch-negatives` would contrast each query with the documents of its shard only, a different loss; it is
refused under torchrun rather than silently changed. Dropout (encoder layers training) draws other masks in N
processes than in one, so such runs agree in distribution, not bit for bit; frozen-encoder runs (BFEC, QBFEC)
have no randomness and agree within float tolerance.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor

from qcompress.atomic import atomic_file
from qcompress.errors import InputError

__all__ = ["Context", "context", "setup", "barrier", "main_first", "shard", "reduce_gradients", "save_rng",
           "load_rng"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: `world_size` processes in all, this one is `rank` (`local_rank` on its node)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """The torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK), or one process when it is not set."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise InputError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun): {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"bad torchrun environment: RANK {rank} of WORLD_SIZE {world}")
    return Context(world, rank, local)


def setup(device: str | None) -> tuple[Context, str | None]:
    """Join the process group when run by torchrun; return (context, the device this process trains on).

    `device` None or "cuda" becomes cuda:LOCAL_RANK when GPUs are present (one GPU per process), else cpu.
    """
    ctx = context()
    if not ctx.active:
        return ctx, device
    if device in (None, "cuda"):
        device = f"cuda:{ctx.local_rank}" if torch.cuda.is_available() else "cpu"
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
        atexit.register(_destroy)
    return ctx, device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: Context) -> Iterator[None]:
    """Run the block on rank 0 first (it fills the caches), then on the other ranks (they read them)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def shard(batch: Tensor, ctx: Context) -> Tensor:
    """This rank's contiguous share of a global batch (sizes differ by at most one; some may be empty).

    Example:
        >>> [shard(torch.arange(5), Context(2, r, r)).tolist() for r in (0, 1)]
        [[0, 1, 2], [3, 4]]
    """
    if not ctx.active:
        return batch
    return torch.tensor_split(batch, ctx.world_size)[ctx.rank]


def reduce_gradients(params: Sequence[torch.nn.Parameter], local_n: int, global_n: int, loss: float,
                     ctx: Context) -> float:
    """Make every rank's gradients those of the mean loss over the global batch; return that mean loss.

    `loss` is this rank's mean over its `local_n` examples, and the gradients are of that mean: the sum over
    ranks of gradient x local_n / global_n is the gradient of the global mean. One all_reduce of one flat buffer
    (gradients and loss together).
    """
    if not ctx.active:
        return loss
    params = list(params)
    device = params[0].device
    weight = local_n / global_n
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * weight for p in params]
    parts.append(torch.tensor([loss * weight], dtype=parts[0].dtype if parts else torch.float32, device=device))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).clone()
        offset += size
    return float(flat[offset])


def _rng_file(root: Path, rank: int) -> Path:
    return root / f"rng-rank{rank}.safetensors"


def save_rng(root: Path, step: int, ctx: Context) -> None:
    """Ranks other than 0 keep their random-number state beside rank 0's checkpoint (rank 0's is in it)."""
    if not ctx.active or ctx.is_main:
        return
    state = {"torch": torch.get_rng_state(), "step": torch.tensor([step])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    root.mkdir(parents=True, exist_ok=True)
    with atomic_file(_rng_file(root, ctx.rank)) as tmp:
        save_file(state, str(tmp))


def load_rng(root: Path, step: int, ctx: Context) -> None:
    """Restore this rank's random-number state saved at `step` (rank 0's comes with the checkpoint itself).

    Without a file for that step (the run was interrupted between rank 0's save and this rank's), this rank
    keeps rank 0's state, which the checkpoint restored: training continues, with other dropout masks.
    """
    if not ctx.active or ctx.is_main:
        return
    path = _rng_file(root, ctx.rank)
    if not path.is_file():
        return
    state = load_file(str(path))
    if int(state["step"][0]) != step:
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
