"""A qcompress model: encoder + mean pooling + optional head, saved as a folder (config JSON + safetensors).

Folder layout (what `QCompressModel.save` writes and `load_model` reads):
    qcompress.json         model config (encoder, head, dims, similarity, pooling, max length, version, training args)
    head.safetensors       head weights (absent for head "none")
    encoder/               the fine-tuned encoder and its tokenizer (save_pretrained), only when layers were trained
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcompress.encoder import DEFAULT_ENCODER, load_encoder, mean_pool, resolve_encoder
from qcompress.heads import HEAD_KINDS, build_head
from qcompress.quantum import encode_angles
from qcompress.similarity import check_similarity

CONFIG_NAME = "qcompress.json"
HEAD_WEIGHTS = "head.safetensors"
ENCODER_DIR = "encoder"
DEFAULT_SIMILARITY = {"quantum": "fidelity", "linear": "cosine", "none": "cosine"}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class QCompressModel(nn.Module):
    """Encoder, mean pooling, then an optional head; `encode` gives angles (fidelity) or vectors (cosine).

    Example:
        >>> model = build_model(head="quantum", dim=128)            # doctest: +SKIP
        >>> model.encode(["a query", "a passage"]).shape              # doctest: +SKIP
        torch.Size([2, 128])
    """

    def __init__(self, encoder: nn.Module, tokenizer, head: nn.Module | None, config: dict) -> None:
        super().__init__()
        self.encoder, self.tokenizer, self.head = encoder, tokenizer, head
        self.config = config

    # -- what the model is -------------------------------------------------------------------------------------
    @property
    def similarity(self) -> str:
        return self.config["similarity"]

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def output_kind(self) -> str:
        """"angles" (compared by fidelity) or "vectors" (compared by cosine)."""
        return "angles" if self.similarity == "fidelity" else "vectors"

    @property
    def max_length(self) -> int:
        return int(self.config["max_length"])

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def describe(self) -> dict:
        """The model-identifying fields, as written into Parquet metadata and result tables."""
        keys = ("encoder", "head", "in_dim", "dim", "similarity", "pooling", "max_length", "normalize")
        return {k: self.config.get(k) for k in keys}

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
        if self.config.get("normalize"):
            # The authors' frozen quantum variant L2-normalises before the tanh of the angle encoding.
            pooled = F.normalize(pooled, dim=-1)
        kind = self.config["head"]
        if kind == "quantum":
            return self.head(encode_angles(pooled))
        if kind == "linear":
            out = self.head(pooled)  # tanh(W x + b) in [-1, 1]
            return out * (math.pi / 2) + (math.pi / 2) if self.similarity == "fidelity" else out
        return encode_angles(pooled) if self.similarity == "fidelity" else pooled

    def forward(self, texts: Sequence[str]) -> Tensor:
        return self.project(self.pool(texts))

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Embeddings (len(texts), dim) as float32 on the CPU, in input order.

        Batches are formed longest-first (as sentence-transformers does) so that padding is small;
        `on_batch(n)` is called after each batch with its size, for progress bars.
        """
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.project(self.pool([texts[i] for i in idx])).float().cpu()
            if on_batch is not None:
                on_batch(len(idx))
        self.train(was_training)
        return out

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path, *, save_encoder: bool | None = None) -> None:
        """Write the model folder (into an existing, preferably temporary, folder: callers rename it into place)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if save_encoder is None:
            save_encoder = bool(self.config.get("encoder_trained"))
        config = dict(self.config, encoder_trained=save_encoder)
        if self.head is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(folder / HEAD_WEIGHTS))
        if save_encoder:
            self.encoder.save_pretrained(folder / ENCODER_DIR, safe_serialization=True)
            self.tokenizer.save_pretrained(folder / ENCODER_DIR)
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_config(
    *,
    encoder: str | None,
    head: str,
    in_dim: int,
    dim: int | None,
    similarity: str | None,
    max_length: int = 256,
    normalize: bool = False,
) -> dict:
    """The resolved model config; `dim` defaults to in_dim for head "none"."""
    from qcompress import __version__

    if head not in HEAD_KINDS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
    similarity = check_similarity(similarity or DEFAULT_SIMILARITY[head])
    if head == "quantum" and similarity != "fidelity":
        raise ValueError("a quantum head outputs qubit angles: use --similarity fidelity")
    if head == "none":
        if dim not in (None, in_dim):
            raise ValueError(f"--dim {dim} needs a head; with --head none the output is the encoder's {in_dim}")
        dim = in_dim
    if dim is None:
        raise ValueError(f"a {head} head needs an output size: pass --dim")
    if max_length <= 0:
        raise ValueError(f"--max-length must be positive, got {max_length}")
    return {
        "qcompress_version": __version__,
        "encoder": encoder or DEFAULT_ENCODER,
        "head": head,
        "in_dim": in_dim,
        "dim": dim,
        "similarity": similarity,
        "pooling": "mean",
        "max_length": max_length,
        "normalize": normalize,
        "encoder_trained": False,
    }


def build_model(
    encoder: str | None = None,
    *,
    head: str = "none",
    dim: int | None = None,
    similarity: str | None = None,
    max_length: int = 256,
    normalize: bool = False,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> QCompressModel:
    """A new model: the encoder (hub id, local folder, or None for the offline all-MiniLM-L6-v2) and a fresh head."""
    enc, tokenizer = load_encoder(encoder, trust_remote_code=trust_remote_code)
    in_dim = int(enc.config.hidden_size)
    config = model_config(
        encoder=encoder if encoder is None or not Path(encoder).is_dir() else resolve_encoder(encoder),
        head=head, in_dim=in_dim, dim=dim, similarity=similarity, max_length=max_length, normalize=normalize,
    )
    model = QCompressModel(enc, tokenizer, build_head(head, in_dim, config["dim"]), config)
    return model.to(device or default_device())


def load_model(
    folder: str | Path, *, trust_remote_code: bool = False, device: str | torch.device | None = None
) -> QCompressModel:
    """Load a model folder written by `qcompress train` (weights via safetensors only, never pickle).

    Example:
        >>> model = load_model("models/qbec")                         # doctest: +SKIP
        >>> angles = model.encode(["what is a wing?"])                # doctest: +SKIP
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a qcompress model folder (no {CONFIG_NAME}); train one with qcompress train")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: invalid JSON ({err})") from err
    missing = [k for k in ("encoder", "head", "in_dim", "dim", "similarity", "max_length") if k not in config]
    if missing:
        raise ValueError(f"{config_path}: missing field(s) {', '.join(missing)}")
    source = str(folder / ENCODER_DIR) if config.get("encoder_trained") else config["encoder"]
    enc, tokenizer = load_encoder(source, trust_remote_code=trust_remote_code)
    if int(enc.config.hidden_size) != int(config["in_dim"]):
        raise ValueError(
            f"{config_path}: encoder {source!r} has hidden size {enc.config.hidden_size}, the model expects {config['in_dim']}"
        )
    head = build_head(config["head"], int(config["in_dim"]), int(config["dim"]))
    if head is not None:
        weights = folder / HEAD_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"{folder}: missing {HEAD_WEIGHTS} for the {config['head']} head")
        try:
            head.load_state_dict(load_file(str(weights)))
        except RuntimeError as err:
            raise ValueError(f"{weights}: weights do not fit the {config['head']} head in the config: {err}") from err
    model = QCompressModel(enc, tokenizer, head, config)
    return model.to(device or default_device())
