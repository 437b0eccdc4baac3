"""The sentence-transformers side of a model folder: modules.json and one folder per module, beside qcompress.json.

A folder written by `QCompressModel.save` loads in sentence-transformers as the same model:

    modules.json                       Transformer (encoder/) -> Pooling -> [Normalize] -> head modules
    config_sentence_transformers.json  prompts ("query", "document"), similarity, the packages it needs
    encoder/sentence_bert_config.json  max_seq_length (the model's max length)
    1_Pooling/config.json              the pooling mode
    2_Normalize                        when the model L2-normalises the pooled output
    N_Dense/, N_AngleEncoding/, ...    the head: Dense (Linear + tanh) for a linear head, AngleEncoding and
                                       QuantumHeadModule (qcompress.st_modules) for angles; weights in safetensors

The head's modules are its kind's (`st_modules` of each file in qcompress.heads: they compute what
`QCompressModel.project` computes); the similarity's sentence-transformers name is its own (`st_function` of
qcompress.similarity).

The files are written here without importing sentence-transformers (slow to import); the formats are the ones
sentence-transformers 6 reads (and older versions for the modules they share), checked by loading a saved folder
in tests/test_sentence_transformers.py.

The way back, `read_st_folder`: a folder that `SentenceTransformer.save` (and so `push_to_hub`) wrote for a
qcompress model has no qcompress.json, the encoder at its root and the modules in `N_ClassName/` folders. What the
model computes is all in its sentence-transformers files, so the config is rebuilt from them (the training record
is not: sentence-transformers keeps no such thing) and checked by writing the modules it implies and comparing
them with the folder's, so that a pipeline qcompress does not compute is refused rather than half-read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from qcompress._version import DISTRIBUTION, PIP_INSTALL, __version__
from qcompress.defaults import DEFAULT_MAX_LENGTH
from qcompress.errors import InputError
from qcompress.heads import get_head
from qcompress.model_card import read_front_matter
from qcompress.model_config import ModelConfig
from qcompress.pooling import _pooling_mode, _prompts, _read_json
from qcompress.similarity import get_similarity

__all__ = ["write_st_files", "read_st_folder", "read_weights", "Weights", "ST_CONFIG", "MODULES"]

ST_CONFIG = "config_sentence_transformers.json"
MODULES = "modules.json"

_POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                  "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken"}


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_st_files(folder: str | Path, config, encoder_dir: str, head_state: dict[str, Tensor] | None,
                   mixing_state: dict[str, Tensor] | None = None) -> None:
    """Write the sentence-transformers files of a model (a `qcompress.model.ModelConfig`, its head's and its input
    mixing's state dicts) into `folder`, whose encoder is already saved in `folder/encoder_dir`."""
    folder = Path(folder)
    _write_json(folder / encoder_dir / "sentence_bert_config.json",
                {"max_seq_length": config.max_length, "do_lower_case": False})
    modules = [("sentence_transformers.models.Transformer", encoder_dir, None, None),
               ("sentence_transformers.models.Pooling", "1_Pooling",
                {"word_embedding_dimension": config.in_dim,
                 **{flag: mode == config.pooling for mode, flag in _POOLING_FLAGS.items()}}, None)]
    if config.normalize:
        modules.append(("sentence_transformers.models.Normalize", "2_Normalize", None, None))
    for kind, name, module_config, weights in get_head(config.head).st_modules(config, head_state, mixing_state):
        modules.append((kind, f"{len(modules)}_{name}", module_config, weights))
    entries = []
    for idx, (kind, path, module_config, weights) in enumerate(modules):
        entries.append({"idx": idx, "name": str(idx), "path": path, "type": kind})
        if module_config is not None:
            _write_json(folder / path / "config.json", module_config)
        if weights is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(folder / path /
                                                                                          "model.safetensors"))
    _write_json(folder / MODULES, entries)
    custom = any(kind.startswith("qcompress.") for kind, *_ in modules)
    # Checked by sentence-transformers before it loads a module; its message then names the right pip command.
    requirements = {DISTRIBUTION: {"specifier": f">={__version__}", "reason": "the angle encoding, the quantum head "
                                   f"and log-fidelity are qcompress modules ({PIP_INSTALL}; load with "
                                   "trust_remote_code=True)"},
                    "sentence-transformers": {"specifier": ">=6.0", "reason": "the module hook that sets the "
                                              "model's log-fidelity similarity"}} if custom else {}
    _write_json(folder / ST_CONFIG, {
        "model_type": "SentenceTransformer",
        "__version__": {"qcompress": __version__},
        "prompts": {"query": config.query_prompt, "document": config.document_prompt},
        "default_prompt_name": None,
        "similarity_fn_name": get_similarity(config.similarity).st_function,
        **({"requirements": requirements} if requirements else {}),
    })


