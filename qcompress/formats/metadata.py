"""The key-value metadata of an embedding file (SPEC §6): one readable key per field, and the checks on it.

A file names what made it and how to read it in Parquet key-value metadata, one key per field, `qcompress.FIELD`,
each value JSON (so `16`, `"fidelity"`, `{...}`), readable with any Parquet tool (DuckDB's
`parquet_kv_metadata`, pyarrow's `schema.metadata`):

    qcompress.encoder, .head, .dim, .similarity, .pooling, ...   the model (`MODEL_FIELDS` decide comparability)
    qcompress.model_id      a digest of the weights and settings: the model's identity, compared where both have one
    qcompress.model_ref     how to load the model again, where there is a way: {"hub_id", "revision"} or {"folder"}
                            (or {"encoder", "revision"} for an encoder used without a head)
    qcompress.column, .encoding   which column holds the values, and how (float32, uint8, codes)
    qcompress.decoding      how a stored value becomes an angle (or a vector), in words
    qcompress.scale         uint8 only: the angle of code c is c * scale (pi / 255)
    qcompress.codes         low-bit codes only: the codec, with its levels (SPEC §7)
    qcompress.score         the score `qcompress score` ranks by, as a formula
    qcompress.role, .prompt, .qcompress_version

Files written before this layout hold the same fields as one JSON object under the single key `qcompress`; they
read the same (`read_metadata`). Inside qcompress the metadata is that flat dict; `to_key_values` and
`read_metadata` convert. `describe_values` fills the descriptive fields (decoding, scale, score) from the encoding
and column, so that they always agree with them.

Example:
    >>> meta = {"similarity": "fidelity", "dim": 2, "column": "angles", "encoding": "uint8"}
    >>> kv = to_key_values(dict(meta, **describe_values(meta)))
    >>> kv[b"qcompress.dim"], kv[b"qcompress.scale"]
    (b'2', b'0.012319971190548208')
    >>> read_metadata(kv) == dict(meta, **describe_values(meta))
    True
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

from qcompress.codes import AngleCodes
from qcompress.errors import InputError, json_loads
from qcompress.formats.lines import PathLike

__all__ = ["METADATA_KEY", "PREFIX", "MODEL_FIELDS", "DESCRIPTIVE_FIELDS", "CODES", "describe_values",
           "to_key_values", "read_metadata", "has_metadata", "metadata_differences", "check_same_model", "codec_of"]

METADATA_KEY = b"qcompress"  # the one key of files written before the split layout: a JSON object
PREFIX = "qcompress."  # every key of the split layout starts so
CODES = "codes"  # the encoding, and the column, of low-bit angle codes (SPEC §7)
# The fields that identify the model that produced a file; two files are comparable only if these agree.
MODEL_FIELDS = ("encoder", "head", "dim", "similarity")
# Fields that describe, and never decide: derived from others (decoding, scale, score), or how to find the model
# again (model_ref, which may differ for one model in two folders), or who wrote the file.
DESCRIPTIVE_FIELDS = ("decoding", "scale", "score", "model_ref", "qcompress_version")

_LOG_FIDELITY = ("log-fidelity(q, d) = sum over qubits i of log(cos^2((q_i - d_i) / 2)), angles in radians; <= 0, "
                 "higher is closer")
_COSINE = "cosine(q, d) = sum_i q_i d_i / (|q| |d|); higher is closer"


def describe_values(meta: Mapping[str, Any]) -> dict:
    """The descriptive fields of a file's values (decoding, scale for uint8, score), from its `column` and
    `encoding`: what a reader without qcompress needs besides the codec of low-bit codes.

    Example:
        >>> describe_values({"column": "vectors", "encoding": "float32"})["score"]
        'cosine(q, d) = sum_i q_i d_i / (|q| |d|); higher is closer'
    """
    column, encoding = meta.get("column"), meta.get("encoding")
    if column == "vectors":
        return {"decoding": "vector = the stored float32 values", "score": _COSINE}
    described = {"score": _LOG_FIDELITY}
    if encoding == "uint8":
        described.update(decoding="angle = code * scale (scale = pi / 255): 8-bit codes round(angle / scale)",
                         scale=math.pi / 255)
    elif encoding == CODES:
        described["decoding"] = ("angle of qubit i = codes.levels[i][code_i], the codes packed as codes.bit_order "
                                 "says")
    else:
        described["decoding"] = "angle = the stored float32 value, radians in [0, pi]"
    return described


def to_key_values(meta: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Parquet key-value metadata of `meta`: `qcompress.FIELD` -> the field's value as JSON."""
    return {(PREFIX + key).encode(): json.dumps(value, sort_keys=True).encode() for key, value in sorted(meta.items())}


def has_metadata(key_values: Mapping[bytes, bytes] | None) -> bool:
    """Whether a Parquet schema's key-value metadata holds qcompress metadata (either layout)."""
    return any(key == METADATA_KEY or key.startswith(PREFIX.encode()) for key in (key_values or {}))


