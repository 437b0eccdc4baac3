"""A qcompress model: encoder + pooling + optional head, saved as a folder that qcompress and sentence-transformers
both load.

Folder layout (what `QCompressModel.save` writes and `load_model` reads):
    qcompress.json         `ModelConfig` (qcompress.model_config): encoder, pooling, prompts, head, dims,
                           similarity, max length, the base model, the training run
    head.safetensors       head weights (absent for head "none")
    mixing.safetensors     the fitted input mixing before a quantum head (qcompress.mixing; absent for "none")
    codes.safetensors      the low-bit angle codec (qcompress.codes.AngleCodes: levels per qubit) when qcompress.json
                           has `bits`; `QCompressModel.codec` (None without). `encode` still returns float angles:
                           the codec says how documents are stored (`qcompress compress`)
    encoder/               the encoder and its tokenizer (trained or frozen: a folder never points elsewhere)
    modules.json, ...      the same model as sentence-transformers modules (qcompress.st_folder)
    README.md              the model card, with the Hub's YAML header (qcompress.model_card)

`load_model` also reads a folder that `SentenceTransformer.save` (or `push_to_hub`) wrote for a qcompress model:
no qcompress.json, the config rebuilt from its sentence-transformers files (`qcompress.st_folder.read_st_folder`).

A model is named by a folder or by a Hugging Face Hub id (with a revision): `load_model` fetches a Hub model
through huggingface_hub (qcompress.hub), so its cache and HF_HUB_OFFLINE apply. The `encoder` field of a
folder's qcompress.json is a Hub id or a folder inside the model folder; anything else is refused unless the user
names the encoder (`load_model(..., encoder=PATH)`, `--encoder PATH`). Weights are read as safetensors only.
`ModelSpec` is the one place where a model is chosen from user arguments (a folder, or an encoder without a head).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers.utils import logging as hf_logging

from qcompress.backends import attach_backend, require_backend
from qcompress.batching import DEFAULT_BATCH_SIZE, eval_mode, map_batches
from qcompress.defaults import DEFAULT_ENCODER, DEFAULT_MAX_LENGTH, TORCH_BACKENDS
from qcompress.encoder import EncoderSource, check_safetensors, load_encoder, locate_encoder, position_limit
from qcompress.errors import InputError
from qcompress.heads import DEFAULT_SIMILARITY, build_head, get_head
from qcompress.hub import download, is_hub_id, snapshot_identity
from qcompress.mixing import InputMixing
from qcompress.model_card import model_card, read_license
from qcompress.model_config import CONFIG_NAME, ModelConfig, _positive_int, read_config
from qcompress.pooling import POOLINGS, ROLES, EncoderSettings, pool_hidden
from qcompress.similarity import get_similarity
from qcompress.st_folder import MODULES, Weights, read_st_folder, read_weights, write_st_files

if TYPE_CHECKING:
    from qcompress.codes import AngleCodes

__all__ = ["ModelConfig", "QCompressModel", "ModelSpec", "build_model", "load_model", "default_device",
           "read_config", "model_folder", "CONFIG_NAME", "HEAD_WEIGHTS", "ENCODER_DIR", "DEFAULT_SIMILARITY",
           "DEFAULT_MODEL_DIR", "default_model_spec", "read_folder", "write_model_files", "check_folder"]

HEAD_WEIGHTS = "head.safetensors"
MIXING_WEIGHTS = "mixing.safetensors"
ENCODER_DIR = "encoder"
# The trained default model folder shipped with the package: a head-only folder (a 384 -> 128 quantum head with
# pca mixing over the frozen all-MiniLM-L6-v2, named by Hub id), distilled by recipes/default-head.sh.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_max_length(encoder: nn.Module, max_length: int, name: str) -> None:
    """Refuse a max length beyond the encoder's position embeddings (it would fail deep inside the forward pass)."""
    limit = position_limit(encoder)
    if limit is not None and max_length > limit:
        raise InputError(f"{max_length} tokens is more than the {limit} positions the encoder {name} has; choose "
                         f"at most {limit}", field="max_length")


