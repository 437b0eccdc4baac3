"""Models and encoders on the Hugging Face Hub: telling a Hub id from a path, and fetching a snapshot.

Every Hub download goes through huggingface_hub's `snapshot_download`, so its cache, `HF_HUB_OFFLINE=1` and
`HF_TOKEN` work as they do for every Hugging Face tool: offline, a model is found in the local cache
(`models--ORG--NAME/snapshots/COMMIT/`, with `refs/main` naming the commit of the main branch). A snapshot's
folder name is its commit, which is how a model folder records exactly which encoder revision it was made from.
Only safetensors weights and the small configuration files are fetched: never pickled weights.

Example:
    >>> is_hub_id("sentence-transformers/all-MiniLM-L6-v2"), is_hub_id("../models/x"), is_hub_id("/etc")
    (True, False, False)
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)

from qcompress.errors import InputError

__all__ = ["is_hub_id", "download", "snapshot_identity", "DOWNLOAD_PATTERNS"]

# What a model or encoder needs: configs, tokenizers, safetensors weights, model cards. Pickles are never fetched.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.md", "*.tiktoken", "merges.txt"]
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hub model id (`name` or `org/name`; no path parts such as `..`)."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def download(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a Hub model at `revision` (a branch, tag or commit; None: main), downloaded into the
    Hugging Face cache if it is not there yet. Errors are one `InputError` naming the id."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except GatedRepoError:
        raise InputError("the Hub model is gated: accept its terms on its page and log in (hf auth login)",
                         file=repo_id) from None
    except (RepositoryNotFoundError, HFValidationError):
        raise InputError("no such model on the Hugging Face Hub (and not a local folder)", file=repo_id) from None
    except RevisionNotFoundError:
        raise InputError(f"the Hub model has no revision {revision!r}", file=repo_id) from None
    except LocalEntryNotFoundError:
        at = f" at revision {revision!r}" if revision else ""
        raise InputError(f"no such folder, and the Hub model{at} is not in the Hugging Face cache, which is all "
                         "that can be used offline (HF_HUB_OFFLINE=1, or no connection)", file=repo_id) from None


def snapshot_identity(folder: str | Path) -> tuple[str, str] | None:
    """(Hub id, commit) of a folder inside the Hugging Face cache (`models--ORG--NAME/snapshots/COMMIT`), else None.

    Example:
        >>> snapshot_identity("/cache/models--org--name/snapshots/" + "a" * 40)
        ('org/name', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')
        >>> snapshot_identity("/tmp/encoder") is None
        True
    """
    parts = Path(folder).parts
    if len(parts) < 3 or parts[-2] != "snapshots" or not _COMMIT.match(parts[-1]):
        return None
    repo = parts[-3]
    if not repo.startswith("models--"):
        return None
    return repo[len("models--"):].replace("--", "/"), parts[-1]
