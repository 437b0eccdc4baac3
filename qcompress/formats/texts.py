"""Input texts: (id, text) records from JSONL, TSV, stdin or Parquet, and (query, passage) pairs.

Readers raise `InputError` naming the file, the 1-based line and the field, so that the CLI prints one line and
exits 1. Ids must be unique, non-empty and without whitespace (they end up in whitespace-separated TREC runs);
uniqueness is checked `CHECK_BATCH` records at a time, in memory that grows with the ids only
(`qcompress.formats.ids`), so a stream of any length can be read.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from qcompress.errors import InputError, json_loads
from qcompress.formats.ids import UniqueIds, id_problem
from qcompress.formats.lines import STDIN, PathLike, display_name, open_lines

__all__ = ["iter_texts", "read_texts", "read_parquet_texts", "read_pairs"]

_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_TSV_SUFFIXES = {".tsv", ".txt"}
CHECK_BATCH = 1024  # records read ahead and checked together for duplicate ids, before any of them is yielded


# -- records -----------------------------------------------------------------------------------------------------


def _sniff(path: PathLike, lines: Iterator[tuple[int, str]]) -> tuple[str, Iterator[tuple[int, str]]]:
    """"jsonl" or "tsv": by extension, else (stdin, other names) by the first non-blank line."""
    suffix = Path(str(path)).suffix.lower() if str(path) != STDIN else ""
    if suffix in _JSONL_SUFFIXES:
        return "jsonl", lines
    if suffix in _TSV_SUFFIXES:
        return "tsv", lines
    head: list[tuple[int, str]] = []
    for item in lines:
        head.append(item)
        if item[1].strip():
            break
    first = head[-1][1].lstrip() if head else ""
    kind = "jsonl" if first.startswith(("{", "[")) else "tsv"
    return kind, itertools.chain(head, lines)


def _json_object(line: str, name: str, lineno: int) -> dict:
    try:
        record = json_loads(line)
    except json.JSONDecodeError as err:
        raise InputError(
            f"malformed JSON ({err.msg} at column {err.colno}); expected one JSON object per line (JSONL)",
            file=name,
            line=lineno,
        ) from None
    if not isinstance(record, dict):
        hint = " (a JSON array: write one object per line, e.g. `jq -c '.[]' in.json > in.jsonl`)" if isinstance(
            record, list
        ) else ""
        raise InputError(
            f"expected a JSON object per line, got a {type(record).__name__}{hint}", file=name, line=lineno
        )
    if "\\ud" in line.lower():  # a \uD800-\uDFFF escape: half of a UTF-16 pair, alone it is no character
        for field, value in record.items():
            if isinstance(value, str) and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as err:
                    raise InputError(f"holds a lone surrogate ({value[err.start]!r} at character {err.start + 1}), "
                                     "half of a UTF-16 pair: not a character; fix the \\u escape", file=name,
                                     line=lineno, field=str(field).encode("utf-8", "backslashreplace").decode()) from None
    return record


def _check_id(value: str, name: str, lineno: int, field: str | None) -> str:
    if not value:
        raise InputError("id is empty; every record needs a non-empty id", file=name, line=lineno, field=field)
    problem = id_problem(value)
    if problem is not None:
        raise InputError(
            f"id {value!r} {problem}; ids must not contain whitespace or control characters "
            "(TREC run files are whitespace-separated)",
            file=name,
            line=lineno,
            field=field,
        )
    return value


def _record_id(record: dict, id_fields: Sequence[str], name: str, lineno: int) -> str:
    for field in id_fields:
        if field in record:
            value = record[field]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InputError(
                    f"id must be a string or an integer, got {json.dumps(value)}", file=name, line=lineno, field=field
                )
            return _check_id(str(value).strip(), name, lineno, field)
    names = " or ".join(f'"{f}"' for f in id_fields)
    raise InputError(f"missing id: each record needs a {names} field", file=name, line=lineno, field=id_fields[0])


def _record_text(record: dict, name: str, lineno: int, fields: Sequence[str] = ("text",)) -> str:
    """The record's text (first of `fields` present), with its title in front when it has one (BEIR's rule)."""
    for field in fields:
        if field in record:
            break
    else:
        names = " or ".join(f'"{f}"' for f in fields)
        raise InputError(f"missing: each record needs a {names} string", file=name, line=lineno, field=fields[0])
    text = record[field]
    if not isinstance(text, str):
        raise InputError(f"must be a string, got {json.dumps(text)[:60]}", file=name, line=lineno, field=field)
    title = record.get("title")
    if title is None:
        return text.strip()
    if not isinstance(title, str):
        raise InputError(
            f"must be a string when present, got {json.dumps(title)[:60]}", file=name, line=lineno, field="title"
        )
    return (title + " " + text).strip()


# -- input texts -----------------------------------------------------------------------------------------------


def iter_texts(
    path: PathLike, *, id_fields: Sequence[str] = ("_id", "id"), allow_empty: bool = False
) -> Iterator[tuple[str, str]]:
    """Stream (id, text) from a JSONL or TSV file, or stdin for "-"; see `read_texts` for the formats.

    The file is opened at once (a missing file raises here); records are parsed as they are consumed,
    `CHECK_BATCH` at a time (a batch is checked whole before any of it is yielded), so a corpus larger than memory
    can be compressed. Only the ids are kept, compactly, to detect duplicates.
    """
    name = display_name(path)
    lines = open_lines(path)
    return _iter_texts(path, name, lines, tuple(id_fields), allow_empty)


def _iter_texts(
    path: PathLike, name: str, lines: Iterator[tuple[int, str]], id_fields: tuple[str, ...], allow_empty: bool
) -> Iterator[tuple[str, str]]:
    seen = UniqueIds()
    batch: list[tuple[int, str, str]] = []
    for record in _records(path, name, lines, id_fields, allow_empty):
        batch.append(record)
        if len(batch) == CHECK_BATCH:
            yield from _unique(batch, seen, name)
            batch = []
    yield from _unique(batch, seen, name)


def _unique(batch: list[tuple[int, str, str]], seen: UniqueIds, name: str) -> Iterator[tuple[str, str]]:
    """The batch's (id, text), after checking (now, not lazily) that no id was seen before."""
    duplicate = seen.add([doc_id for _, doc_id, _ in batch], [lineno for lineno, _, _ in batch])
    if duplicate is not None:
        index, first = duplicate
        lineno, doc_id, _ = batch[index]
        raise InputError(
            f'duplicate id "{doc_id}" (first on line {first}); ids must be unique', file=name, line=lineno, field="id"
        )
    return ((doc_id, text) for _, doc_id, text in batch)


