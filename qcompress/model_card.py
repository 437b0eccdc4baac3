"""The model card (README.md) of a model folder: the Hub's YAML header, how to use the model, how it was made.

`hf upload ORG/NAME FOLDER` then publishes a model page that says what the model is (encoder, pooling, head,
similarity), how to load it (sentence-transformers and qcompress), the training set-up and, when training
validated, its evaluation table. Everything comes from the folder's `ModelConfig` (qcompress.json).
"""

from __future__ import annotations

import re
from pathlib import Path

from qcompress.heads import get_head
from qcompress.similarity import get_similarity

__all__ = ["model_card", "read_license", "code_size"]

TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "qcompress", "quantum-inspired",
        "embedding-compression"]
PAPER = "https://arxiv.org/abs/2501.04591"
# Training arguments shown in the card, in this order (the full record is qcompress.json's "training").
_TRAINING_ROWS = ("variant", "loss", "dataset", "split", "negatives", "in_batch_negatives", "train_fraction",
                  "epochs", "max_steps", "batch_size", "train_layers", "optimizer", "lr", "head_lr", "weight_decay",
                  "logit_scale", "bits", "quantizer", "seed")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---", re.S)


def read_license(encoder_folder: str | Path) -> str | None:
    """The `license:` of an encoder's own model card (README.md front matter), if it has one.

    Example:
        >>> import tempfile; folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "README.md").write_text("---\\nlicense: apache-2.0\\ntags: [x]\\n---\\n# Model\\n")
        >>> read_license(folder)
        'apache-2.0'
    """
    path = Path(encoder_folder) / "README.md"
    try:
        match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r"^license:\s*([\w.+-]+)\s*$", match.group(1), re.M) if match else None
    return found.group(1) if found else None


def _what(config) -> str:
    base = config.base_model or "a local encoder"
    at = f" (revision `{config.base_model_revision}`)" if config.base_model_revision else ""
    trained = "fine-tuned" if config.encoder_trained else "frozen"
    pooling = f"{config.pooling} pooling" + (", L2-normalised" if config.normalize else "")
    head = get_head(config.head).describe(config)
    out = get_similarity(config.similarity).describe_output(config.dim)
    return f"`{base}`{at} ({trained}, {pooling}), then {head}: each text becomes {out}."


def _usage(config, name: str) -> str:
    similarity = get_similarity(config.similarity)
    remote = ", trust_remote_code=True" if similarity.st_needs_qcompress else ""
    needs = " (needs `pip install qcompress`: the angle encoding and head are its modules)" if remote else ""
    return f"""## Use with sentence-transformers{needs}

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{name}"{remote})
queries = model.encode_query(["what is lift?"])
documents = model.encode_document(["Lift is the force that holds an aircraft in the air."])
print(model.similarity(queries, documents))  # {similarity.label}
```

## Use with qcompress

```python
import qcompress
model = qcompress.load_model("{name}")
embeddings = model.encode(["what is lift?"], role="query")
```

```bash
qcompress compress corpus.jsonl --model {name} -o corpus.parquet
```
"""


def code_size(config) -> str:
    """The storage of one document vector in words: float32 angles or vectors, or the low-bit codes.

    Example:
        >>> from qcompress.model import ModelConfig
        >>> config = ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128)
        >>> code_size(config), code_size(config.replace(bits=4))
        ('512 bytes per vector (float32)', '64 bytes per vector (4 bits per qubit)')
    """
    if config.bits is None:
        return f"{4 * config.dim} bytes per vector (float32)"
    from qcompress.scalar_codes import packed_bytes  # here: it needs torch, the card does not

    return f"{packed_bytes(config.dim, config.bits)} bytes per vector ({config.bits} bits per qubit)"


def _codes(config) -> str:
    if config.bits is None:
        return ""
    return f"""## Codes

Documents are stored as {config.bits}-bit codes per qubit: {code_size(config)}, the levels of each qubit in
`codes.safetensors` (`qcompress.codes.AngleCodes`). `qcompress compress --model` writes these codes; a query stays
float32 angles and is scored against the documents' levels by log-fidelity. `encode` (qcompress and
sentence-transformers alike) returns the float32 angles, uncoded: code them with
`qcompress.load_model(...).codec.encode(angles)`.

"""


def _table(rows: list[tuple[str, object]]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _training(config) -> str:
    if not config.training:
        return ""
    training, result = config.training, config.training_result or {}
    rows = [(k, training[k]) for k in _TRAINING_ROWS if training.get(k) is not None]
    rows += [(k, result[k]) for k in ("steps", "examples", "queries", "negatives_source", "final_loss")
             if result.get(k) is not None]
    how = ("label-free distillation: listwise KL towards the encoder's own cosine similarities"
           if training.get("loss") == "distill" else "contrastive: a query, one judged-relevant document and hard "
           "negatives; cross-entropy over logit-scale x similarity")
    coded = (f", the documents' side through the {training['bits']}-bit quantizer ({training.get('quantizer')})"
             if training.get("bits") else "")
    text = f"## Training\n\nTrained with `qcompress train` ({how}{coded}).\n\n" + _table(rows)
    if result.get("best_ndcg_cut_10") is not None:
        split = result.get("validation_split")
        protocol = result.get("validation_protocol") or "full"
        dataset = result.get("validation_dataset") or training.get("dataset") or "cranfield"
        text += (f"\n## Evaluation\n\nNDCG@10 on `{dataset}` split `{split}` "
                 f"(protocol `{protocol}`), measured during training:\n\n"
                 "| model | NDCG@10 |\n|---|---|\n"
                 f"| untrained (epoch 0) | {_fmt(result.get('baseline_ndcg_cut_10'))} |\n"
                 f"| this model (epoch {result.get('best_epoch')}) | {_fmt(result['best_ndcg_cut_10'])} |\n")
    return text


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def model_card(config, name: str) -> str:
    """README.md text for a model folder named `name` (the Hub id it will have, or the folder's name).

    Example:
        >>> from qcompress.model import ModelConfig
        >>> card = model_card(ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128), "m")
        >>> card.splitlines()[:3]
        ['---', 'library_name: sentence-transformers', 'tags:']
    """
    header = ["---", "library_name: sentence-transformers"]
    if config.base_model:
        header.append(f"base_model: {config.base_model}")
    header += ["tags:", *(f"- {t}" for t in TAGS), "pipeline_tag: sentence-similarity",
               f"license: {config.base_model_license or 'unknown'}", "---", ""]
    prompts = "".join(f"| {role} prompt | `{text}` |\n" for role, text in
                      (("query", config.query_prompt), ("document", config.document_prompt)) if text)
    encoder = f"`{config.base_model}`" if config.base_model else "a local encoder (stored in the folder)"
    details = _table([("encoder", encoder), ("pooling", config.pooling),
                      ("L2-normalised before the head", config.normalize), ("max length", config.max_length),
                      ("head", config.head), ("dimensions", f"{config.in_dim} -> {config.dim}"),
                      ("similarity", get_similarity(config.similarity).label),
                      ("document vector", code_size(config)),
                      ("qcompress", config.qcompress_version)]) + prompts
    body = [f"# {name}", "", f"A [qcompress]({PAPER}) embedding model: {_what(config)}", "", _usage(config, name),
            _codes(config), _training(config), "## Model details", "", details, "## Citation", "",
            f"Quantum-inspired embedding compression: {PAPER}", ""]
    return "\n".join(header + body)
