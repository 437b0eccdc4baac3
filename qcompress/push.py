"""`qcompress push`: publish a model folder on the Hugging Face Hub as a repository that qcompress (`--model ORG/NAME`)
and sentence-transformers (`SentenceTransformer("ORG/NAME", ...)`) both load by its id.

What is uploaded (`push_plan`, which `qcompress push --dry-run` prints): every file of the folder but hidden ones,
with
    qcompress.json   always: a folder that sentence-transformers saved (no qcompress.json) gets the config rebuilt
                     from its modules (qcompress.st_folder.read_st_folder)
    README.md        the model card, rewritten to name the repository's id when qcompress wrote it and the folder
                     has its qcompress.json (a card of the user's own is kept as it is)
A head-only folder (qcompress/default_model/, `save(store_encoder=False)`) is completed first, its encoder copied
in (qcompress.default_folder.complete_folder), since sentence-transformers needs the encoder in the repository.
The folder is checked as `load_model` reads it, and refused when it holds pickled weights or code: a repository
pushed by qcompress holds safetensors weights only and nothing that runs.

The upload is one commit through huggingface_hub (`create_repo`, `create_branch` for --revision, `create_commit`:
what `upload_folder` does, with the two files above given as bytes so that the folder itself is never changed);
its token (`hf auth login`, HF_TOKEN) and endpoint apply. Offline (HF_HUB_OFFLINE=1, or the Hub out of reach) it
stops with one line, as does a refusal by the Hub.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from qcompress.default_folder import complete_folder
from qcompress.errors import InputError
from qcompress.hub import is_hub_id
from qcompress.model import CONFIG_NAME, ENCODER_DIR, check_folder, read_config
from qcompress.model_card import CARD_MARKER, model_card
from qcompress.st_folder import MODULES

__all__ = ["PushPlan", "push_plan", "push", "REFUSED_SUFFIXES"]

# Pickled weights (loading them can run code) and code itself: never published by qcompress.
REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack", ".joblib", ".py", ".pyc")
CARD = "README.md"
# The class names of the network errors of whichever HTTP library huggingface_hub uses (requests, httpx...).
_NETWORK_ERRORS = {"ConnectionError", "ConnectError", "ConnectTimeout", "TransportError", "NetworkError", "Timeout",
                   "TimeoutException", "ProxyError", "SSLError"}


@dataclass(frozen=True)
class PushPlan:
    """What a push uploads: path in the repository -> a local file, or the bytes of a file written for the push."""

    files: dict[str, Path | bytes]
    config: object  # the folder's ModelConfig

    def size(self, path: str) -> int:
        content = self.files[path]
        return len(content) if isinstance(content, bytes) else content.stat().st_size

    def operations(self) -> list[CommitOperationAdd]:
        return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes)
                                   else str(content)) for path, content in sorted(self.files.items())]


def _folder_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(path in the repository, file) of every file under `folder`, hidden ones (and hidden folders) left out."""
    inside = folder.resolve()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.is_dir():
            continue
        if not path.resolve().is_relative_to(inside):
            raise InputError(f"{relative.as_posix()} links outside the folder; push a folder that holds its files",
                             file=folder)
        if path.suffix.lower() in REFUSED_SUFFIXES:
            raise InputError(f"holds {relative.as_posix()}: qcompress pushes safetensors weights only and no code (a "
                             "pickle or a script can run code where it is loaded); move it out of the folder",
                             file=folder)
        yield relative.as_posix(), path


def _is_head_only(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and not (folder / MODULES).is_file() and \
        read_config(folder).encoder != ENCODER_DIR


@contextlib.contextmanager
def push_plan(folder: str | Path, repo_id: str) -> Iterator[PushPlan]:
    """Yield the files `push` uploads for the model folder `folder` as repository `repo_id`, checked (a head-only
    folder completed in a temporary folder, removed afterwards).

    Example:
        >>> folder = tempfile.mkdtemp()
        >>> from qcompress.model import build_model
        >>> build_model("minilm", head="linear", dim=16).save(folder)
        >>> with push_plan(folder, "your-name/bfec") as plan:
        ...     [path for path in plan.files if path.endswith(".safetensors")], "qcompress.json" in plan.files
        (['3_Dense/model.safetensors', 'encoder/model.safetensors', 'head.safetensors'], True)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such model folder", file=folder)
    if not is_hub_id(repo_id) or "/" not in repo_id:
        raise InputError("is not a Hub repository id ORG/NAME", file=repo_id)
    with tempfile.TemporaryDirectory(prefix="qcompress-push-") as staging:
        if _is_head_only(folder):
            complete_folder(folder, staging, name=repo_id)
            folder = Path(staging)
        yield _plan(folder, repo_id)


def _plan(folder: Path, repo_id: str) -> PushPlan:
    config = check_folder(folder)
    files: dict[str, Path | bytes] = dict(_folder_files(folder))
    described = (folder / CONFIG_NAME).is_file()
    if not described:  # saved by sentence-transformers: the config its modules imply
        files[CONFIG_NAME] = (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    card = folder / CARD
    if described and (not card.is_file() or CARD_MARKER in card.read_text(encoding="utf-8", errors="replace")):
        files[CARD] = model_card(config, repo_id).encode()
    return PushPlan(files, config)


def _network_error(err: BaseException) -> bool:
    return isinstance(err, (ConnectionError, TimeoutError)) or any(
        cls.__name__ in _NETWORK_ERRORS for cls in type(err).__mro__)


def _upload(api: HfApi, plan: PushPlan, repo_id: str, *, private: bool, revision: str | None,
            message: str | None) -> str:
    config = plan.config
    message = message or f"Upload a qcompress model ({config.head} head, {config.in_dim} -> {config.dim}, " \
                         f"{config.similarity})"
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = getattr(repo, "repo_id", None) or repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.create_commit(repo_id, plan.operations(), commit_message=message, revision=revision)
    return commit.commit_url


def push(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None, api: HfApi | None = None) -> str:
    """Upload the model folder `folder` to the Hub repository `repo_id` (created if missing; `private` when it
    creates it) on branch `revision` (created from main if missing; default main), as one commit; returns its URL.

    Offline, out of the Hub's reach, not logged in or refused by the Hub: a ConnectionError, PermissionError or
    InputError whose first line says which (nothing is uploaded in part: a commit is all or nothing).
    """
    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("cannot push: huggingface_hub is offline (HF_HUB_OFFLINE=1); unset it to publish")
    with push_plan(folder, repo_id) as plan:
        try:
            return _upload(api or HfApi(), plan, repo_id, private=private, revision=revision, message=message)
        except LocalTokenNotFoundError:
            raise PermissionError("not logged in to the Hugging Face Hub: run `hf auth login`, or set HF_TOKEN") \
                from None
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if status in (401, 403):
                raise PermissionError(f"the Hugging Face Hub refused the push ({reason}): check that your token "
                                      f"(hf auth login, HF_TOKEN) may write to {repo_id}") from None
            if status is not None and status >= 500:
                raise ConnectionError(f"the Hugging Face Hub failed ({reason}); try again later") from None
            raise InputError(f"the Hugging Face Hub refused the push ({reason})", file=repo_id) from None
        except Exception as err:
            if not _network_error(err):
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConnectionError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({reason}); qcompress "
                                  "push needs a network connection") from None