class QCompressModel(nn.Module):
    """Encoder, pooling, then an optional head; `encode` gives angles (fidelity) or vectors (cosine). `codec` is
    the model's low-bit angle codec (`qcompress.codes.AngleCodes`, `config.bits` per qubit) or None.

    Example:
        >>> model = build_model("minilm", head="quantum", dim=128)   # the offline all-MiniLM-L6-v2
        >>> model.encode(["a query", "a passage"]).shape             # numpy, as sentence-transformers returns
        (2, 128)
        >>> model.encode("a query", convert_to_tensor=True).shape    # one text: one row; a torch tensor
        torch.Size([128])
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, head: nn.Module | None, config: ModelConfig,
                 mixing: InputMixing | None = None, codec: AngleCodes | None = None) -> None:
        super().__init__()
        if (mixing is None) != (config.mixing == "none") or (mixing is not None and mixing.kind != config.mixing):
            raise ValueError(f"the config's mixing {config.mixing!r} and the mixing module "
                             f"{getattr(mixing, 'kind', None)!r} differ")
        if (codec is None) != (config.bits is None) or (codec is not None and (codec.bits, codec.dim) !=
                                                        (config.bits, config.dim)):
            raise ValueError(f"the config's bits {config.bits!r} (dim {config.dim}) and the codec {codec!r} differ")
        self.encoder, self.tokenizer, self.head, self.mixing = encoder, tokenizer, head, mixing
        self.config, self.codec = config, codec
        # How to load this model again, where there is a way (set by load_model, build_model): the model_ref of the
        # Parquet files it writes. {"hub_id", "revision"}, {"folder"}, or {"encoder", "revision"} without a head.
        self.reference: dict | None = None
        self.runtime = None  # an exported encoder that runs instead of `encoder` (qcompress.backends), else None

    def set_codec(self, codec: AngleCodes | None) -> None:
        """Give the model a low-bit angle codec (its `bits` go into the config), or take it away (None)."""
        if codec is not None and codec.dim != self.dim:
            raise ValueError(f"a codec of {codec.dim} qubits does not fit a model of dim {self.dim}")
        self.config = self.config.replace(bits=codec.bits if codec is not None else None)  # refuses cosine models
        self.codec = codec

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
        """"angles" (compared by fidelity) or "vectors" (compared by cosine): the similarity's."""
        return get_similarity(self.similarity).output_kind

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def backend(self) -> str:
        """What runs the encoder: "torch", or an exported backend (qcompress.backends.attach_backend)."""
        return "torch" if self.runtime is None else self.runtime.backend

    @property
    def backend_variant(self) -> str:
        """The backend and what else decides its outputs (onnx-int8-avx2: its int8 settings): what the pooled-output
        cache and an embedding file's metadata name."""
        return "torch" if self.runtime is None else self.runtime.variant

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters()) if self.head is not None else 0

    def describe(self) -> dict:
        return self.config.describe()

    def prompt(self, role: str | None) -> str:
        """The text put before every text of a role: "query", "document", or None (no prompt)."""
        if role is None:
            return ""
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)} (or None), got {role!r}")
        return self.config.query_prompt if role == "query" else self.config.document_prompt

    def prompted(self, texts: Sequence[str], role: str | None) -> list[str]:
        """`texts` with the role's prompt before each (what the encoder then sees)."""
        prompt = self.prompt(role)
        return [prompt + t for t in texts] if prompt else list(texts)

    # -- forward pieces --------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict:
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def pool_hidden(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """The model's pooling of token vectors (B, T, in_dim) -> (B, in_dim)."""
        return pool_hidden(hidden, attention_mask, self.config.pooling)

    def pool(self, texts: Sequence[str]) -> Tensor:
        """Pooled encoder output (B, in_dim) of texts as given (prompts already in them), with gradients where the
        encoder has trainable layers (none through an exported backend, which runs on the CPU)."""
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        hidden = self.encoder(**batch).last_hidden_state if self.runtime is None else self.runtime(batch)
        return self.pool_hidden(hidden, batch["attention_mask"]).float()

    def project(self, pooled: Tensor) -> Tensor:
        """Pooled encoder output (B, in_dim) -> embeddings (B, dim): angles for fidelity, vectors for cosine."""
        if self.config.normalize:
            # The authors' frozen quantum variant L2-normalises before the tanh of the angle encoding; so does every
            # encoder whose sentence-transformers pipeline ends with Normalize.
            pooled = F.normalize(pooled, dim=-1)
        # The head kind (qcompress.heads) does the rest: the quantum head mixes its inputs and encodes them as angles.
        return get_head(self.config.head).project(self.head, pooled, get_similarity(self.similarity), self.mixing)

    def forward(self, texts: Sequence[str]) -> Tensor:
        return self.project(self.pool(texts))

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        role: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[int], None] | None = None,
        convert_to_tensor: bool = False,
    ) -> np.ndarray | Tensor:
        """Embeddings (len(texts), dim), float32, in input order, in eval mode (no dropout): a numpy array, or a
        torch tensor on the CPU with `convert_to_tensor=True` (as sentence-transformers' `encode`; qcompress's
        own code asks for tensors). One text (a str) gives one row, shape (dim,).

        `role` ("query" or "document") puts the model's prompt for it before each text. Batches are formed
        longest-first (qcompress.batching); `on_batch(n)` is called after each batch.
        """
        if isinstance(texts, str):
            return self.encode([texts], role=role, batch_size=batch_size, on_batch=on_batch,
                               convert_to_tensor=convert_to_tensor)[0]
        texts = self.prompted(texts, role)
        with eval_mode(self):
            values = map_batches(self.forward, texts, batch_size, width=self.dim, on_batch=on_batch)
        return values if convert_to_tensor else values.numpy()

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path, *, name: str | None = None, store_encoder: bool = True) -> None:
        """Write the model folder (into an existing, preferably temporary, folder: callers rename it into place):
        qcompress's files, the encoder, the same model as sentence-transformers modules, and the model card
        (`name`: what the card calls the model, by default the folder's name).

        `store_encoder=False` (a frozen encoder with a Hub id only) writes a head-only folder (qcompress.json, the
        head's and the mixing's weights) that names the encoder by Hub id and revision: qcompress loads it (the
        encoder from the Hub or its offline copy); sentence-transformers needs the full folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.codec is not None:
            from qcompress.codes import CODES_FILE

            self.codec.save(folder / CODES_FILE)
        if not store_encoder and (self.config.encoder_trained or not self.config.base_model):
            raise InputError("store_encoder=False needs a frozen encoder that has a Hub id (base_model)")
        config = self.config.replace(encoder=ENCODER_DIR, encoder_revision=None) if store_encoder else \
            self.config.replace(encoder=self.config.base_model, encoder_revision=self.config.base_model_revision)
        state = None
        if self.head is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(folder / HEAD_WEIGHTS))
        mixing_state = None
        if self.mixing is not None:
            mixing_state = {k: v.detach().cpu().contiguous() for k, v in self.mixing.state_dict().items()}
            save_file(mixing_state, str(folder / MIXING_WEIGHTS))
        if store_encoder:
            hf_logging.disable_progress_bar()  # our own progress bars own stderr (loading a model turns it back on)
            self.encoder.save_pretrained(folder / ENCODER_DIR, safe_serialization=True)
            self.tokenizer.save_pretrained(folder / ENCODER_DIR)
        write_model_files(folder, config, state, mixing_state, name=name or Path(folder).name,
                          complete=store_encoder)


def write_model_files(folder: str | Path, config: ModelConfig, head_state: dict[str, Tensor] | None,
                      mixing_state: dict[str, Tensor] | None, *, name: str, complete: bool = True) -> None:
    """qcompress.json, and for a `complete` folder (its encoder saved in encoder/, the config saying so) the
    sentence-transformers files and the model card (`name`: the model's name on the card, or its Hub id), of a
    folder whose weights are in place."""
    folder = Path(folder)
    if complete:
        write_st_files(folder, config, ENCODER_DIR, head_state, mixing_state)
        (folder / "README.md").write_text(model_card(config, name))
    (folder / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def build_model(
    encoder: str | None = None,
    *,
    revision: str | None = None,
    head: str = "none",
    dim: int | None = None,
    similarity: str | None = None,
    max_length: int | None = None,
    normalize: bool | None = None,
    pooling: str | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    mixing: str = "none",
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> QCompressModel:
    """A new model: the encoder (Hub id at `revision`, local folder, or None for the offline all-MiniLM-L6-v2) and
    a fresh head (with an input mixing of kind `mixing` before a quantum head: the identity until fitted, see
    qcompress.mixing).

    `pooling`, `normalize`, `query_prompt` and `document_prompt` left as None come from the encoder's own
    sentence-transformers configuration (`qcompress.pooling.EncoderSettings`), else mean pooling, no
    normalisation and no prompts. `max_length` None: 256 tokens, or fewer if the encoder has fewer positions; a
    larger value than it has is refused.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}", field="pooling")
    source = locate_encoder(encoder, revision)
    settings = EncoderSettings.read(source.path, pooling_given=pooling is not None)
    enc, tokenizer = load_encoder(str(source.path), trust_remote_code=trust_remote_code)
    limit = position_limit(enc)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    check_max_length(enc, max_length, str(encoder or source.hub_id))
    in_dim = int(enc.config.hidden_size)
    config = ModelConfig.create(
        encoder=str(source.path), head=head, in_dim=in_dim, dim=dim, similarity=similarity, max_length=max_length,
        normalize=settings.normalize if normalize is None else normalize,
        pooling=pooling or settings.pooling,
        query_prompt=settings.query_prompt if query_prompt is None else query_prompt,
        document_prompt=settings.document_prompt if document_prompt is None else document_prompt, mixing=mixing,
        base_model=source.hub_id, base_model_revision=source.revision, base_model_license=read_license(source.path),
    )
    mixer = InputMixing(mixing, in_dim) if mixing != "none" else None
    model = QCompressModel(enc, tokenizer, build_head(head, in_dim, config.dim), config, mixer)
    if head == "none":  # a fresh head has no weights anyone can load again
        model.reference = ({"encoder": source.hub_id, "revision": source.revision} if source.hub_id else
                           {"encoder": str(Path(source.path).resolve())})
    return model.to(device or default_device())


