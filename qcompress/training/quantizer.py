"""Quantization-aware training for low-bit angle codes (`train --bits B`, issue 26).

Search stores documents as B-bit codes (`qcompress.codes.AngleCodes`: per qubit, the nearest of 2^B levels) and
scores float32 query angles against the levels the codes name. Training with `bits` sees the same asymmetry: the
documents' side of every score goes through the quantizer, the queries' side stays float32. The levels are
Lloyd-Max levels of the fit documents' angles under the head as it is (`refit_levels`: at the start of every
epoch, and once more at the end for the codec the model folder keeps), so they follow the head as it trains.

How the quantizer lets gradients through (`qcompress.training.config.QUANTIZERS`):
    ste     straight-through estimator: the forward pass uses the nearest level (exactly what search scores),
            the backward pass treats rounding as the identity
    noise   uniform noise of the width of the angle's cell added to the float angle (a relaxation: the expected
            size of the rounding error, differentiable, but never the coded value itself)
    soft    soft assignment: a softmax over the levels by squared distance (in units of the qubit's mean level
            spacing) at a temperature annealed geometrically from 1 to 0.01 over the run, i.e. to hard rounding

Example (the straight-through forward pass codes, its gradient is the identity):
    >>> q = DocumentQuantizer(dim=2, bits=1, method="ste")
    >>> q.fit(torch.tensor([[0.5, 1.0], [0.7, 2.0]]))
    >>> angles = torch.tensor([[0.55, 1.9]], requires_grad=True)
    >>> coded = q(angles)
    >>> coded.detach()
    tensor([[0.5000, 2.0000]])
    >>> coded.sum().backward(); angles.grad
    tensor([[1., 1.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qcompress.codes import PI32, AngleCodes
from qcompress.training.config import CODE_DEFAULTS, QUANTIZERS

__all__ = ["DocumentQuantizer", "attach_quantizer",
           "coded_documents", "start_epoch", "anneal", "fit_documents", "refit_levels", "final_codec",
           "FIT_DOCUMENTS"]

FIT_DOCUMENTS = 1 << 16  # documents whose angles fit the levels (a seeded sample beyond): one head pass per epoch
SOFT_TEMPERATURES = (1.0, 0.01)  # the soft assignment's temperature at the start and at the end of the run


class DocumentQuantizer(nn.Module):
    """The documents' side of training with codes: levels (dim, 2^bits) and the relaxation `method`.

    The levels are a parameter (so that checkpoints and the best-epoch weights keep them); they receive gradients
    only with `learn_levels`, else Lloyd-Max refits set them (`fit`). `progress` (0..1, the share of the run done)
    sets the soft assignment's temperature. In eval mode every method rounds to the nearest level.
    """

    def __init__(self, dim: int, bits: int, method: str = CODE_DEFAULTS["quantizer"], learn_levels: bool = False) -> None:
        super().__init__()
        if method not in QUANTIZERS:
            raise ValueError(f"unknown quantizer {method!r}; choose one of {', '.join(QUANTIZERS)}")
        self.bits, self.method, self.learn_levels = bits, method, learn_levels
        self.levels = nn.Parameter(AngleCodes.uniform(dim, bits).levels.clone())
        self.progress = 0.0
        self.active = True  # False: the documents pass unchanged (a warm-up before the first fit)

    @torch.no_grad()
    def fit(self, angles: Tensor) -> None:
        """Lloyd-Max levels of the documents' angles (n, dim)."""
        levels = AngleCodes.fit(angles.detach().float().cpu(), self.bits).levels
        self.levels.copy_(levels.to(self.levels.device))

    def codec(self) -> AngleCodes:
        """The levels as a codec (sorted, within [0, pi])."""
        return AngleCodes(self.levels.detach().float().cpu().clamp(0.0, PI32).sort(dim=1).values, self.bits)

    def forward(self, angles: Tensor) -> Tensor:
        if not self.active:
            return angles
        levels = self.levels if self.learn_levels else self.levels.detach()
        levels = levels.sort(dim=1).values  # learned levels may cross; codes name the sorted ones
        if not self.training:
            return _nearest(angles, levels)[0]
        if self.method == "ste":
            return _nearest(angles, levels)[0] + (angles - angles.detach())
        if self.method == "noise":
            codes = _nearest(angles, levels)[1]
            width = _cell_widths(levels.detach())
            width = width[None].expand(angles.shape[0], -1, -1).gather(2, codes[..., None]).squeeze(2)
            return angles + (torch.rand_like(angles) - 0.5) * width
        return _soft(angles, levels, self.temperature())

    def temperature(self) -> float:
        start, end = SOFT_TEMPERATURES
        return start * (end / start) ** min(1.0, max(0.0, self.progress))