def _records(
    path: PathLike, name: str, lines: Iterator[tuple[int, str]], id_fields: tuple[str, ...], allow_empty: bool
) -> Iterator[tuple[int, str, str]]:
    """(line, id, text) of each record, checked but for duplicate ids."""
    kind, lines = _sniff(path, lines)
    first = True
    for lineno, line in lines:
        if not line.strip():
            continue
        if kind == "jsonl":
            record = _json_object(line, name, lineno)
            doc_id = _record_id(record, id_fields, name, lineno)
            text = _record_text(record, name, lineno)
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                what = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
                raise InputError(
                    f"{what}: expected exactly 2 fields, `id<TAB>text` (a tab inside a text must be removed; or "
                    "write JSONL records to a .jsonl file)",
                    file=name,
                    line=lineno,
                )
            raw_id, text = fields[0].strip(), fields[1]
            if first and raw_id.lower() in ("id", "_id") and text.strip().lower() == "text":
                first = False
                continue  # header line
            doc_id = _check_id(raw_id, name, lineno, "id")
            text = text.strip()
        first = False
        if not text and not allow_empty:
            raise InputError("text is empty; every record needs some text", file=name, line=lineno, field="text")
        yield lineno, doc_id, text


def read_texts(
    path: PathLike, *, id_fields: Sequence[str] = ("_id", "id"), allow_empty: bool = False
) -> list[tuple[str, str]]:
    """Read (id, text) records, in file order, from JSONL or TSV (or stdin for "-").

    Formats: `.jsonl`/`.json` hold one JSON object per line with an id (`_id` or `id`, string or integer), a
    `text` string and an optional `title`; the text is then `title + " " + text` (BEIR's rule). `.tsv`/`.txt`
    hold `id<TAB>text` lines; a header `id<TAB>text` is skipped. Stdin and other names are sniffed from the
    first non-blank line (`{` means JSONL). Blank lines are skipped. Empty texts, duplicate ids and ids with
    whitespace are errors.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
        >>> _ = p.write_text('{"_id": 1, "title": "Wings", "text": "lift and drag"}\\n')
        >>> read_texts(p)
        [('1', 'Wings lift and drag')]
    """
    return list(iter_texts(path, id_fields=id_fields, allow_empty=allow_empty))


