"""Pooled encoder outputs cached on disk, so that repeated work never re-runs the encoder on a text.

What is cached is the pooled encoder output (before any head), keyed by the encoder itself and the text:
    CACHE/<encoder key>/shard-<random>.safetensors    tensors "keys" (n, 16) uint8, "pooled" (n, in_dim) float32
                                                      and "checks" (n,) int64: each entry's CRC-32
The shards are memory-mapped by the safetensors library, never loaded whole: an index of the keys (sorted runs of
their first 8 bytes, `qcompress.sorted_runs`, plus the 16-byte keys for an exact check: 32 bytes per entry) finds a
text's shard and row, and only the rows asked for are read (in runs, through gaps of up to RUN_GAP rows). Each row
read is checked against its entry's CRC-32 (of its key and its pooled row's bytes): an altered or damaged entry is
refused in one line naming its shard, never used. A shard
without checksums (written by qcompress before they existed) is not read: its texts are encoded again.
The encoder key is a hash of the encoder's weights (so a fine-tuned encoder never reuses the outputs of its
base), its tokenizer, the max length, the pooling mode and the backend (qcompress.backends, whose exported
encoders are kept beside, in CACHE/exported/); a text's key is a hash of its UTF-8 bytes as the
encoder sees them, with the model's query or document prompt before it (`pool_texts(..., role=)`). Heads, and the
normalisation before them, are
cheap and are applied afterwards, so every model on the same encoder (BT/QBT, BFEC/QBFEC of SPEC §4, any
similarity) shares one cache entry per text. Each call that computes new outputs adds one shard holding them,
written atomically under a unique name: readers never see half a shard and concurrent runs do not clash. Delete
the folder to clear it. Formats: safetensors only (never pickle).

`pool_texts` is the text -> pooled-output step of every path (compress, evaluate, training, negative mining):
hits come from the cache, misses go through the encoder in longest-first batches (qcompress.batching).
The cache folder is `resolve_cache_dir`'s: an explicit folder, else $QCOMPRESS_CACHE, else the user's cache folder.

Example:
    >>> import tempfile
    >>> from qcompress.model import build_model
    >>> model = build_model("minilm", similarity="fidelity")
    >>> cache = PooledCache(tempfile.mkdtemp(), model)
    >>> first = encode(model, ["what is a wing?"], cache=cache)    # runs the encoder, keeps the pooled output
    >>> len(cache), torch.equal(encode(model, ["what is a wing?"], cache=cache), first)   # no encoder work now
    (1, True)
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from qcompress.atomic import atomic_file
from qcompress.batching import DEFAULT_BATCH_SIZE, eval_mode, map_batches
from qcompress.errors import InputError
from qcompress.sorted_runs import SortedRuns

__all__ = ["CACHE_ENV", "PooledCache", "resolve_cache_dir", "pool_texts", "encode", "project_pooled", "weights_digest",
           "encoder_key", "text_key", "entry_checks"]

CACHE_ENV = "QCOMPRESS_CACHE"
KEY_BYTES = 16
PROJECT_CHUNK = 4096  # rows per head call when projecting cached outputs (bounds the head's temporaries)
OPEN_SHARDS = 64  # shards kept open at once (each holds a file descriptor and a map)
RUN_GAP = 16  # rows: a read of a shard goes through gaps up to this long (module docstring)


def resolve_cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: `folder`, else $QCOMPRESS_CACHE, else $XDG_CACHE_HOME/qcompress (~/.cache/qcompress).

    Example:
        >>> str(resolve_cache_dir("/tmp/qc"))
        '/tmp/qc'
    """
    value = str(folder).strip() if folder is not None else os.environ.get(CACHE_ENV, "").strip()
    if value:
        return _checked_folder(Path(value).expanduser(), "as given" if folder is not None else "from $" + CACHE_ENV)
    default = Path(os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache").expanduser() / "qcompress"
    return _checked_folder(default, "the default cache folder")


def _checked_folder(path: Path, named_by: str) -> Path:
    """`path`, unless it (or the nearest part of it that exists) is a file: an `InputError` naming it."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "the cache folder is a file" if existing == path else f"a part of the cache folder's path ({existing}) " \
            "is a file"
        raise InputError(f"{what}, not a folder ({named_by}); give a folder path", file=path)
    return path


def weights_digest(module: nn.Module, *extra: object, skip: Callable[[str], bool] | None = None) -> str:
    """A hex digest of a module's weights (names, dtypes, shapes and bytes) and of `extra` values; `skip(name)`
    leaves state-dict entries out (qcompress.frozen_prefix digests an encoder without its trained layers).

    Hashing the tensors themselves, not a name or a path, means that two models share a digest only when they
    compute the same function. blake2b runs at about 1 GB/s: 0.1 s for MiniLM, 0.5 s for bert-base.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> weights_digest(a) == weights_digest(a), weights_digest(a) == weights_digest(b)
        (True, False)
    """
    h = hashlib.blake2b(digest_size=16)
    for value in extra:
        h.update(repr(value).encode() + b"\0")
    for name, tensor in module.state_dict().items():
        if skip is not None and skip(name):
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def text_key(text: str) -> bytes:
    """The 16-byte key of one text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


def encoder_key(model) -> str:
    """Everything but the text that decides the pooled output of a QCompressModel: encoder weights, tokenizer, max
    length, pooling mode, and the backend that runs the encoder when it is not torch (int8 outputs differ:
    qcompress.backends), with the version of the way its export was made. (Prompts are part of the texts the cache
    keys.)"""
    tok = model.tokenizer
    backend = getattr(model, "backend_variant", "torch")
    version = getattr(getattr(model, "runtime", None), "export_version", None)
    return weights_digest(
        model.encoder,
        type(tok).__name__,
        len(tok),
        getattr(tok, "do_lower_case", None),
        model.max_length,
        model.config.pooling,
        *(() if backend == "torch" else (backend,)),  # torch: the key of earlier versions (their shards stay valid)
        *(() if version is None else (f"export version {version}",)),
    )


class _StoredTensor:
    """One tensor of a safetensors shard, read by the safetensors library only where asked (it maps the file):
    `shape`, and rows by an ascending index array, read in file order as runs of nearby rows (a gap of up to
    RUN_GAP rows is read through rather than starting another read)."""

    def __init__(self, path: Path, name: str) -> None:
        from safetensors import SafetensorError, safe_open

        try:
            self._slice = safe_open(str(path), framework="numpy").get_slice(name)
            self.shape = tuple(self._slice.get_shape())
        except (OSError, SafetensorError) as err:
            raise _damaged(path, str(err)) from None

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return self._slice[0:0]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(rows) > RUN_GAP) + 1, [len(rows)]])
        parts = []
        for begin, end in zip(starts[:-1].tolist(), starts[1:].tolist()):
            first = int(rows[begin])
            parts.append(self._slice[first:int(rows[end - 1]) + 1][rows[begin:end] - first])
        return np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self._slice[:]
        return whole if dtype is None else whole.astype(dtype)