def model_folder(name: str | Path, revision: str | None = None) -> Path:
    """The local folder of a model named by a folder or a Hub id (fetched into the Hugging Face cache)."""
    path = Path(name)
    if path.is_dir():
        if revision is not None:
            raise InputError("a revision applies to a Hub id, not to a local folder", file=path)
        return path
    if not is_hub_id(str(name)):
        raise InputError("not a qcompress model folder (no such folder, and not a Hugging Face Hub id)", file=path)
    return download(str(name), revision)


def _check_contained(folder: Path, paths: Sequence[Path]) -> None:
    """Refuse a model folder whose files or folders (`paths`, and everything under them) are symbolic links that
    leave it: a model folder may not point elsewhere on this machine, by a qcompress.json path or by a link. The
    Hugging Face cache's own layout is allowed: a snapshot's files are links into its repository's blobs/."""
    root = folder.resolve()
    if snapshot_identity(folder) is not None:
        root = root.parents[1]  # models--ORG--NAME/, which holds snapshots/ and blobs/
    for path in paths:
        entries = [path] + [Path(top) / name for top, dirs, files in os.walk(path) for name in dirs + files]
        for entry in entries:
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise InputError(f"{entry.relative_to(folder)} is a symbolic link that leaves the model folder (to "
                                 f"{entry.resolve()}); a model folder may not point elsewhere on this machine: copy "
                                 "the file into it", file=folder)


