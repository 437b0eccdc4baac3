"""The model card (README.md) of a model folder: the Hub's YAML header, how to use the model, how it was made.

`qcompress push FOLDER ORG/NAME` then publishes a model page that says what the model is (encoder, pooling, head,
similarity), how to load it by its Hub id after `pip install qcompress-embeddings` (sentence-transformers and
qcompress), the training set-up and, when training validated, its evaluation table. The YAML header follows the
Hub's model cards: library_name, base_model, datasets (where the training set has a Hub id), tags, pipeline_tag,
license. Everything comes from the folder's `ModelConfig` (qcompress.json). A card qcompress wrote carries
`CARD_MARKER`, so that `qcompress push` may rewrite it with the repository's id (a card of the user's own is kept).
"""

from __future__ import annotations

import re
from pathlib import Path

from qcompress._version import PIP_INSTALL
from qcompress.heads import get_head
from qcompress.similarity import get_similarity

__all__ = ["model_card", "read_license", "read_front_matter", "hub_id", "hub_datasets", "CARD_MARKER", "TAGS", "code_size"]

TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "qcompress", "quantum-inspired",
        "embedding-compression"]
PAPER = "https://arxiv.org/abs/2501.04591"
# Training arguments shown in the card, in this order (the full record is qcompress.json's "training").
_TRAINING_ROWS = ("variant", "loss", "dataset", "split", "negatives", "in_batch_negatives", "train_fraction",
                  "epochs", "max_steps", "batch_size", "train_layers", "optimizer", "lr", "head_lr", "weight_decay",
                  "logit_scale", "bits", "quantizer", "seed")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---", re.S)
CARD_MARKER = "<!-- model card written by qcompress (qcompress push rewrites it with the repository's id) -->"
_PLACEHOLDER_OWNER = "your-name"
_LOSSES = {
    "contrastive": "contrastive: a query, one judged-relevant document and hard negatives; cross-entropy over "
                   "logit-scale x similarity",
    "distill": "label-free distillation: the head learns to keep the encoder's own cosine similarities, listwise KL "
               "over random documents; no relevance judgements used",
}


def read_front_matter(folder: str | Path, key: str) -> str | None:
    """The value of a one-line `key:` (or the first item of a `key:` list) in the YAML header of a folder's model
    card (README.md), if it has one.

    Example:
        >>> import tempfile; folder = Path(tempfile.mkdtemp())
        >>> header = "---\\nlicense: apache-2.0\\nbase_model:\\n- org/m\\n---\\n"
        >>> _ = (folder / "README.md").write_text(header + "# Model\\n")
        >>> read_front_matter(folder, "license"), read_front_matter(folder, "base_model"), read_license(folder)
        ('apache-2.0', 'org/m', 'apache-2.0')
    """
    path = Path(folder) / "README.md"
    try:
        match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    pattern = rf"^{re.escape(key)}:[ \t]*(?:([\w./+-]+)|\n-[ \t]+([\w./+-]+))[ \t]*$"
    found = re.search(pattern, match.group(1), re.M) if match else None
    return (found.group(1) or found.group(2)) if found else None


def read_license(encoder_folder: str | Path) -> str | None:
    """The `license:` of an encoder's own model card (README.md front matter), if it has one."""
    return read_front_matter(encoder_folder, "license")


def _what(config) -> str:
    base = config.base_model or "a local encoder"
    at = f" (revision `{config.base_model_revision}`)" if config.base_model_revision else ""
    trained = "fine-tuned" if config.encoder_trained else "frozen"
    pooling = f"{config.pooling} pooling" + (", L2-normalised" if config.normalize else "")
    head = get_head(config.head).describe(config)
    out = get_similarity(config.similarity).describe_output(config.dim)
    return f"`{base}`{at} ({trained}, {pooling}), then {head}: each text becomes {out}."


def hub_id(name: str) -> str:
    """The Hub id a card names: `name` itself when it is one (ORG/NAME), else a placeholder owner's.

    Example:
        >>> hub_id("qbfec-minilm"), hub_id("org/qbfec")
        ('your-name/qbfec-minilm', 'org/qbfec')
    """
    return name if "/" in name else f"{_PLACEHOLDER_OWNER}/{Path(name).name}"


def hub_datasets(training: dict | None) -> list[str]:
    """The Hub ids of the datasets a model was trained on, where qcompress knows them: ir_datasets' BEIR ids
    (beir/NAME/...) are the Hub's BeIR/NAME; local files, Cranfield and TREC DL folders have none.

    Example:
        >>> hub_datasets({"dataset": "beir/fiqa/train"}), hub_datasets({"dataset": "cranfield"})
        (['BeIR/fiqa'], [])
    """
    dataset = (training or {}).get("dataset")
    parts = dataset.split("/") if isinstance(dataset, str) else []
    return [f"BeIR/{parts[1]}"] if len(parts) >= 2 and parts[0] == "beir" and parts[1] else []


def _usage(config, name: str) -> str:
    similarity = get_similarity(config.similarity)
    remote = ", trust_remote_code=True" if similarity.st_needs_qcompress else ""
    why = (f"\n`trust_remote_code=True` lets sentence-transformers (6 and later) import module classes from outside "
           f"its own package: here the angle encoding and the quantum head of the installed qcompress "
           f"(`qcompress.st_modules`, as `modules.json` lists them). The repository holds no code and only "
           f"safetensors weights; pin a `revision=` to load exactly the files you checked.\n") if remote else \
        "\nsentence-transformers alone loads it: every module is one of its own.\n"
    model_id = hub_id(name)
    return f"""## Use with sentence-transformers

```bash
{PIP_INSTALL}
```

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{model_id}"{remote})
queries = model.encode_query(["what is lift?"])
documents = model.encode_document(["Lift is the force that holds an aircraft in the air."])
print(model.similarity(queries, documents))  # {similarity.label}
```
{why}
## Use with qcompress

```python
import qcompress
model = qcompress.load_model("{model_id}")
embeddings = model.encode(["what is lift?"], role="query")
```

```bash
qcompress compress corpus.jsonl --model {model_id} -o corpus.parquet
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
    loss = training.get("loss") or "contrastive"
    coded = (f", the documents' side through the {training['bits']}-bit quantizer ({training.get('quantizer')})"
             if training.get("bits") else "")
    text = f"## Training\n\nTrained with `qcompress train` ({_LOSSES.get(loss, loss)}{coded}).\n\n" + _table(rows)
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
    """README.md text for a model named `name`: its Hub id (ORG/NAME), or the folder's name (the usage examples then
    name the placeholder id your-name/NAME).

    Example:
        >>> from qcompress.model import ModelConfig
        >>> card = model_card(ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128), "m")
        >>> card.splitlines()[:3]
        ['---', 'library_name: sentence-transformers', 'tags:']
        >>> 'SentenceTransformer("your-name/m", trust_remote_code=True)' in card
        True
    """
    header = ["---", "library_name: sentence-transformers"]
    if config.base_model:
        header.append(f"base_model: {config.base_model}")
    datasets = hub_datasets(config.training)
    if datasets:
        header += ["datasets:", *(f"- {d}" for d in datasets)]
    header += ["tags:", *(f"- {t}" for t in TAGS), "pipeline_tag: sentence-similarity",
               f"license: {config.base_model_license or 'unknown'}", "---", CARD_MARKER, ""]
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
