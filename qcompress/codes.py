"""Low-bit angle codes: every qubit's angle stored in 1 to 8 bits as the index of one of its own levels, and exact
top-k by log-fidelity on the stored codes (SPEC §7).

A codec (`AngleCodes`) is `bits` (1..8) and, for each of the d qubits, 2^bits levels: float32 angles in [0, pi],
ascending. An angle is coded as the index of its qubit's nearest level (ties to the lower level); a row's d codes
are packed into ceil(d * bits / 8) bytes, least significant bit first (`qcompress.scalar_codes`, whose layout SPEC
§7 states). Fitted levels (`AngleCodes.fit`: per-qubit Lloyd-Max on a sample of the documents' angles) crowd where
a trained head's angles crowd; uniform ones (`AngleCodes.uniform`) waste most codes there (issue 26's probe,
Cranfield nDCG@10 at 4 bits: 0.3895 fitted, 0.3257 uniform).

Score (asymmetric, the default): float32 query angles against the documents' decoded levels,
    score(q, doc) = sum over qubits j of log cos^2((q_j - level_j[code_j]) / 2)     (`quantum.log_cos2_half`)
exactly as `qcompress.search.brute_force_topk(queries, codec.decode(codes), k)` computes it: `topk` returns that
oracle's result, scores bit for bit and ties to the lower index. `symmetric=True` codes and decodes the queries too.

`topk` (and `CodeIndex`, which builds the search once for a corpus searched several times) live in
`qcompress.search.codes`, which says how they are fast: faiss's product-quantizer scan as the look-up engine,
certified against its rounding. Within 2x of faiss `IndexPQ` over as many bytes (benchmarks/codes_search.py).

Which levels a corpus is coded with (`compress --bits`, `evaluate --bits`, `quantize`: one rule, `corpus_codec`):
the model's own codec when it has one of those bits (`train --bits`), else levels fitted on the corpus's first
FIT_ROWS rows, so that a streamed, resumable writer knows them after its first rows and every command that codes
the same corpus gets the same levels.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.scalar_codes import check_bits, decode, encode, fit_levels, pack, packed_bytes, unpack

__all__ = ["AngleCodes", "topk", "CodeIndex", "CODES_FILE", "BIT_ORDER", "FIT_ROWS", "check_angles",
           "model_codec", "stored_bits", "corpus_codec"]



def __getattr__(name: str):
    """`topk` and `CodeIndex`, re-exported from qcompress.search.codes on first use (PEP 562): the search package
    reads code files through qcompress.formats, which needs this module, so it cannot be imported here eagerly."""
    if name in ("topk", "CodeIndex"):
        from qcompress.search import codes as search_codes

        return getattr(search_codes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

CODES_FILE = "codes.safetensors"  # a codec's file name in a model folder
FORMAT = "qcompress-angle-codes"
FORMAT_VERSION = 1
BIT_ORDER = ("LSB first: the code of qubit j is bits j*b .. j*b+b-1 of the row's bit string, least significant bit "
             "first; bit i of the string is bit (i mod 8) of byte (i div 8), least significant first (numpy "
             "unpackbits(row, bitorder='little')); the unused high bits of the last byte are 0")
DECODING = "angle of qubit j = levels[j][code_j] (float32 radians)"
SCORE = "log-fidelity: sum over qubits j of log cos^2((query_j - angle_j) / 2)"
PI32 = float(torch.tensor(math.pi, dtype=torch.float32))  # pi rounded to float32: the largest angle stored
FIT_ROWS = 4096  # a corpus's levels are fitted on its first rows (module docstring): compress's first chunk


def _tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x.detach().cpu()


def _check_levels(levels, bits: int) -> Tensor:
    levels = _tensor(levels, "levels")
    count = 1 << bits
    if levels.dim() != 2 or levels.shape[0] == 0 or levels.shape[1] != count:
        raise ValueError(f"levels at {bits} bits must have shape (qubits, {count}), got {tuple(levels.shape)}")
    if not levels.is_floating_point():
        raise ValueError(f"levels must be float angles in radians, got dtype {levels.dtype}")
    levels = levels.to(torch.float32).contiguous()
    if not torch.isfinite(levels).all():
        raise ValueError("levels contain NaN or infinite values")
    outside = ((levels < 0) | (levels > PI32)).any(1).nonzero().flatten()
    if outside.numel():
        j = int(outside[0])
        raise ValueError(f"levels must lie within [0, pi]; qubit {j} has {levels[j].tolist()}")
    descending = (levels[:, 1:] < levels[:, :-1]).any(1).nonzero().flatten()
    if descending.numel():
        j = int(descending[0])
        raise ValueError(f"levels must be ascending in each qubit; qubit {j} has {levels[j].tolist()}")
    return levels


class AngleCodes:
    """A low-bit code for the angles of `dim` qubits: `bits` per qubit, `levels` (dim, 2^bits) per qubit.

    Example:
        >>> codec = AngleCodes.uniform(dim=3, bits=2)
        >>> codec.levels[0]
        tensor([0.3927, 1.1781, 1.9635, 2.7489])
        >>> codes = codec.encode(torch.tensor([[0.0, 1.2, 3.1], [2.0, 2.0, 2.0]]))
        >>> codes, codec.bytes_per_vector                 # codes 0, 1, 3 -> 0b11_01_00 (qubit 0 lowest)
        (tensor([[52],
                [42]], dtype=torch.uint8), 1)
        >>> codec.decode(codes)
        tensor([[0.3927, 1.1781, 2.7489],
                [1.9635, 1.9635, 1.9635]])
    """

    def __init__(self, levels: Tensor, bits: int) -> None:
        self.bits = check_bits(bits)
        self.levels = _check_levels(levels, self.bits)

    @property
    def dim(self) -> int:
        """Number of qubits."""
        return self.levels.shape[0]

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of one packed row: ceil(dim * bits / 8)."""
        return packed_bytes(self.dim, self.bits)

    def __repr__(self) -> str:
        return f"AngleCodes(dim={self.dim}, bits={self.bits}, bytes_per_vector={self.bytes_per_vector})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AngleCodes) and self.bits == other.bits and torch.equal(self.levels, other.levels)

    @classmethod
    def fit(cls, angles: Tensor, bits: int, *, seed: int = 0) -> AngleCodes:
        """Per-qubit Lloyd-Max levels of `angles` (N, d) (`scalar_codes.fit_levels`: a seeded sample of at most
        2^18 rows), clipped to [0, pi]. Degenerate data (all angles equal, fewer distinct angles than levels)
        gives repeated levels, which code and decode like one.

        Example:
            >>> angles = torch.tensor([[0.5, 1.0], [0.6, 1.0], [2.0, 1.0], [2.2, 1.0]])
            >>> AngleCodes.fit(angles, bits=1).levels
            tensor([[0.5500, 2.1000],
                    [1.0000, 1.0000]])
        """
        bits = check_bits(bits)
        angles = check_angles(angles, "angles")
        if angles.shape[0] == 0 or angles.shape[1] == 0:
            raise ValueError(f"levels are fitted on at least one row of at least one qubit, got shape "
                             f"{tuple(angles.shape)}")
        return cls(fit_levels(angles, bits, seed=seed).clamp_(0.0, PI32), bits)

    @classmethod
    def uniform(cls, dim: int, bits: int) -> AngleCodes:
        """Levels at the centres of 2^bits equal cells of [0, pi], the same for every qubit."""
        bits = check_bits(bits)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (qubits), got {dim!r}")
        count = 1 << bits
        row = ((torch.arange(count, dtype=torch.float64) + 0.5) * (math.pi / count)).to(torch.float32)
        return cls(row.expand(dim, count).contiguous(), bits)

    def encode(self, angles: Tensor) -> Tensor:
        """Angles (N, dim) -> packed codes (N, bytes_per_vector) uint8: each angle's nearest level (ties: the lower)."""
        angles = check_angles(angles, "angles", self.dim)
        return pack(encode(angles, self.levels), self.bits)

    def decode(self, codes: Tensor) -> Tensor:
        """Packed codes (N, bytes_per_vector) uint8 -> angles (N, dim) float32, the levels the codes name."""
        codes = self.check_codes(codes)
        return decode(unpack(codes, self.bits, self.dim), self.levels)

    def check_codes(self, codes: Tensor, name: str = "codes") -> Tensor:
        """`codes` as a contiguous uint8 tensor (N, bytes_per_vector); ValueError (one line) if it cannot be this
        codec's: another dtype, dimension or width, or a 1 in the unused high bits of the last byte."""
        codes = _tensor(codes, name)
        width = self.bytes_per_vector
        if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] != width:
            raise ValueError(f"{name} of {self.dim} qubits at {self.bits} bits are uint8 rows of {width} bytes, got "
                             f"{codes.dtype} of shape {tuple(codes.shape)}")
        bad = self.corrupt_row(codes)
        if bad is not None:
            raise ValueError(f"{name} row {bad} sets unused bits of its last byte: not packed codes of {self.dim} "
                             f"qubits at {self.bits} bits")
        return codes.contiguous()

    def corrupt_row(self, codes: Tensor) -> int | None:
        """The first row of packed `codes` (N, bytes_per_vector) uint8 that sets an unused high bit of its last
        byte (no packed row does: SPEC §7), or None."""
        used = self.dim * self.bits - 8 * (self.bytes_per_vector - 1)  # bits used in the last byte
        if used == 8 or codes.shape[0] == 0:
            return None
        bad = (codes[:, -1] >> used).nonzero().flatten()
        return int(bad[0]) if bad.numel() else None

    # -- storage ----------------------------------------------------------------------------------------------------

    def to_metadata(self) -> dict:
        """A JSON-serialisable description that decodes the codes without qcompress (for Parquet key-value metadata).

        Example:
            >>> meta = AngleCodes.uniform(dim=2, bits=1).to_metadata()
            >>> meta["bits"], meta["bytes_per_vector"], meta["levels"]
            (1, 1, [[0.7853981852531433, 2.356194496154785], [0.7853981852531433, 2.356194496154785]])
            >>> AngleCodes.from_metadata(meta) == AngleCodes.uniform(dim=2, bits=1)
            True
        """
        return {"format": FORMAT, "version": FORMAT_VERSION, "bits": self.bits, "dim": self.dim,
                "bytes_per_vector": self.bytes_per_vector, "bit_order": BIT_ORDER, "decoding": DECODING,
                "score": SCORE, "levels": self.levels.tolist()}

    @classmethod
    def from_metadata(cls, meta: dict) -> AngleCodes:
        """The codec that `to_metadata` described; InputError (naming the field) if the description is not one."""
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise InputError(f"not a description of {FORMAT} codes (format {found!r})", field="format")
        if meta.get("version") != FORMAT_VERSION:
            raise InputError(f"{FORMAT} version {meta.get('version')!r} is not supported (this qcompress reads "
                             f"{FORMAT_VERSION})", field="version")
        try:
            codec = cls(torch.tensor(meta.get("levels"), dtype=torch.float32), meta.get("bits"))
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"not a codec ({err})", field="levels") from None
        if meta.get("dim") != codec.dim:
            raise InputError(f"dim {meta.get('dim')!r} does not match the {codec.dim} rows of levels", field="dim")
        return codec

    def save(self, path: str | os.PathLike) -> None:
        """Write the codec as safetensors (tensor `levels`; bits and the format in its metadata), atomically."""
        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "bits": str(self.bits), "bit_order": BIT_ORDER,
                "decoding": DECODING, "score": SCORE}
        with atomic_file(path) as tmp:
            save_file({"levels": self.levels}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AngleCodes:
        """Read a codec written by `save`; InputError naming the file if it is not one.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / CODES_FILE
            >>> AngleCodes.uniform(dim=4, bits=3).save(path)
            >>> AngleCodes.load(path)
            AngleCodes(dim=4, bits=3, bytes_per_vector=2)
        """
        try:
            with safe_open(str(path), framework="pt") as file:
                meta = file.metadata() or {}
                if meta.get("format") != FORMAT or "levels" not in file.keys():
                    raise InputError(f"not a {FORMAT} file (metadata {meta!r})", file=path)
                if meta.get("version") != str(FORMAT_VERSION):
                    raise InputError(f"{FORMAT} version {meta.get('version')!r} is not supported", file=path)
                levels = file.get_tensor("levels")
            return cls(levels, int(meta.get("bits", "")))
        except (SafetensorError, OSError) as err:
            raise InputError(f"not a readable safetensors file ({err})", file=path) from None
        except ValueError as err:  # InputError is one: passed on as it is
            if isinstance(err, InputError):
                raise
            raise InputError(f"not a valid codec ({err})", file=path) from None


def check_angles(angles, name: str, dim: int | None = None) -> Tensor:
    """Angles as a contiguous float32 tensor (rows, dim), finite; ValueError naming `name` otherwise."""
    angles = _tensor(angles, name)
    if angles.dim() != 2:
        raise ValueError(f"{name} must be 2-d (rows, qubits), got shape {tuple(angles.shape)}")
    if not angles.is_floating_point():
        raise ValueError(f"{name} must be float angles in radians, got dtype {angles.dtype}")
    if dim is not None and angles.shape[1] != dim:
        raise ValueError(f"{name} have {angles.shape[1]} qubits but the codec has {dim}")
    angles = angles.to(torch.float32).contiguous()
    if angles.numel() and not torch.isfinite(angles).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return angles


# -- which levels a corpus is coded with -------------------------------------------------------------------------


def model_codec(model) -> AngleCodes | None:
    """A model's own codec (`QCompressModel.codec`, from `train --bits`), or None when it was trained without."""
    return getattr(model, "codec", None)


def stored_bits(model, bits: int | None, role: str | None = "document") -> int:
    """Bits per qubit of what a model's documents are stored as: `bits` when given (0: float32, no codes), else
    the model's default, its codec's bits (0 without one); queries (`role` "query") default to float32, since a
    code file is searched with float32 query angles against its levels (asymmetric, SPEC §7). InputError for
    codes of a model that outputs vectors.

    Example:
        >>> class Cosine:  # a stand-in: a model that compares vectors by cosine, without a codec
        ...     output_kind = "vectors"
        >>> stored_bits(Cosine(), None), stored_bits(Cosine(), 0)
        (0, 0)
    """
    if bits is None:
        if role == "query":
            return 0
        codec = model_codec(model)
        return codec.bits if codec is not None else 0
    if bits == 0:
        return 0
    check_bits(bits)
    if model.output_kind != "angles":
        raise InputError(f"{bits}-bit codes store qubit angles; this model outputs cosine vectors (float32 only)")
    return bits


def corpus_codec(bits: int, first_rows: Tensor, codec: AngleCodes | None = None) -> tuple[AngleCodes, str]:
    """The codec a corpus is coded with at `bits` per qubit, and where its levels come from (for the file's
    metadata): `codec` (the model's) when it has those bits, else levels fitted (`AngleCodes.fit`, seed 0) on the
    corpus's first FIT_ROWS rows (`first_rows`: the corpus's angles from its first row, at least FIT_ROWS of them
    or all; uniform levels for an empty corpus).

    Example:
        >>> fitted, source = corpus_codec(1, torch.tensor([[0.5], [0.6], [2.0]]))
        >>> fitted.levels, source
        (tensor([[0.5500, 2.0000]]), 'fitted per qubit (Lloyd-Max, seed 0) on the first 3 rows of the corpus')
        >>> corpus_codec(1, torch.zeros(0, 1), AngleCodes.uniform(1, 1))[1]
        "the model's codec (codes.safetensors)"
    """
    bits = check_bits(bits)
    if codec is not None and codec.bits == bits:
        return codec, "the model's codec (codes.safetensors)"
    rows = first_rows[:FIT_ROWS]
    if rows.shape[0] == 0:
        return AngleCodes.uniform(rows.shape[1], bits), "uniform on [0, pi] (the corpus is empty)"
    source = f"fitted per qubit (Lloyd-Max, seed 0) on the first {rows.shape[0]} rows of the corpus"
    return AngleCodes.fit(rows, bits), source