def _folder_encoder(folder: Path, config: ModelConfig) -> EncoderSource:
    """Where a model folder's encoder is: its subfolder, or a Hub id (never a path elsewhere on this machine)."""
    config_path = folder / CONFIG_NAME
    if config.encoder_trained or config.encoder == ENCODER_DIR:  # earlier versions kept trained encoders only
        inside = folder / ENCODER_DIR
        if not inside.is_dir():
            raise InputError(f"the model's encoder folder {ENCODER_DIR}/ is missing", file=folder)
        _check_contained(folder, [inside])
        return EncoderSource(inside, config.base_model, config.base_model_revision)
    candidate = (folder / config.encoder).resolve()
    if not Path(config.encoder).is_absolute() and candidate.is_relative_to(folder.resolve()) and candidate.is_dir():
        _check_contained(folder, [folder / config.encoder])
        return EncoderSource(candidate, config.base_model, config.base_model_revision)
    if is_hub_id(config.encoder):  # a Hub id, never a folder of the current directory that has its name
        return locate_encoder(config.encoder, config.encoder_revision, folders=False)
    raise InputError(f"{config.encoder!r} is neither a Hugging Face Hub id nor a folder inside the model folder; a "
                     "model folder may not point elsewhere on this machine. If you trust that encoder, name it "
                     "yourself (--encoder PATH)", file=config_path, field="encoder")


