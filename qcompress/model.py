"""A qcompress model: encoder + mean pooling + optional head, saved as a folder (config JSON + safetensors).

Folder layout (what `QCompressModel.save` writes and `load_model` reads):
    qcompress.json         `ModelConfig` (encoder, head, dims, similarity, pooling, max length, version, training)
    head.safetensors       head weights (absent for head "none")
    encoder/               the fine-tuned encoder and its tokenizer (save_pretrained), only when layers were trained

`ModelConfig` is immutable and checked field by field, both when a model is built and when a folder is loaded, so
a hand-edited `qcompress.json` fails with one line naming the file and the field instead of giving wrong results.
`ModelSpec` is the one place where a model is chosen from user arguments (a folder, or an encoder without a head).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from qcompress._version import __version__
from qcompress.batching import DEFAULT_BATCH_SIZE, eval_mode, map_batches
from qcompress.defaults import DEFAULT_SIMILARITY
from qcompress.encoder import DEFAULT_ENCODER, DEFAULT_MAX_LENGTH, load_encoder, mean_pool, resolve_encoder
from qcompress.errors import InputError
from qcompress.heads import HEAD_KINDS, build_head
from qcompress.quantum import encode_angles
from qcompress.similarity import SIMILARITIES

__all__ = ["ModelConfig", "QCompressModel", "ModelSpec", "build_model", "load_model", "default_device",
           "CONFIG_NAME", "HEAD_WEIGHTS", "ENCODER_DIR", "DEFAULT_SIMILARITY", "DEFAULT_MODEL_DIR",
           "default_model_spec"]

CONFIG_NAME = "qcompress.json"
HEAD_WEIGHTS = "head.safetensors"
ENCODER_DIR = "encoder"
# Where a trained default model folder ships with the package (none yet: issue 18 adds one).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
POOLINGS = ("mean",)
# The fields that identify what a model computes (Parquet metadata, result tables).
DESCRIBE_FIELDS = ("encoder", "head", "in_dim", "dim", "similarity", "pooling", "max_length", "normalize")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ModelConfig:
    """What a model is, as plain values (the contents of qcompress.json). Immutable: use `replace`.

    Example:
        >>> c = ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128)
        >>> c.similarity, c.replace(max_length=128).max_length
        ('fidelity', 128)
    """

    encoder: str
    head: str
    in_dim: int
    dim: int
    similarity: str
    pooling: str = "mean"
    max_length: int = DEFAULT_MAX_LENGTH
    normalize: bool = False
    encoder_trained: bool = False
    training: dict | None = None  # the resolved training arguments (qcompress.training.TrainConfig)
    training_result: dict | None = None  # steps, losses, validation of the run that trained it
    qcompress_version: str = __version__

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            field, message = problem
            raise ValueError(f"{field}: {message}")

    def _problem(self) -> tuple[str, str] | None:
        """(field, what is wrong) for the first invalid field, or None."""
        if not isinstance(self.encoder, str) or not self.encoder:
            return "encoder", f"must be a non-empty string (a Hub id or a folder), got {self.encoder!r}"
        if self.head not in HEAD_KINDS:
            return "head", f"unknown head {self.head!r}; choose one of {', '.join(HEAD_KINDS)}"
        for name in ("in_dim", "dim", "max_length"):
            if not _positive_int(getattr(self, name)):
                return name, f"must be a positive integer, got {getattr(self, name)!r}"
        if self.similarity not in SIMILARITIES:
            return "similarity", f"unknown similarity {self.similarity!r}; choose one of {', '.join(SIMILARITIES)}"
        if self.head == "quantum" and self.similarity != "fidelity":
            return "similarity", "a quantum head outputs qubit angles, which are compared by fidelity, not cosine"
        if self.head == "none" and self.dim != self.in_dim:
            return "dim", f"is {self.dim}, but without a head the output is the encoder's {self.in_dim} dimensions"
        if self.dim > self.in_dim:
            return "dim", f"is {self.dim}, larger than in_dim {self.in_dim}: a head compresses"
        if self.pooling not in POOLINGS:
            return "pooling", f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}"
        for name in ("normalize", "encoder_trained"):
            if not isinstance(getattr(self, name), bool):
                return name, f"must be true or false, got {getattr(self, name)!r}"
        for name in ("training", "training_result"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                return name, f"must be an object or null, got {getattr(self, name)!r}"
        if not isinstance(self.qcompress_version, str):
            return "qcompress_version", f"must be a string, got {self.qcompress_version!r}"
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
    ) -> "ModelConfig":
        """A new model's config: `dim` defaults to in_dim without a head, `similarity` to the head's own."""
        if head not in HEAD_KINDS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
        if head == "none" and dim is None:
            dim = in_dim
        if dim is None:
            raise ValueError(f"a {head} head needs an output size (dim)")
        return cls(encoder=encoder or DEFAULT_ENCODER, head=head, in_dim=in_dim, dim=dim,
                   similarity=similarity or DEFAULT_SIMILARITY[head], max_length=max_length, normalize=normalize)

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
        """The model-identifying fields, as written into Parquet metadata and result tables."""
        return {k: getattr(self, k) for k in DESCRIBE_FIELDS}


class QCompressModel(nn.Module):
    """Encoder, mean pooling, then an optional head; `encode` gives angles (fidelity) or vectors (cosine).

    Example:
        >>> model = build_model("minilm", head="quantum", dim=128)   # the offline all-MiniLM-L6-v2
        >>> model.encode(["a query", "a passage"]).shape
        torch.Size([2, 128])
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, head: nn.Module | None, config: ModelConfig) -> None:
        super().__init__()
        self.encoder, self.tokenizer, self.head = encoder, tokenizer, head
        self.config = config

    # -- what the model is -------------------------------------------------------------------------------------
    @property
    def similarity(self) -> str:
        return self.config.similarity

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def in_dim(self) -> int:
        return self.config.in_dim

    @property
    def output_kind(self) -> str:
        """"angles" (compared by fidelity) or "vectors" (compared by cosine)."""
        return "angles" if self.similarity == "fidelity" else "vectors"

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters()) if self.head is not None else 0

    def describe(self) -> dict:
        return self.config.describe()

    # -- forward pieces --------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict:
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def pool(self, texts: Sequence[str]) -> Tensor:
        """Mean-pooled encoder output (B, in_dim), with gradients where the encoder has trainable layers."""
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        hidden = self.encoder(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"]).float()

    def project(self, pooled: Tensor) -> Tensor:
        """Pooled encoder output (B, in_dim) -> embeddings (B, dim): angles for fidelity, vectors for cosine."""
        if self.config.normalize:
            # The authors' frozen quantum variant L2-normalises before the tanh of the angle encoding.
            pooled = F.normalize(pooled, dim=-1)
        kind = self.config.head
        if kind == "quantum":
            return self.head(encode_angles(pooled))
        if kind == "linear":
            out = self.head(pooled)  # tanh(W x + b) in [-1, 1]
            return out * (math.pi / 2) + (math.pi / 2) if self.similarity == "fidelity" else out
        return encode_angles(pooled) if self.similarity == "fidelity" else pooled

    def forward(self, texts: Sequence[str]) -> Tensor:
        return self.project(self.pool(texts))

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Embeddings (len(texts), dim) as float32 on the CPU, in input order, in eval mode (no dropout).

        Batches are formed longest-first (qcompress.batching); `on_batch(n)` is called after each batch.
        """
        with eval_mode(self):
            return map_batches(self.forward, texts, batch_size, width=self.dim, on_batch=on_batch)

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path, *, save_encoder: bool | None = None) -> None:
        """Write the model folder (into an existing, preferably temporary, folder: callers rename it into place)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if save_encoder is None:
            save_encoder = self.config.encoder_trained
        config = self.config.replace(encoder_trained=save_encoder)
        if self.head is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(folder / HEAD_WEIGHTS))
        if save_encoder:
            self.encoder.save_pretrained(folder / ENCODER_DIR, safe_serialization=True)
            self.tokenizer.save_pretrained(folder / ENCODER_DIR)
        (folder / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def build_model(
    encoder: str | None = None,
    *,
    head: str = "none",
    dim: int | None = None,
    similarity: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    normalize: bool = False,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> QCompressModel:
    """A new model: the encoder (hub id, local folder, or None for the offline all-MiniLM-L6-v2) and a fresh head."""
    enc, tokenizer = load_encoder(encoder, trust_remote_code=trust_remote_code)
    in_dim = int(enc.config.hidden_size)
    config = ModelConfig.create(
        encoder=encoder if encoder is None or not Path(encoder).is_dir() else resolve_encoder(encoder),
        head=head, in_dim=in_dim, dim=dim, similarity=similarity, max_length=max_length, normalize=normalize,
    )
    model = QCompressModel(enc, tokenizer, build_head(head, in_dim, config.dim), config)
    return model.to(device or default_device())


def read_config(folder: str | Path) -> ModelConfig:
    """The checked `ModelConfig` of a model folder."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"not a qcompress model folder (no {CONFIG_NAME}); train one with qcompress train",
                         file=folder)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"invalid JSON ({err})", file=path) from None
    return ModelConfig.from_dict(data, file=path)


def load_model(
    folder: str | Path, *, trust_remote_code: bool = False, device: str | torch.device | None = None
) -> QCompressModel:
    """Load a model folder written by `qcompress train` (weights via safetensors only, never pickle).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> build_model("minilm", head="quantum", dim=64).save(folder)
        >>> load_model(folder).encode(["what is a wing?"]).shape
        torch.Size([1, 64])
    """
    folder = Path(folder)
    config = read_config(folder)
    config_path = folder / CONFIG_NAME
    source = str(folder / ENCODER_DIR) if config.encoder_trained else config.encoder
    enc, tokenizer = load_encoder(source, trust_remote_code=trust_remote_code)
    if int(enc.config.hidden_size) != config.in_dim:
        raise InputError(f"encoder {source!r} has hidden size {enc.config.hidden_size}, the model expects "
                         f"{config.in_dim}", file=config_path, field="in_dim")
    head = build_head(config.head, config.in_dim, config.dim)
    if head is not None:
        weights = folder / HEAD_WEIGHTS
        if not weights.is_file():
            raise InputError(f"missing {HEAD_WEIGHTS} for the {config.head} head", file=folder)
        try:
            head.load_state_dict(load_file(str(weights)))
        except RuntimeError as err:
            raise InputError(f"weights do not fit the {config.head} head in the config: {err}", file=weights) from None
    model = QCompressModel(enc, tokenizer, head, config)
    return model.to(device or default_device())


@dataclass(frozen=True)
class ModelSpec:
    """Which model to use, as a user names it: a model folder, or an encoder without a head (and a similarity).

    `max_length` overrides the model's own. The same spec loads the same model anywhere (the CLI, Ray workers).

    Example:
        >>> ModelSpec(encoder="minilm", similarity="fidelity").label
        'minilm:fidelity'
    """

    model_dir: str | None = None
    encoder: str | None = None
    similarity: str | None = None
    max_length: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.model_dir is not None and (self.encoder is not None or self.similarity is not None):
            raise ValueError("a model folder names its own encoder and similarity; give a folder or an encoder")
        if self.model_dir is None and self.encoder is None:
            raise ValueError("name a model: a model folder, or an encoder (used without a head)")
        if self.max_length is not None and not _positive_int(self.max_length):
            raise ValueError(f"max_length must be a positive integer, got {self.max_length!r}")

    @property
    def label(self) -> str:
        """A short name for tables: the folder's name, or encoder:similarity."""
        if self.model_dir is not None:
            return Path(self.model_dir.rstrip("/")).name or self.model_dir
        return f"{self.encoder}:{self.similarity or DEFAULT_SIMILARITY['none']}"

    def load(self, device: str | torch.device | None = None) -> QCompressModel:
        if self.model_dir is not None:
            model = load_model(self.model_dir, trust_remote_code=self.trust_remote_code, device=device)
            if self.max_length is not None:
                model.config = model.config.replace(max_length=self.max_length)
            return model
        return build_model(self.encoder, head="none", similarity=self.similarity,
                           max_length=self.max_length or DEFAULT_MAX_LENGTH,
                           trust_remote_code=self.trust_remote_code, device=device)


def default_model_spec() -> ModelSpec:
    """The model used when a user names none: the trained model folder shipped in `DEFAULT_MODEL_DIR` when the
    package has one, else the default encoder's own angles without a head (the paper's QBT: fidelity).

    Example:
        >>> spec = default_model_spec()
        >>> spec.model_dir is not None or (spec.encoder, spec.similarity) == (DEFAULT_ENCODER, "fidelity")
        True
    """
    if (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        return ModelSpec(model_dir=str(DEFAULT_MODEL_DIR))
    return ModelSpec(encoder=DEFAULT_ENCODER, similarity="fidelity")