# -- reading a folder that sentence-transformers saved ---------------------------------------------------------------

# The head modules qcompress writes: the head kind each means, and the prefix of its weights' names (the attribute
# the module keeps the head's own module in; sentence-transformers' Dense names its weights as ClassicalHead does).
_HEAD_MODULES = {"QuantumHeadModule": ("quantum", "head."), "Dense": ("linear", "")}
_MIXING_PREFIX = "mixing."
_NAMESPACES = ("sentence_transformers.", "qcompress.st_modules.")
_LARGEST_MAX_LENGTH = 1_000_000  # tokenizers without a limit say 1e30


@dataclass(frozen=True)
class Weights:
    """A state dict as read from `file` (None where the file is missing): errors about it name the file."""

    file: Path
    state: dict[str, Tensor] | None

    def stripped(self, prefix: str) -> "Weights":
        """The same weights with `prefix` taken off their names (a module's attribute name)."""
        if self.state is None or not prefix:
            return self
        return Weights(self.file, {k.removeprefix(prefix): v for k, v in self.state.items()})


def read_weights(path: str | Path) -> Weights:
    """The tensors of a safetensors file (state None when there is no such file); an unreadable file is an
    InputError naming it."""
    path = Path(path)
    if not path.is_file():
        return Weights(path, None)
    try:
        return Weights(path, load_file(str(path)))
    except (SafetensorError, OSError) as err:
        raise InputError(f"not a readable safetensors file ({err})", file=path) from None


def _module_entries(path: Path) -> list[tuple[str, str, str]]:
    """(class name, type, folder) of each module in modules.json; a type outside sentence-transformers and
    qcompress is refused (nothing else would be imported by qcompress's reading of it anyway)."""
    entries = []
    for i, module in enumerate(_read_json(path, list)):
        kind = module.get("type") if isinstance(module, dict) else None
        folder = module.get("path", "") if isinstance(module, dict) else None
        if not isinstance(kind, str) or not kind.startswith(_NAMESPACES) or not isinstance(folder, str) or \
                Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise InputError(f"entry {i} is not a sentence-transformers or qcompress module in a folder inside the "
                             f"model's ({kind!r} at {folder!r})", file=path, field="type")
        entries.append((kind.rsplit(".", 1)[-1], kind, folder))
    return entries


def _module_config(folder: Path, path: str) -> dict:
    file = folder / path / "config.json"
    return _read_json(file, dict) if file.is_file() else {}


def _max_length(encoder: Path) -> int:
    """The encoder module's max_seq_length (sentence-transformers 5 and older: sentence_bert_config.json; 6: the
    tokenizer's model_max_length), else the default within the encoder's positions."""
    for file, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        value = _read_json(encoder / file, dict).get(key) if (encoder / file).is_file() else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _LARGEST_MAX_LENGTH:
            return value
    config = _read_json(encoder / "config.json", dict) if (encoder / "config.json").is_file() else {}
    positions = config.get("max_position_embeddings")
    return min(DEFAULT_MAX_LENGTH, positions) if isinstance(positions, int) and positions > 0 else DEFAULT_MAX_LENGTH


def _in_dim(folder: Path, pooling_path: str, encoder: Path) -> object:
    pooling = _module_config(folder, pooling_path)
    found = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if found is None and (encoder / "config.json").is_file():
        found = _read_json(encoder / "config.json", dict).get("hidden_size")
    return found


