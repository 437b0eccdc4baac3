"""Head "none": the pooled encoder output itself, as vectors (cosine) or encoded as qubit angles (fidelity: the
paper's QBT). Its sentence-transformers modules: nothing, or AngleEncoding.

Example:
    >>> import torch
    >>> from qcompress.similarity import get_similarity
    >>> NoHeadKind().project(None, torch.zeros(1, 2), get_similarity("fidelity"), None)
    tensor([[1.5708, 1.5708]])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from qcompress.heads.base import HeadKind, StModule, angle_encoding_module, compares_angles
from qcompress.mixing import InputMixing
from qcompress.quantum import encode_angles
from qcompress.similarity.base import ANGLES, Similarity

__all__ = ["NoHeadKind"]


class NoHeadKind(HeadKind):
    """No head: the output has the encoder's own size and nothing of its own to train."""

    name = "none"
    has_dim = False
    trainable = False

    def build(self, in_dim: int, out_dim: int) -> nn.Module | None:
        return None

    def num_parameters(self, in_dim: int, out_dim: int) -> int:
        return 0

    def project(self, module: nn.Module | None, pooled: Tensor, similarity: Similarity,
                mixing: InputMixing | None) -> Tensor:
        return encode_angles(pooled) if similarity.output_kind == ANGLES else pooled

    def st_modules(self, config: Any, head_state: dict[str, Tensor] | None,
                   mixing_state: dict[str, Tensor] | None) -> list[StModule]:
        return [angle_encoding_module(config.in_dim)] if compares_angles(config) else []

    def describe(self, config: Any) -> str:
        return "no head"

    def check(self, config: Any) -> tuple[str, str] | None:
        if config.dim != config.in_dim:
            return "dim", f"is {config.dim}, but without a head the output is the encoder's {config.in_dim} dimensions"
        return super().check(config)
