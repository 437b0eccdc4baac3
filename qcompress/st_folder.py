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
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from qcompress._version import __version__
from qcompress.heads import get_head
from qcompress.similarity import get_similarity

__all__ = ["write_st_files"]

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
    _write_json(folder / "modules.json", entries)
    custom = any(kind.startswith("qcompress.") for kind, *_ in modules)
    requirements = {"qcompress": {"specifier": f">={__version__}", "reason": "the angle encoding, the quantum head "
                                  "and log-fidelity are qcompress modules (load with trust_remote_code=True)"},
                    "sentence-transformers": {"specifier": ">=6.0", "reason": "the module hook that sets the "
                                              "model's log-fidelity similarity"}} if custom else {}
    _write_json(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        "__version__": {"qcompress": __version__},
        "prompts": {"query": config.query_prompt, "document": config.document_prompt},
        "default_prompt_name": None,
        "similarity_fn_name": get_similarity(config.similarity).st_function,
        **({"requirements": requirements} if requirements else {}),
    })
