"""`HeadKind`: what one kind of head owns. A new head subclasses it in its own file and is listed in
`qcompress.heads.HEAD_REGISTRY` (or registered with `register_head`); nothing else in qcompress names it.

What a kind is asked for, and by whom:
    build, num_parameters     the module (`qcompress.heads.build_head`) and its size (count-params, the card)
    project                   `QCompressModel.project`: pooled encoder outputs -> embeddings
    output_kinds              what it can output (angles, vectors): `ModelConfig` accepts the similarities that
                              compare those; default_similarity is the one used when none is chosen
    st_modules                its sentence-transformers modules after pooling (`qcompress.st_folder`)
    describe                  what the model card says it is (`qcompress.model_card`)
    check                     what `ModelConfig` refuses for it, beyond the checks every head gets

Example:
    >>> from qcompress.heads import get_head
    >>> get_head("linear").num_parameters(768, 256), get_head("none").has_dim
    (196864, False)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from qcompress.mixing import InputMixing
from qcompress.similarity import get_similarity
from qcompress.similarity.base import ANGLES, VECTORS, Similarity

__all__ = ["HeadKind", "StModule", "angle_encoding_module", "compares_angles"]

# One sentence-transformers module of a saved folder: (class path, folder name, its config.json or None, its
# weights (name -> tensor, written to model.safetensors) or None).
StModule = tuple[str, str, "dict | None", "dict[str, Tensor] | None"]


def compares_angles(config: Any) -> bool:
    """Whether a model's similarity compares qubit angles (else real vectors)."""
    return get_similarity(config.similarity).output_kind == ANGLES


def angle_encoding_module(dim: int) -> StModule:
    """qcompress.st_modules.AngleEncoding: theta = tanh(u) * pi/2 + pi/2, and log-fidelity as the similarity."""
    return ("qcompress.st_modules.AngleEncoding", "AngleEncoding", {"dim": dim}, None)


class HeadKind:
    """A kind of head. Subclasses set `name` and the attributes that differ, and write the methods below.

    `config` arguments are `qcompress.model_config.ModelConfig`s (fields head, in_dim, dim, similarity, mixing...).
    """

    name: str = ""
    output_kinds: tuple[str, ...] = (ANGLES, VECTORS)  # what it can output (qcompress.similarity.base)
    default_similarity: str = "cosine"
    has_dim: bool = True  # False: no output size of its own (the pooled vector's size)
    trainable: bool = True  # False: training it alone (a frozen encoder) has nothing to train
    mixes_inputs: bool = False  # True: an input mixing (qcompress.mixing) may come before it

    def build(self, in_dim: int, out_dim: int) -> nn.Module | None:
        """A fresh module (its state dict is the folder's head.safetensors), or None for no weights."""
        raise NotImplementedError

    def num_parameters(self, in_dim: int, out_dim: int) -> int:
        """The parameter count of `build(in_dim, out_dim)`, without building it."""
        raise NotImplementedError

    def project(self, module: nn.Module | None, pooled: Tensor, similarity: Similarity,
                mixing: InputMixing | None) -> Tensor:
        """Pooled outputs (B, in_dim), already L2-normalised where the model says so, -> embeddings (B, dim) of
        the kind `similarity` compares (`similarity.output_kind`: angles in [0, pi], or vectors)."""
        raise NotImplementedError

    def st_modules(self, config: Any, head_state: dict[str, Tensor] | None,
                   mixing_state: dict[str, Tensor] | None) -> list[StModule]:
        """The sentence-transformers modules after pooling (and Normalize) that compute `project`, given the
        module's and the mixing's state dicts."""
        raise NotImplementedError

    def describe(self, config: Any) -> str:
        """The head in words, for the model card ("a linear head (Linear + tanh, 49,280 parameters)")."""
        raise NotImplementedError

    def check(self, config: Any) -> tuple[str, str] | None:
        """(field, what is wrong) when `config` does not fit this head, else None. This one refuses a similarity
        that compares what the head cannot output; ModelConfig checks dim <= in_dim, and no input mixing unless the
        head `mixes_inputs`, for every head."""
        output = get_similarity(config.similarity).output_kind
        if output not in self.output_kinds:
            return "similarity", f"a {self.name} head outputs {' or '.join(self.output_kinds)}, not the {output} " \
                                 f"{config.similarity} compares"
        return None
