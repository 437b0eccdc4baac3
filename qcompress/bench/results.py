"""Finished bench runs on disk: one JSON per (method, setting, seed), written atomically, skipped when rerun.

With `--out DIR`, each run's result (per-query recall@10 / @100 and NDCG@10, bytes, times, provenance) is written
as DIR/results/<method setting>[-seed<S>].json the moment it finishes, through `qcompress.atomic` (a temporary name,
renamed when complete): Ctrl-C loses at most the run in progress. A rerun finds the file and skips the run when its
`key` matches: a digest of everything the numbers depend on (the encoder's weights and settings, the fit and
evaluated documents, the queries and judgements, the method, its setting, its seed and options). Change any of
them and the run is done again, its file replaced.

Example:
    >>> import tempfile
    >>> store = ResultStore(Path(tempfile.mkdtemp()))
    >>> store.get("pca-scalar dims=128 bits=2", None, "k1") is None
    True
    >>> _ = store.put("pca-scalar dims=128 bits=2", None, {"key": "k1", "bytes_stored": 32.0})
    >>> store.get("pca-scalar dims=128 bits=2", None, "k1")["bytes_stored"], store.get("pca-scalar dims=128 bits=2", None, "k2")
    (32.0, None)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from qcompress.atomic import atomic_file

__all__ = ["ResultStore", "digest", "provenance"]


def digest(value: Any) -> str:
    """A short hex digest of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def provenance() -> dict:
    """The qcompress version and git commit (qcompress.recipes.runner.git_state) a result was computed with."""
    from qcompress._version import __version__
    from qcompress.recipes.runner import git_state

    commit, dirty = git_state()
    return {"qcompress_version": __version__, "git_commit": commit, "git_dirty": dirty}


def _file_name(label: str, seed: int | None) -> str:
    name = re.sub(r"[^A-Za-z0-9.=+-]+", "_", label).strip("_")
    return f"{name}-seed{seed}.json" if seed is not None else f"{name}.json"


class ResultStore:
    """The results folder of a bench (None: nothing is kept on disk)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) / "results" if folder is not None else None

    def path(self, label: str, seed: int | None) -> Path | None:
        return self.folder / _file_name(label, seed) if self.folder is not None else None

    def get(self, label: str, seed: int | None, key: str) -> dict | None:
        """The stored result of this run when it was computed with the same key."""
        path = self.path(label, seed)
        if path is None or not path.is_file():
            return None
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged file is run again (and replaced)
        return result if isinstance(result, dict) and result.get("key") == key else None

    def put(self, label: str, seed: int | None, result: dict) -> Path | None:
        path = self.path(label, seed)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(result) + "\n")
        return path
