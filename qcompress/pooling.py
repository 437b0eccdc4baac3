"""How token vectors become one vector per text, and what an encoder's own sentence-transformers configuration says.

Pooling modes (the names sentence-transformers uses, with the same arithmetic):
    mean        the average of the attended tokens (padding excluded); SPEC §1, and qcompress's default
    cls         the first attended token (BERT's [CLS]; bge and other CLS-trained encoders)
    max         the element-wise maximum over the attended tokens
    lasttoken   the last attended token (decoder-style embedders)

An encoder folder written by sentence-transformers says how its authors pool and post-process it: `modules.json`
lists its modules (Transformer, Pooling, Normalize...), `1_Pooling/config.json` the pooling mode, and
`config_sentence_transformers.json` the prompts to put before queries and documents. `EncoderSettings.read` turns
that into qcompress's terms; what qcompress cannot reproduce (a Dense layer after pooling, several pooling modes
at once, pooling that leaves out the prompt) is refused with the file and field, so that no encoder is silently
used in a way its authors did not intend. Explicit choices (--pooling, --query-prompt, --document-prompt) win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qcompress.defaults import POOLINGS
from qcompress.encoder import mean_pool
from qcompress.errors import InputError, json_loads

__all__ = ["POOLINGS", "ROLES", "pool_hidden", "EncoderSettings"]

ROLES = ("query", "document")
# sentence-transformers 2.x-5.x stored the pooling mode as one flag per mode; 6.x reads both forms.
_LEGACY_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# Document prompts go by several names; sentence-transformers' encode_document tries them in this order.
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_MODULES_QCOMPRESS_USES = ("Transformer", "Pooling", "Normalize")


def pool_hidden(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Token vectors (B, T, H) and their attention mask (B, T) -> one vector per text (B, H).

    Example:
        >>> h = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]]); m = torch.tensor([[1, 1, 0]])
        >>> [pool_hidden(h, m, mode).tolist() for mode in POOLINGS]
        [[[2.0, 3.0]], [[1.0, 1.0]], [[3.0, 5.0]], [[3.0, 5.0]]]
    """
    if mode == "mean":
        return mean_pool(hidden, attention_mask)
    mask = attention_mask.bool()
    if mode == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1).values
    if mode in ("cls", "lasttoken"):
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        if mode == "cls":  # the first attended position (left padding puts it after the pads)
            index = torch.where(mask, positions, mask.shape[1]).min(dim=1).values
        else:
            index = torch.where(mask, positions, -1).max(dim=1).values
        index = index.clamp(0, mask.shape[1] - 1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    raise InputError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLINGS)}")


@dataclass(frozen=True)
class EncoderSettings:
    """How an encoder is meant to be used, from its sentence-transformers files (defaults where it has none)."""

    pooling: str = "mean"
    normalize: bool = False
    query_prompt: str = ""
    document_prompt: str = ""

    @classmethod
    def read(cls, folder: str | Path | None, *, pooling_given: bool = False) -> "EncoderSettings":
        """The settings of a local encoder folder; plain defaults for a folder without sentence-transformers files
        (or None). `pooling_given`: the caller chooses the pooling, so the folder's own is not checked.

        Example:
            >>> EncoderSettings.read(None)
            EncoderSettings(pooling='mean', normalize=False, query_prompt='', document_prompt='')
        """
        if folder is None or not (Path(folder) / "modules.json").is_file():
            return cls()
        folder = Path(folder)
        modules = _read_json(folder / "modules.json", list)
        kinds = {}
        for i, module in enumerate(modules):
            if not isinstance(module, dict) or not isinstance(module.get("type"), str):
                raise InputError(f"entry {i} has no module type", file=folder / "modules.json", field="type")
            kinds[module["type"].rsplit(".", 1)[-1]] = str(module.get("path", ""))
        extra = [k for k in kinds if k not in _MODULES_QCOMPRESS_USES]
        if extra and not pooling_given:
            raise InputError(f"the encoder's sentence-transformers pipeline has a {extra[0]} module after pooling, "
                             "which qcompress does not run; choose a pooling to use its transformer alone",
                             file=folder / "modules.json", field="type")
        pooling = "mean" if pooling_given or "Pooling" not in kinds else _pooling_mode(folder / kinds["Pooling"])
        query, document = _prompts(folder / "config_sentence_transformers.json")
        return cls(pooling=pooling, normalize="Normalize" in kinds, query_prompt=query, document_prompt=document)


def _read_json(path: Path, kind: type):
    try:
        data = json_loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read it as JSON ({err})", file=path) from None
    if not isinstance(data, kind):
        raise InputError(f"expected a JSON {'list' if kind is list else 'object'}", file=path)
    return data


def _pooling_mode(module_dir: Path) -> str:
    path = module_dir / "config.json"
    if not path.is_file():
        return "mean"  # sentence-transformers' own default
    config = _read_json(path, dict)
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for flag, name in _LEGACY_FLAGS.items() if config.get(flag)]
        mode = modes if len(modes) > 1 else (modes[0] if modes else "mean")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLINGS:
        raise InputError(f"pooling {mode!r} is not one qcompress computes ({', '.join(POOLINGS)}); choose a "
                         "pooling explicitly", file=path, field="pooling_mode")
    if config.get("include_prompt", True) is False:
        raise InputError("pooling that leaves the prompt tokens out is not supported; choose a pooling explicitly",
                         file=path, field="include_prompt")
    return mode


def _prompts(path: Path) -> tuple[str, str]:
    """(query prompt, document prompt) from config_sentence_transformers.json ("" where there is none)."""
    if not path.is_file():
        return "", ""
    prompts = _read_json(path, dict).get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise InputError("expected an object of prompt texts", file=path, field="prompts")
    document = next((prompts[name] for name in _DOCUMENT_PROMPT_NAMES if prompts.get(name)), "")
    return prompts.get("query", ""), document