def _damaged(shard: Path, why: str) -> InputError:
    return InputError(f"{shard}: damaged cache shard ({why}); delete it (the cache only saves time)")


def _has_checks(path: Path) -> bool:
    """Whether a shard carries its entries' checksums (shards of an older qcompress do not)."""
    try:
        _StoredTensor(path, "checks")
    except InputError:
        return False
    return True


def entry_checks(keys: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """The CRC-32 of each entry: its 16-byte key, then its pooled row's float32 bytes, as int64 (n,).

    Example:
        >>> keys, rows = np.zeros((2, 16), np.uint8), np.array([[1.0, 2.0], [1.0, 2.5]], np.float32)
        >>> checks = entry_checks(keys, rows); bool(checks[0] != checks[1])
        True
    """
    keys, pooled = np.ascontiguousarray(keys), np.ascontiguousarray(pooled, dtype=np.float32)
    return np.array([zlib.crc32(row, zlib.crc32(key)) for key, row in zip(keys, pooled)], dtype=np.int64)


class PooledCache:
    """The cache folder of one model's encoder: look pooled outputs up by text, add new ones as a shard.

    Shards are indexed when first needed (their keys only) and memory-mapped; `get` reads just the rows found.
    """

    def __init__(self, folder: str | os.PathLike, model) -> None:
        self.root = _checked_folder(Path(folder).expanduser(), "the cache folder")
        self.folder = self.root / encoder_key(model)
        self.width = model.in_dim
        self._index: SortedRuns | None = None  # first 8 key bytes -> location (shard << 32 | row)
        self._shards: list[Path] = []
        self._keys: list[np.ndarray] = []  # (rows, 16) uint8 per shard, for the exact check
        self._open: OrderedDict[int, tuple[_StoredTensor, _StoredTensor]] = OrderedDict()

    def _load(self) -> SortedRuns:
        if self._index is None:
            self._index = SortedRuns()
            if self.folder.is_dir():
                for shard in sorted(self.folder.glob("shard-*.safetensors")):
                    self._register(shard)
        return self._index

    def _register(self, shard: Path) -> None:
        keys = np.array(_StoredTensor(shard, "keys"))
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
            raise _damaged(shard, f"keys of shape {keys.shape}")
        if not _has_checks(shard):
            return  # an older qcompress's shard: its entries cannot be checked, so they are encoded again
        number = len(self._shards)
        self._shards.append(shard)
        self._keys.append(keys)
        locations = (number << 32) + np.arange(len(keys), dtype=np.int64)
        self._index.add(_prefixes(keys), locations)

    def __len__(self) -> int:
        """Entries stored (a text added by two concurrent runs counts twice)."""
        return len(self._load())

    def _pooled(self, shard: int) -> tuple[_StoredTensor, _StoredTensor]:
        """A shard's pooled rows and their entries' checksums, read where asked."""
        if shard not in self._open:
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)
            path = self._shards[shard]
            pooled, checks = _StoredTensor(path, "pooled"), _StoredTensor(path, "checks")
            if pooled.shape != (len(self._keys[shard]), self.width) or checks.shape != (len(self._keys[shard]),):
                raise _damaged(path, f"{len(self._keys[shard])} keys, pooled rows of shape {pooled.shape} and "
                                     f"{checks.shape[0]} checksums")
            self._open[shard] = (pooled, checks)
        self._open.move_to_end(shard)
        return self._open[shard]

    def _read(self, shard: int, rows: np.ndarray) -> np.ndarray:
        """Rows of a shard (in file order), each checked against its entry's checksum."""
        pooled, checks = self._pooled(shard)
        values = np.asarray(pooled[rows])
        bad = np.flatnonzero(entry_checks(self._keys[shard][rows], values) != checks[rows])
        if bad.size:
            raise _damaged(self._shards[shard], f"the entry in row {int(rows[bad[0]]) + 1} does not match its checksum")
        return values

    def get(self, keys: Sequence[bytes]) -> tuple[Tensor, Tensor]:
        """(pooled (len(keys), in_dim) float32, zeros where missing; found (len(keys),) bool)."""
        index = self._load()
        wanted = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        query, locations = index.matches(_prefixes(wanted))
        out = np.zeros((len(keys), self.width), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        shards, rows = locations >> 32, locations & 0xFFFFFFFF
        for shard in np.unique(shards).tolist():
            mine = np.flatnonzero(shards == shard)
            q, r = query[mine], rows[mine]
            exact = (self._keys[shard][r] == wanted[q]).all(axis=1)  # the same 16 bytes, not just the first 8
            q, r = q[exact & ~found[q]], r[exact & ~found[q]]
            if q.size:
                order = np.argsort(r)  # memory-map reads in file order
                out[q[order]] = self._read(shard, r[order])
                found[q] = True
        return torch.from_numpy(out), torch.from_numpy(found)

    def add(self, keys: Sequence[bytes], pooled: Tensor) -> None:
        """Store new (key, pooled row) entries as one shard."""
        if not keys:
            return
        self._load()
        self.folder.mkdir(parents=True, exist_ok=True)
        key_rows = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), KEY_BYTES)
        rows = pooled.detach().to("cpu", torch.float32).contiguous()
        tensors = {"keys": key_rows, "pooled": rows,
                   "checks": torch.from_numpy(entry_checks(key_rows.numpy(), rows.numpy()))}
        shard = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        with atomic_file(shard) as tmp:
            save_file(tensors, str(tmp))
        self._register(shard)