def read_parquet_texts(path: PathLike) -> list[tuple[str, str]]:
    """A Parquet file of texts: an id column (`_id` or `id`, strings or integers), `text`, optional `title`
    (text = title + " " + text, BEIR's rule). Same rules as the JSONL reader: unique non-empty ids without
    whitespace, non-empty texts."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found; check the path", file=path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file ({err})", file=path) from None
    id_field = next((f for f in ("_id", "id") if f in schema.names), None)
    if id_field is None:
        raise InputError('missing id: the table needs an "_id" or "id" column', file=path, field="id")
    if "text" not in schema.names:
        raise InputError('missing: the table needs a "text" column', file=path, field="text")
    columns = [id_field, "text"] + (["title"] if "title" in schema.names else [])
    table = pq.read_table(path, columns=columns)
    for name in columns:
        kind = table.schema.field(name).type
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
            name == id_field and pa.types.is_integer(kind))
        if not ok:
            raise InputError(f"must be a string column, got {kind}", file=path, field=name)
    ids = table.column(id_field).to_pylist()
    texts = table.column("text").to_pylist()
    titles = table.column("title").to_pylist() if "title" in columns else [None] * len(ids)
    records: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for row, (raw_id, text, title) in enumerate(zip(ids, texts, titles), 1):
        if raw_id is None:
            raise InputError(f"row {row}: id is missing (null)", file=path, field=id_field)
        doc_id = _check_id(str(raw_id).strip(), f"{path} row {row}", None, id_field)
        if text is None:
            raise InputError(f"row {row}: text is missing (null)", file=path, field="text")
        text = ((title + " " + text) if title is not None else text).strip()
        if not text:
            raise InputError(f"row {row}: text is empty; every record needs some text", file=path, field="text")
        if doc_id in seen:
            raise InputError(f'row {row}: duplicate id "{doc_id}" (first in row {seen[doc_id]}); ids must be unique',
                             file=path, field=id_field)
        seen[doc_id] = row
        records.append((doc_id, text))
    return records


_PAIR_PASSAGE_FIELDS = ("passage", "text", "document")


def read_pairs(path: PathLike) -> list[tuple[str, str]]:
    """Read (query, passage) text pairs from TSV `query<TAB>passage` or JSONL (or stdin for "-").

    JSONL records need a `query` string and a passage under `passage`, `text` or `document`. A TSV header
    `query<TAB>passage` is skipped. Both texts must be non-empty.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
        >>> _ = p.write_text("what is lift\\tLift is a force.\\n")
        >>> read_pairs(p)
        [('what is lift', 'Lift is a force.')]
    """
    name = display_name(path)
    kind, lines = _sniff(path, open_lines(path))
    pairs: list[tuple[str, str]] = []
    first = True
    for lineno, line in lines:
        if not line.strip():
            continue
        if kind == "jsonl":
            record = _json_object(line, name, lineno)
            query = record.get("query")
            if query is None:
                raise InputError("missing: each record needs a \"query\" string", file=name, line=lineno, field="query")
            if not isinstance(query, str):
                raise InputError(
                    f"must be a string, got {json.dumps(query)[:60]}", file=name, line=lineno, field="query"
                )
            passage_field = next((f for f in _PAIR_PASSAGE_FIELDS if f in record), "passage")
            passage = _plain_text(record, passage_field, name, lineno)
            query = query.strip()
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                what = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
                raise InputError(
                    f"{what}: expected exactly 2 fields, `query<TAB>passage`", file=name, line=lineno
                )
            query, passage = fields[0].strip(), fields[1].strip()
            passage_field = "passage"
            if first and query.lower() == "query" and passage.lower() in _PAIR_PASSAGE_FIELDS:
                first = False
                continue  # header line
        first = False
        if not query:
            raise InputError("query is empty; every pair needs a query text", file=name, line=lineno, field="query")
        if not passage:
            raise InputError(
                "passage is empty; every pair needs a passage text", file=name, line=lineno, field=passage_field
            )
        pairs.append((query, passage))
    return pairs


def _plain_text(record: dict, field: str, name: str, lineno: int) -> str:
    if field not in record:
        raise InputError(
            'missing: each record needs a passage under "passage", "text" or "document"',
            file=name,
            line=lineno,
            field=field,
        )
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {json.dumps(value)[:60]}", file=name, line=lineno, field=field)
    return value.strip()