def read_folder(folder: str | Path) -> tuple[ModelConfig, Weights, Weights]:
    """A model folder's config and its head's and mixing's weights (a state of None where it has none):
    from qcompress.json and head.safetensors / mixing.safetensors, or, in a folder that sentence-transformers saved
    (a modules.json, no qcompress.json), from its sentence-transformers files."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() and (folder / MODULES).is_file():
        return read_st_folder(folder)
    return read_config(folder), read_weights(folder / HEAD_WEIGHTS), read_weights(folder / MIXING_WEIGHTS)


def _load_head(config: ModelConfig, weights: Weights) -> nn.Module | None:
    head = build_head(config.head, config.in_dim, config.dim)
    if head is None:
        return None
    if weights.state is None:
        raise InputError(f"missing {weights.file.name} for the {config.head} head", file=weights.file.parent)
    try:
        head.load_state_dict(weights.state)
    except RuntimeError as err:
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise InputError(f"weights do not fit the {config.head} head {config.in_dim} -> {config.dim} ({reason})",
                         file=weights.file) from None
    return head


def _load_mixing(config: ModelConfig, weights: Weights) -> InputMixing | None:
    if config.mixing == "none":
        return None
    mixing = InputMixing(config.mixing, config.in_dim)
    try:
        if weights.state is None:
            raise RuntimeError("the file is missing")
        mixing.load_checked(weights.state)
    except (RuntimeError, InputError) as err:
        reason = str(err).strip().splitlines()[-1]
        raise InputError(f"not the fitted {config.mixing} mixing of the model ({reason})", file=weights.file) \
            from None
    return mixing


def check_folder(folder: str | Path) -> ModelConfig:
    """Check a local model folder as `load_model` reads it, without loading the encoder's weights: its config, that
    the head's and mixing's weights fit it, and that its encoder (inside it, or by Hub id) has safetensors weights.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> build_model("minilm", head="quantum", dim=64).save(folder)
        >>> check_folder(folder).dim
        64
    """
    folder = Path(folder)
    config, head_weights, mixing_weights = read_folder(folder)
    _load_head(config, head_weights)
    _load_mixing(config, mixing_weights)
    _load_codec(folder, config)
    check_safetensors(_folder_encoder(folder, config).path)
    return config


def _load_codec(folder: Path, config: ModelConfig) -> AngleCodes | None:
    """The folder's codec when qcompress.json has `bits` (it must fit them); a codec without `bits` is refused."""
    from qcompress.codes import CODES_FILE, AngleCodes

    path = folder / CODES_FILE
    if config.bits is None:
        if path.exists():
            raise InputError(f"{CODES_FILE} is here but {CONFIG_NAME} has no bits: set bits to the codec's, or "
                             "delete the file", file=folder)
        return None
    if not path.is_file():
        raise InputError(f"missing {CODES_FILE} for the {config.bits}-bit codes of {CONFIG_NAME}", file=folder)
    codec = AngleCodes.load(path)
    if (codec.bits, codec.dim) != (config.bits, config.dim):
        raise InputError(f"a codec of {codec.dim} qubits at {codec.bits} bits, but {CONFIG_NAME} has dim "
                         f"{config.dim} and bits {config.bits}", file=path)
    return codec


