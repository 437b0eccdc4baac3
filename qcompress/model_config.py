"""`ModelConfig`: what a model is, as plain values, stored in its folder as qcompress.json and checked field by field.

A config is checked both when a model is built and when a folder is loaded, so a hand-edited or hostile
qcompress.json fails with one line naming the file and the field instead of giving wrong results. Where the encoder
may come from is checked when a folder is loaded (`qcompress.model.load_model`): a Hub id, or a folder inside the
model folder. `bits` (1..8, angle models only) says that the folder carries a low-bit codec (codes.safetensors,
`qcompress.codes.AngleCodes`): its documents are stored as codes of that many bits per qubit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from qcompress._version import __version__
from qcompress.defaults import DEFAULT_ENCODER, DEFAULT_MAX_LENGTH, MIXINGS, POOLINGS
from qcompress.errors import InputError, json_loads
from qcompress.heads import DEFAULT_SIMILARITY, HEAD_REGISTRY, get_head
from qcompress.similarity import SIMILARITY_REGISTRY, get_similarity
from qcompress.similarity.base import ANGLES

__all__ = ["ModelConfig", "read_config", "CONFIG_NAME", "DEFAULT_SIMILARITY", "DESCRIBE_FIELDS"]

CONFIG_NAME = "qcompress.json"
# The fields that identify what a model computes (Parquet metadata, result tables).
DESCRIBE_FIELDS = ("encoder", "head", "in_dim", "dim", "similarity", "pooling", "normalize", "mixing",
                   "query_prompt", "document_prompt", "max_length")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ModelConfig:
    """What a model is, as plain values (the contents of qcompress.json). Immutable: use `replace`.

    `encoder` is where the encoder's weights are: in a saved folder "encoder" (its subfolder) or a Hub id (at
    `encoder_revision`); in memory, the folder it was loaded from. `base_model` (and its revision and licence) is
    the Hub model the encoder came from, when known: the model card names it. `pooling`, `normalize` and the
    prompts are how texts become the head's input (the encoder's own sentence-transformers configuration unless
    chosen otherwise). `bits` (None: no codes) is the width of the folder's angle codes, per qubit.

    Example:
        >>> c = ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128)
        >>> c.similarity, c.replace(max_length=128).max_length, c.replace(bits=4).bits
        ('fidelity', 128, 4)
        >>> c.replace(similarity="cosine", head="linear", bits=4)
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: bits: codes store qubit angles; a cosine model outputs vectors (train a fidelity model)
    """

    encoder: str
    head: str
    in_dim: int
    dim: int
    similarity: str
    pooling: str = "mean"
    max_length: int = DEFAULT_MAX_LENGTH
    normalize: bool = False
    mixing: str = "none"  # qcompress.mixing: how the pooled vector is centred and rotated before the quantum head
    query_prompt: str = ""
    document_prompt: str = ""
    bits: int | None = None  # low-bit angle codes per qubit (codes.safetensors); None: the model has no codec
    encoder_trained: bool = False
    encoder_revision: str | None = None
    base_model: str | None = None
    base_model_revision: str | None = None
    base_model_license: str | None = None
    training: dict | None = None  # the resolved training arguments (qcompress.training.TrainConfig)
    training_result: dict | None = None  # steps, losses, validation of the run that trained it
    qcompress_version: str = __version__

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            field, message = problem
            raise InputError(f"{field}: {message}")

    def _problem(self) -> tuple[str, str] | None:
        """(field, what is wrong) for the first invalid field, or None."""
        if not isinstance(self.encoder, str) or not self.encoder:
            return "encoder", f"must be a non-empty string (a Hub id or a folder), got {self.encoder!r}"
        if HEAD_REGISTRY.problem(self.head) is not None:
            return "head", HEAD_REGISTRY.problem(self.head)
        for name in ("in_dim", "dim", "max_length"):
            if not _positive_int(getattr(self, name)):
                return name, f"must be a positive integer, got {getattr(self, name)!r}"
        if SIMILARITY_REGISTRY.problem(self.similarity) is not None:
            return "similarity", SIMILARITY_REGISTRY.problem(self.similarity)
        head = get_head(self.head)
        problem = head.check(self)  # what the head kind refuses (qcompress.heads)
        if problem is not None:
            return problem
        if self.dim > self.in_dim:
            return "dim", f"is {self.dim}, larger than in_dim {self.in_dim}: a head compresses"
        if not isinstance(self.pooling, str) or self.pooling not in POOLINGS:
            return "pooling", f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}"
        if not isinstance(self.mixing, str) or self.mixing not in MIXINGS:
            return "mixing", f"unknown mixing {self.mixing!r}; choose one of {', '.join(MIXINGS)}"
        if self.mixing != "none" and not head.mixes_inputs:
            return "mixing", f"{self.mixing} mixes the quantum head's inputs; a {self.head} head has none to mix"
        problem = self._bits_problem()
        if problem is not None:
            return "bits", problem
        for name in ("normalize", "encoder_trained"):
            if not isinstance(getattr(self, name), bool):
                return name, f"must be true or false, got {getattr(self, name)!r}"
        for name in ("query_prompt", "document_prompt", "qcompress_version"):
            if not isinstance(getattr(self, name), str):
                return name, f"must be a string, got {getattr(self, name)!r}"
        for name in ("encoder_revision", "base_model", "base_model_revision", "base_model_license"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                return name, f"must be a non-empty string or null, got {value!r}"
        for name in ("training", "training_result"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                return name, f"must be an object or null, got {getattr(self, name)!r}"
        return None

    def _bits_problem(self) -> str | None:
        if self.bits is None:
            return None
        from qcompress.scalar_codes import MAX_BITS  # here: the module needs torch, a config does not

        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            return f"must be an integer from 1 to {MAX_BITS} (bits per qubit) or null, got {self.bits!r}"
        if get_similarity(self.similarity).output_kind != ANGLES:
            return f"codes store qubit angles; a {self.similarity} model outputs vectors (train a fidelity model)"
        return None

    @classmethod
    def create(
        cls,
        *,
        encoder: str | None,
        head: str = "none",
        in_dim: int,
        dim: int | None = None,
        similarity: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        normalize: bool = False,
        **fields: Any,
    ) -> "ModelConfig":
        """A new model's config: `dim` defaults to in_dim without a head, `similarity` to the head's own; `fields`
        sets the others (pooling, prompts, base model...)."""
        kind = get_head(head)
        if not kind.has_dim and dim is None:
            dim = in_dim
        if dim is None:
            raise InputError(f"a {head} head needs an output size (dim)")
        return cls(encoder=encoder or DEFAULT_ENCODER, head=head, in_dim=in_dim, dim=dim,
                   similarity=similarity or kind.default_similarity, max_length=max_length, normalize=normalize,
                   **fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | Path | None = None) -> "ModelConfig":
        """Check and read a config as stored in qcompress.json; errors name the file and the field."""
        if not isinstance(data, Mapping):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", file=file)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InputError("unknown field (written by a newer qcompress?)", file=file, field=unknown[0])
        required = [name for name, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise InputError("missing field", file=file, field=missing[0])
        config = cls.__new__(cls)
        for name in fields:
            object.__setattr__(config, name, data.get(name, fields[name].default))
        problem = config._problem()
        if problem is not None:
            raise InputError(problem[1], file=file, field=problem[0])
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict:
        """The model-identifying fields, as written into Parquet metadata and result tables (the encoder by its Hub
        id where it has one)."""
        return dict({k: getattr(self, k) for k in DESCRIBE_FIELDS}, encoder=self.base_model or self.encoder)


def read_config(folder: str | Path) -> ModelConfig:
    """The checked `ModelConfig` of a model folder."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"not a qcompress model folder (no {CONFIG_NAME}); train one with qcompress train",
                         file=folder)
    try:
        data = json_loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"invalid JSON ({err})", file=path) from None
    return ModelConfig.from_dict(data, file=path)