def read_st_folder(folder: str | Path) -> tuple[ModelConfig, Weights, Weights]:
    """The model a sentence-transformers folder computes, when qcompress computes it (Transformer, Pooling,
    [Normalize], then the modules `write_st_files` writes): its `ModelConfig` and its head's and mixing's weights
    (a state of None where it has no such module).

    The encoder is the Transformer module's folder (the model folder itself where sentence-transformers saved it at
    the root); the base model and licence come from the model card's YAML header when it has them. Anything else
    is an InputError naming modules.json.
    """
    folder = Path(folder)
    modules_file = folder / MODULES
    entries = _module_entries(modules_file)
    names = [name for name, _, _ in entries]
    if names[:2] != ["Transformer", "Pooling"]:
        raise InputError(f"the modules ({', '.join(names)}) do not start with a Transformer and its Pooling, as "
                         "every qcompress model does", file=modules_file, field="type")
    normalize = names[2:3] == ["Normalize"]
    tail = entries[2 + normalize:]
    paths = {name: path for name, _, path in tail}
    head_module = next((name for name in _HEAD_MODULES if name in paths), None)
    head, prefix = _HEAD_MODULES.get(head_module, ("none", ""))
    head_config = _module_config(folder, paths[head_module]) if head_module else {}
    encoder = folder / entries[0][2]
    in_dim = _in_dim(folder, entries[1][2], encoder)
    mixing = _module_config(folder, paths["InputMixingModule"]).get("kind") if "InputMixingModule" in paths \
        else "none"
    query_prompt, document_prompt = _prompts(folder / ST_CONFIG)
    config = ModelConfig.from_dict({
        "encoder": entries[0][2] or ".", "head": head, "in_dim": in_dim,
        "dim": head_config.get("out_dim", head_config.get("out_features", in_dim)),
        "similarity": "fidelity" if "AngleEncoding" in paths else "cosine",
        "pooling": _pooling_mode(folder / entries[1][2]), "normalize": normalize, "mixing": mixing,
        "max_length": _max_length(encoder), "query_prompt": query_prompt, "document_prompt": document_prompt,
        "base_model": read_front_matter(folder, "base_model"),
        "base_model_license": _known(read_front_matter(folder, "license")),
    }, file=modules_file)
    head_weights = _module_weights(folder, paths.get(head_module), prefix)
    mixing_weights = _module_weights(folder, paths.get("InputMixingModule"), _MIXING_PREFIX)
    _check_modules(folder, config, tail, head_weights, mixing_weights)
    return config, head_weights, mixing_weights


def _known(value: str | None) -> str | None:
    return None if value == "unknown" else value  # what a card says when it knows no licence


def _module_weights(folder: Path, path: str | None, prefix: str) -> Weights:
    """A module's weights (model.safetensors in its folder) named as qcompress's own module names them; a state of
    None (the file: modules.json) when the folder has no such module."""
    if path is None:
        return Weights(folder / MODULES, None)
    weights = read_weights(folder / path / "model.safetensors")
    if weights.state is None:
        raise InputError("is missing (the module's weights)", file=weights.file)
    return weights.stripped(prefix)


def _check_modules(folder: Path, config: ModelConfig, tail: list[tuple[str, str, str]], head: Weights,
                   mixing: Weights) -> None:
    """Refuse a folder whose modules after pooling are not the ones `config` implies (names and settings)."""
    modules_file = folder / MODULES
    try:
        expected = get_head(config.head).st_modules(config, head.state, mixing.state)
    except (KeyError, TypeError) as err:  # a state dict without the names the head's modules save
        raise InputError(f"the weights lack {err}", file=head.file) from None
    found = [(name, _module_config(folder, path)) for name, _, path in tail]
    wanted = [(kind.rsplit(".", 1)[-1], module_config or {}) for kind, _, module_config, _ in expected]
    same = len(found) == len(wanted) and all(
        name == want and all(config_.get(k) == v for k, v in want_config.items())
        for (name, config_), (want, want_config) in zip(found, wanted))
    if not same:
        raise InputError(f"the modules after pooling ({', '.join(n for n, _ in found) or 'none'}) are not a "
                         f"pipeline qcompress computes (a {config.head} head compared by {config.similarity} is "
                         f"{', '.join(w for w, _ in wanted) or 'no module'})", file=modules_file, field="type")