def load_model(
    name: str | Path,
    *,
    revision: str | None = None,
    encoder: str | None = None,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
) -> QCompressModel:
    """Load a model folder written by `qcompress train` (or by `SentenceTransformer.save` for a qcompress model), or a
    Hub id at `revision` (weights via safetensors only).

    `encoder` replaces the folder's own encoder (a folder or Hub id the user vouches for).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> build_model("minilm", head="quantum", dim=64).save(folder)
        >>> load_model(folder).encode(["what is a wing?"]).shape
        (1, 64)
    """
    folder = model_folder(name, revision)
    _check_contained(folder, [folder])  # every file: qcompress's own, or a sentence-transformers folder's modules
    config, head_weights, mixing_weights = read_folder(folder)
    codec = _load_codec(folder, config)  # before the encoder: a bad codec file fails fast
    source = locate_encoder(encoder) if encoder is not None else _folder_encoder(folder, config)
    enc, tokenizer = load_encoder(str(source.path), trust_remote_code=trust_remote_code)
    if int(enc.config.hidden_size) != config.in_dim:
        raise InputError(f"the encoder {source.path} has hidden size {enc.config.hidden_size}, the model expects "
                         f"{config.in_dim}", file=folder / CONFIG_NAME, field="in_dim")
    try:
        check_max_length(enc, config.max_length, str(source.path))
    except InputError as err:
        raise InputError(err.reason, file=folder / CONFIG_NAME, field="max_length") from None
    model = QCompressModel(enc, tokenizer, _load_head(config, head_weights), config,
                           _load_mixing(config, mixing_weights), codec)
    if encoder is None:  # with another encoder, the folder alone no longer loads this model
        hub = snapshot_identity(folder)
        model.reference = {"hub_id": hub[0], "revision": hub[1]} if hub else {"folder": str(folder.resolve())}
    return model.to(device or default_device())


@dataclass(frozen=True)
class ModelSpec:
    """Which model to use, as a user names it: a model folder or Hub id (`model_dir`, at `revision`), or an encoder
    without a head (and a similarity, pooling and prompts; None: the encoder's own configuration).

    `max_length` overrides the model's own; `encoder` with a model folder replaces the folder's encoder. `backend`
    runs the encoder in torch bfloat16, or through ONNX Runtime or OpenVINO (qcompress.backends; exports kept under
    `export_dir`, None: the cache folder). The same spec loads the same model anywhere (the CLI, Ray workers).

    Example:
        >>> ModelSpec(encoder="minilm", similarity="fidelity").label
        'minilm:fidelity'
    """

    model_dir: str | None = None
    encoder: str | None = None
    similarity: str | None = None
    max_length: int | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    pooling: str | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    backend: str = "torch"
    export_dir: str | None = None

    def __post_init__(self) -> None:
        chosen = (self.similarity, self.pooling, self.query_prompt, self.document_prompt)
        if self.model_dir is not None and any(value is not None for value in chosen):
            raise InputError("a model folder names its own similarity, pooling and prompts; give a folder or an "
                             "encoder")
        if self.model_dir is None and self.encoder is None:
            raise InputError("name a model: a model folder, or an encoder (used without a head)")
        if self.max_length is not None and not _positive_int(self.max_length):
            raise InputError(f"max_length must be a positive integer, got {self.max_length!r}")

    @property
    def label(self) -> str:
        """A short name for tables: the folder's name, or encoder:similarity."""
        if self.model_dir is not None:
            return Path(self.model_dir.rstrip("/")).name or self.model_dir
        return f"{self.encoder}:{self.similarity or get_head('none').default_similarity}"

    def load(self, device: str | torch.device | None = None) -> QCompressModel:
        if self.backend == "torch":
            return self._load(device)
        require_backend(self.backend)  # before any weights load: a missing extra is one line
        model = self._load(device if self.backend in TORCH_BACKENDS else device or "cpu")  # exports: CPU runtimes
        attach_backend(model, self.backend, self.export_dir)
        return model

    def _load(self, device: str | torch.device | None) -> QCompressModel:
        if self.model_dir is not None:
            model = load_model(self.model_dir, revision=self.revision, encoder=self.encoder,
                               trust_remote_code=self.trust_remote_code, device=device)
            if self.max_length is not None:
                check_max_length(model.encoder, self.max_length, model.describe()["encoder"])
                model.config = model.config.replace(max_length=self.max_length)
            return model
        return build_model(self.encoder, revision=self.revision, head="none", similarity=self.similarity,
                           max_length=self.max_length, pooling=self.pooling,
                           query_prompt=self.query_prompt, document_prompt=self.document_prompt,
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