def _nearest(angles: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """(the nearest level of each angle (n, d), differentiable in the levels; its index (n, d)), ties to the lower
    level, as `AngleCodes.encode` codes."""
    distance = (angles.detach()[:, :, None] - levels.detach()[None]).abs()
    codes = distance.argmin(dim=2)  # the first of equal distances: the lower level
    values = levels[None].expand(angles.shape[0], -1, -1).gather(2, codes[..., None]).squeeze(2)
    return values, codes


def _cell_widths(levels: Tensor) -> Tensor:
    """(d, L): the width of each level's cell (between the midpoints to its neighbours; an end cell mirrors its
    inner half)."""
    gaps = levels[:, 1:] - levels[:, :-1]
    if gaps.shape[1] == 1:
        return torch.cat([gaps, gaps], dim=1)
    inner = (gaps[:, :-1] + gaps[:, 1:]) / 2
    return torch.cat([gaps[:, :1], inner, gaps[:, -1:]], dim=1)


def _soft(angles: Tensor, levels: Tensor, temperature: float) -> Tensor:
    """The softmax-weighted mean of the levels, by squared distance in units of the qubit's mean level spacing."""
    spacing = ((levels[:, -1] - levels[:, 0]) / (levels.shape[1] - 1)).detach().clamp_min(1e-6)
    distance = ((angles[:, :, None] - levels[None]) / spacing[None, :, None]).square()
    weights = torch.softmax(-distance / temperature, dim=2)
    return (weights * levels[None]).sum(dim=2)


def attach_quantizer(model, cfg) -> None:
    """Give a model being trained with `cfg.bits` its documents' quantizer (`model.code_quantizer`)."""
    if cfg.bits is None:
        return
    quantizer = DocumentQuantizer(model.dim, cfg.bits, cfg.quantizer, learn_levels=cfg.code_levels == "learned")
    model.code_quantizer = quantizer.to(model.device)


def coded_documents(model, angles: Tensor) -> Tensor:
    """The documents' angles as training scores them: through the model's quantizer when it trains for codes."""
    quantizer = getattr(model, "code_quantizer", None)
    return angles if quantizer is None else quantizer(angles)


def fit_rows(count: int, seed: int) -> Tensor:
    """The fit documents: all `count`, or a seeded sample of FIT_DOCUMENTS of them, in order."""
    if count <= FIT_DOCUMENTS:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:FIT_DOCUMENTS].sort().values


def fit_documents(model, cfg, data) -> Tensor:
    """Pooled outputs of the fit documents: the training documents (a seeded sample of FIT_DOCUMENTS beyond), as
    pooled once for a frozen encoder, else through the encoder as it is now (its trained layers only, when the
    frozen ones are stored)."""
    from qcompress.cache import pool_texts

    documents = data.texts()[1]
    rows = fit_rows(len(documents), cfg.seed)
    if data.pooled is not None:
        return data.pooled[1][rows.to(data.pooled[1].device)]
    pool = data.prefix.pool if data.prefix is not None else None
    return pool_texts(model, [documents[i] for i in rows.tolist()], pool_batch=pool, role="document")


def start_epoch(model, cfg, data, epoch: int, position: int) -> None:
    """At an epoch's start (position 0), refit the levels on the fit documents (with learned levels: once, when
    the quantizer starts); the quantizer acts from epoch `code_warmup` on. A resumed run finds its levels in the
    checkpoint."""
    quantizer = getattr(model, "code_quantizer", None)
    if quantizer is None:
        return
    quantizer.active = epoch >= cfg.code_warmup
    if position == 0 and quantizer.active and (not quantizer.learn_levels or epoch == cfg.code_warmup):
        refit_levels(model, fit_documents(model, cfg, data))


@torch.no_grad()
def refit_levels(model, pooled_documents: Tensor) -> None:
    """Lloyd-Max levels of the documents' angles under the model's head as it is now (eval mode: no dropout)."""
    from qcompress.cache import project_pooled

    model.code_quantizer.fit(project_pooled(model, pooled_documents))


def final_codec(model, cfg, data) -> AngleCodes:
    """The codec a model trained for codes keeps: its learned levels, or a last refit on the fit documents (the
    head's final angles; also when the run ended before the quantizer started)."""
    quantizer = model.code_quantizer
    if not quantizer.learn_levels or not quantizer.active:
        refit_levels(model, fit_documents(model, cfg, data))
    return quantizer.codec()


def anneal(model, step: int, total_steps: int) -> None:
    """Tell the quantizer how far the run is (the soft assignment's temperature)."""
    quantizer = getattr(model, "code_quantizer", None)
    if quantizer is not None:
        quantizer.progress = step / max(1, total_steps)