def _prefixes(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each 16-byte key, as int64 (the hash the index sorts by)."""
    return np.ascontiguousarray(keys[:, :8]).view(np.int64).reshape(-1)


def pool_texts(
    model,
    texts: Sequence[str],
    *,
    cache: PooledCache | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
    pool_batch: Callable[[list[str]], Tensor] | None = None,
    role: str | None = None,
) -> Tensor:
    """Pooled encoder outputs (len(texts), in_dim), float32 on the CPU, in input order, in eval mode.

    `role` ("query" or "document") puts the model's prompt for it before each text. With a `cache`, only the
    texts it lacks run through the encoder (each distinct text once) and their outputs are added to it.
    `pool_batch` replaces `model.pool` as the function of one batch (the frozen-prefix replay); `on_batch(n)`
    reports progress in texts.
    """
    pool_batch = pool_batch or model.pool
    texts = model.prompted(texts, role) if role is not None else texts
    with eval_mode(model):
        if cache is None:
            return map_batches(pool_batch, texts, batch_size, width=model.in_dim, on_batch=on_batch)
        keys = [text_key(t) for t in texts]
        pooled, found = cache.get(keys)
        missing: dict[bytes, int] = {}  # key -> index of its first text (repeated texts are encoded once)
        for i in (~found).nonzero().flatten().tolist():
            missing.setdefault(keys[i], i)
        hits = int(found.sum())
        if on_batch is not None and hits:
            on_batch(hits)
        if missing:
            repeats = len(texts) - hits - len(missing)  # repeated misses: reported once their first copy is done
            new = map_batches(pool_batch, [texts[i] for i in missing.values()], batch_size, width=model.in_dim,
                              on_batch=on_batch)
            cache.add(list(missing), new)
            if on_batch is not None and repeats:
                on_batch(repeats)
            pooled, found = cache.get(keys)  # read back: every row comes from the cache's float32, as on a hit
    return pooled


def encode(
    model,
    texts: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache: PooledCache | None = None,
    on_batch: Callable[[int], None] | None = None,
    role: str | None = None,
) -> Tensor:
    """`model.encode(texts, role=role, convert_to_tensor=True)`, with the encoder run only on texts the cache does
    not hold (None: no cache).

    Returns float32 (len(texts), dim) on the CPU, in input order; `on_batch(n)` reports progress in texts.
    """
    if cache is None:
        return model.encode(texts, role=role, batch_size=batch_size, on_batch=on_batch, convert_to_tensor=True)
    return project_pooled(model, pool_texts(model, texts, cache=cache, batch_size=batch_size, on_batch=on_batch,
                                            role=role))


def project_pooled(model, outputs: Tensor) -> Tensor:
    """The model's head over pooled encoder outputs (n, in_dim) -> float32 (n, dim) on the CPU, in eval mode,
    PROJECT_CHUNK rows at a time."""
    device = model.device
    with eval_mode(model), torch.no_grad():
        parts = [model.project(outputs[s : s + PROJECT_CHUNK].to(device)).float().cpu()
                 for s in range(0, len(outputs), PROJECT_CHUNK)]
    return torch.cat(parts) if parts else torch.empty(0, model.dim)