def read_metadata(key_values: Mapping[bytes, bytes] | None, file: PathLike | None = None) -> dict:
    """The flat metadata dict of a file's key-value metadata: the split keys, else the older single JSON object.
    `InputError` naming the file (and field) when there is none or it is not JSON."""
    key_values = key_values or {}
    split = {key.decode()[len(PREFIX):]: value for key, value in key_values.items() if key.startswith(PREFIX.encode())}
    if split:
        meta = {}
        for field, raw in split.items():
            try:
                meta[field] = json_loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise InputError("qcompress metadata is not valid JSON; rewrite the file with `qcompress compress`",
                                 file=file, field=field) from None
        return meta
    raw = key_values.get(METADATA_KEY)
    if raw is None:
        raise InputError(
            "has no qcompress metadata, so the model that made it is unknown: compress the texts with qcompress; a "
            "copy rewritten by pandas, polars or DuckDB loses it (`qcompress meta copy ORIGINAL.parquet THIS.parquet` "
            "puts it back)", file=file)
    try:
        meta = json_loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("qcompress metadata is not valid JSON; rewrite the file with `qcompress compress`",
                         file=file) from None
    if not isinstance(meta, dict):
        raise InputError("qcompress metadata is not a JSON object; rewrite the file with `qcompress compress`",
                         file=file)
    return meta


def codec_of(meta: Mapping[str, Any], file: PathLike | None = None) -> AngleCodes | None:
    """The codec that decodes a code file's values (its metadata's `codes` object), None for other encodings;
    `InputError` naming the file and field when the description is not a codec."""
    if meta.get("encoding") != CODES:
        return None
    try:
        return AngleCodes.from_metadata(meta.get(CODES))
    except InputError as err:
        raise InputError(f"the codes described in the metadata are not a codec: {err.reason}", file=file,
                         field=f"{CODES}.{err.field}" if err.field else CODES) from None


def metadata_differences(a: Mapping, b: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    """`key a vs b` for each key whose values differ (all keys of either by default), for error messages."""
    keys = sorted(set(a) | set(b)) if keys is None else list(keys)
    return [f'{k} {json.dumps(a.get(k))} vs {json.dumps(b.get(k))}' for k in keys if a.get(k) != b.get(k)]


def check_same_model(
    meta_a: Mapping[str, Any], meta_b: Mapping[str, Any], *, what: str = "the two embedding files"
) -> None:
    """Raise `InputError` unless both metadata name the same model (encoder, head, dim, similarity, model_id), and,
    when both hold low-bit codes, the same codes (bits and levels).

    Where both have a `model_id` (a digest of the weights and of everything that decides the outputs) it is the
    model's identity, and the encoder's name is not compared: `minilm` and its full Hub id are one model. Encoding,
    role and qcompress version may differ (a uint8 file compares fine with a float32 file of the same model, and
    float32 queries with a code file: the asymmetric score), but two files of codes with other levels do not: each
    one's codes mean other angles.

    Example:
        >>> m = {"encoder": "minilm", "head": "quantum", "dim": 128, "similarity": "fidelity"}
        >>> check_same_model(m, dict(m, encoding="uint8"))
        >>> check_same_model(m, dict(m, dim=64))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: field "dim": the two embedding files come from different models (dim 128 ...
        >>> four, three = AngleCodes.uniform(128, 4).to_metadata(), AngleCodes.uniform(128, 3).to_metadata()
        >>> check_same_model(dict(m, codes=four), m)  # float32 queries against codes: the asymmetric score
        >>> check_same_model(dict(m, codes=four), dict(m, codes=three))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: field "codes": the two embedding files are coded differently (bits 4 vs 3); ...
    """
    keys = list(MODEL_FIELDS)
    if "model_id" in meta_a and "model_id" in meta_b:
        keys = [k for k in keys if k != "encoder"] + ["model_id"]
    norm_a = {k: _normalise(k, meta_a.get(k)) for k in keys}
    norm_b = {k: _normalise(k, meta_b.get(k)) for k in keys}
    diff = [k for k in keys if norm_a[k] != norm_b[k]]
    if diff:
        details = "; ".join(f"{k} {json.dumps(meta_a.get(k))} vs {json.dumps(meta_b.get(k))}" for k in diff)
        raise InputError(
            f"{what} come from different models ({details}); compress both with the same model", field=diff[0]
        )
    codes_a, codes_b = meta_a.get(CODES), meta_b.get(CODES)
    if isinstance(codes_a, dict) and isinstance(codes_b, dict):
        bits_a, bits_b = codes_a.get("bits"), codes_b.get("bits")
        if (bits_a, codes_a.get("levels")) != (bits_b, codes_b.get("levels")):
            details = f"bits {bits_a} vs {bits_b}" if bits_a != bits_b else f"{bits_a}-bit codes with other levels"
            raise InputError(f"{what} are coded differently ({details}); score float32 queries against the coded "
                             "corpus (`score --symmetric` codes them with its levels)", field=CODES)


def _normalise(key: str, value: Any) -> Any:
    if key == "dim" and isinstance(value, (int, float, str)) and str(value).isdigit():
        return int(value)
    return value
