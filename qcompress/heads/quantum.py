"""Head "quantum": the quantum-inspired compression head of arXiv 2501.04591 (`qcompress.quantum.QuantumHead`,
SPEC §3) on the angle-encoded pooled output, after the fitted input mixing when there is one (qcompress.mixing);
compared by fidelity. Its sentence-transformers modules: [InputMixingModule,] AngleEncoding, QuantumHeadModule
(qcompress.st_modules).

Example:
    >>> kind = QuantumHeadKind()
    >>> kind.num_parameters(768, 256) == sum(p.numel() for p in kind.build(768, 256).parameters())
    True
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from qcompress.heads.base import HeadKind, StModule, angle_encoding_module
from qcompress.mixing import InputMixing
from qcompress.heads import sizes
from qcompress.quantum import QuantumHead, encode_angles
from qcompress.similarity.base import ANGLES, Similarity

__all__ = ["QuantumHeadKind"]


class QuantumHeadKind(HeadKind):
    """A `QuantumHead`: qubit angles in, qubit angles out (weights `raw`)."""

    name = "quantum"
    output_kinds = (ANGLES,)
    default_similarity = "fidelity"
    mixes_inputs = True

    def build(self, in_dim: int, out_dim: int) -> nn.Module | None:
        return QuantumHead(in_dim, out_dim)

    def num_parameters(self, in_dim: int, out_dim: int) -> int:
        return sizes.quantum_head_num_parameters(in_dim, out_dim)

    def project(self, module: nn.Module | None, pooled: Tensor, similarity: Similarity,
                mixing: InputMixing | None) -> Tensor:
        if mixing is not None:
            pooled = mixing(pooled)
        return module(encode_angles(pooled))

    def st_modules(self, config: Any, head_state: dict[str, Tensor] | None,
                   mixing_state: dict[str, Tensor] | None) -> list[StModule]:
        mixing = [] if config.mixing == "none" else [(
            "qcompress.st_modules.InputMixingModule", "InputMixing", {"kind": config.mixing, "in_dim": config.in_dim},
            {f"mixing.{k}": v for k, v in mixing_state.items()})]
        head = ("qcompress.st_modules.QuantumHeadModule", "QuantumHead", {"in_dim": config.in_dim,
                                                                          "out_dim": config.dim},
                {"head.raw": head_state["raw"]})
        return [*mixing, angle_encoding_module(config.in_dim), head]

    def describe(self, config: Any) -> str:
        return f"the quantum-inspired compression head ({self.num_parameters(config.in_dim, config.dim):,} parameters)"

    def check(self, config: Any) -> tuple[str, str] | None:
        if super().check(config) is not None:  # the same refusal, in the words users know
            return "similarity", "a quantum head outputs qubit angles, which are compared by fidelity, not " \
                                 f"{config.similarity}"
        return None
