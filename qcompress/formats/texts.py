"""Input texts: (id, text) records from JSONL, TSV, CSV, Parquet or stdin, and (query, passage) pairs.

Readers raise `InputError` naming the file, the 1-based line (a Parquet file: the row) and the field, so that the
CLI prints one line and exits 1. Ids must be unique, non-empty and without whitespace (they end up in
whitespace-separated TREC runs); uniqueness is checked `CHECK_BATCH` records at a time, in memory that grows with
the ids only (`qcompress.formats.ids`), so a stream of any length can be read. Which fields hold the id, the text
and the title is a `TextFields` (BEIR's `_id`/`id`, `text`, `title` by default; `compress --id-field docid
--text-field contents` for Pyserini's JSONL).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from qcompress.errors import InputError, json_loads
from qcompress.formats.ids import UniqueIds, id_problem
from qcompress.formats.lines import STDIN, PathLike, display_name, open_lines
from qcompress.formats.tables import csv_records, parquet_records

__all__ = ["TextFields", "iter_texts", "read_texts", "read_parquet_texts", "read_pairs"]

_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_TSV_SUFFIXES = {".tsv", ".txt"}
_CSV_SUFFIXES = {".csv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
CHECK_BATCH = 1024  # records read ahead and checked together for duplicate ids, before any of them is yielded


@dataclass(frozen=True)
class TextFields:
    """The fields of a JSONL, CSV or Parquet record that hold its id (the first of `id` present), its text (the
    first of `text` present) and its optional title (text = title + " " + text, BEIR's rule; None: no title).

    Example:
        >>> TextFields.named(id="docid", text="contents")
        TextFields(id=('docid',), text=('contents',), title='title')
    """

    id: tuple[str, ...] = ("_id", "id")
    text: tuple[str, ...] = ("text",)
    title: str | None = "title"

    @classmethod
    def named(cls, id: str | None = None, text: str | None = None, title: str | None = None) -> "TextFields":
        """The defaults, with each field that is given (the command line's --id-field, --text-field, --title-field)
        in place of its default names."""
        default = cls()
        return cls(id=(id,) if id else default.id, text=(text,) if text else default.text,
                   title=title if title else default.title)

    def columns(self) -> list[str]:
        return [*self.id, *self.text, *([self.title] if self.title else [])]

    @property
    def is_default(self) -> bool:
        return self == TextFields()


# -- records -----------------------------------------------------------------------------------------------------


def _suffix(path: PathLike) -> str:
    return Path(str(path)).suffix.lower() if str(path) != STDIN else ""


def _sniff(path: PathLike, lines: Iterator[tuple[int, str]]) -> tuple[str, Iterator[tuple[int, str]]]:
    """"jsonl" or "tsv": by extension, else (stdin, other names) by the first non-blank line."""
    suffix = _suffix(path)
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
                    f"id must be a string or an integer, got {_shown(value)}", file=name, line=lineno, field=field
                )
            return _check_id(str(value).strip(), name, lineno, field)
    names = " or ".join(f'"{f}"' for f in id_fields)
    raise InputError(f"missing id: each record needs a {names} field", file=name, line=lineno, field=id_fields[0])


def _shown(value: object) -> str:
    """A record's value as an error message shows it: JSON where it is JSON, else Python's repr (bytes)."""
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return repr(value)[:60]


def _record_text(record: dict, name: str, lineno: int | None, fields: Sequence[str] = ("text",),
                 title_field: str | None = "title") -> str:
    """The record's text (first of `fields` present), with its title in front when it has one (BEIR's rule)."""
    for field in fields:
        if field in record:
            break
    else:
        names = " or ".join(f'"{f}"' for f in fields)
        raise InputError(f"missing: each record needs a {names} string", file=name, line=lineno, field=fields[0])
    text = record[field]
    if not isinstance(text, str):
        raise InputError(f"must be a string, got {_shown(text)}", file=name, line=lineno, field=field)
    title = record.get(title_field) if title_field else None
    if title is None:
        return text.strip()
    if not isinstance(title, str):
        raise InputError(f"must be a string when present, got {_shown(title)}", file=name, line=lineno,
                         field=title_field)
    return (title + " " + text).strip()


# -- input texts -----------------------------------------------------------------------------------------------


def iter_texts(
    path: PathLike, *, id_fields: Sequence[str] | None = None, allow_empty: bool = False,
    fields: TextFields | None = None,
) -> Iterator[tuple[str, str]]:
    """Stream (id, text) from a JSONL, TSV, CSV or Parquet file, or stdin for "-"; see `read_texts` for the formats.

    The file is opened at once (a missing file raises here); records are parsed as they are consumed,
    `CHECK_BATCH` at a time (a batch is checked whole before any of it is yielded), so a corpus larger than memory
    can be compressed. Only the ids are kept, compactly, to detect duplicates. `fields` names the id, text and
    title fields (`id_fields`, the older way, the id's alone).
    """
    fields = fields or TextFields()
    if id_fields is not None:
        fields = TextFields(id=tuple(id_fields), text=fields.text, title=fields.title)
    name = display_name(path)
    kind = _suffix(path)
    if kind in _PARQUET_SUFFIXES:
        records = _table_records(parquet_records(path, fields.columns()), str(path), fields, "row")
    elif kind in _CSV_SUFFIXES:
        records = _table_records(csv_records(path), str(path), fields, "line")
    else:
        records = _records(path, name, open_lines(path), fields)
    return _iter_texts(records, name, allow_empty, "row" if kind in _PARQUET_SUFFIXES else "line")


def _iter_texts(records: Iterator[tuple[int, str, str]], name: str, allow_empty: bool,
                unit: str) -> Iterator[tuple[str, str]]:
    seen = UniqueIds()
    batch: list[tuple[int, str, str]] = []
    for lineno, doc_id, text in records:
        if not text and not allow_empty:
            raise InputError("text is empty; every record needs some text", **_where(name, lineno, unit),
                             field="text")
        batch.append((lineno, doc_id, text))
        if len(batch) == CHECK_BATCH:
            yield from _unique(batch, seen, name, unit)
            batch = []
    yield from _unique(batch, seen, name, unit)


def _where(name: str, number: int, unit: str) -> dict:
    """InputError's file and line for a record at `number`: a line of a text file, or a row of a Parquet file
    (named in the file part: `corpus.parquet row 3: ...`)."""
    return {"file": name, "line": number} if unit == "line" else {"file": f"{name} row {number}"}


def _unique(batch: list[tuple[int, str, str]], seen: UniqueIds, name: str, unit: str) -> Iterator[tuple[str, str]]:
    """The batch's (id, text), after checking (now, not lazily) that no id was seen before."""
    duplicate = seen.add([doc_id for _, doc_id, _ in batch], [lineno for lineno, _, _ in batch])
    if duplicate is not None:
        index, first = duplicate
        lineno, doc_id, _ = batch[index]
        raise InputError(f'duplicate id "{doc_id}" (first on {unit} {first}); ids must be unique',
                         **_where(name, lineno, unit), field="id")
    return ((doc_id, text) for _, doc_id, text in batch)


def _table_records(rows: Iterator[tuple[int, dict]], name: str, fields: TextFields,
                   unit: str) -> Iterator[tuple[int, str, str]]:
    """(line or row, id, text) of CSV or Parquet records, checked as JSONL records are."""
    for number, record in rows:
        where = _where(name, number, unit)
        doc_id = _record_id(record, fields.id, where["file"], where.get("line"))
        yield number, doc_id, _record_text(record, where["file"], where.get("line"), fields.text, fields.title)


def _records(
    path: PathLike, name: str, lines: Iterator[tuple[int, str]], fields: TextFields
) -> Iterator[tuple[int, str, str]]:
    """(line, id, text) of each JSONL or TSV record, checked but for duplicate ids and empty texts."""
    kind, lines = _sniff(path, lines)
    if kind == "tsv" and not fields.is_default:
        raise InputError("TSV lines are `id<TAB>text`, without field names; --id-field, --text-field and "
                         "--title-field name the fields of JSONL, CSV and Parquet records", file=name)
    first = True
    for lineno, line in lines:
        if not line.strip():
            continue
        if kind == "jsonl":
            record = _json_object(line, name, lineno)
            doc_id = _record_id(record, fields.id, name, lineno)
            text = _record_text(record, name, lineno, fields.text, fields.title)
        else:
            parts = line.split("\t")
            if len(parts) != 2:
                what = "no tab" if len(parts) == 1 else f"{len(parts)} tab-separated fields"
                raise InputError(
                    f"{what}: expected exactly 2 fields, `id<TAB>text` (a tab inside a text must be removed; or "
                    "write JSONL records to a .jsonl file, or CSV with a header to a .csv file)",
                    file=name,
                    line=lineno,
                )
            raw_id, text = parts[0].strip(), parts[1]
            if first and raw_id.lower() in ("id", "_id") and text.strip().lower() == "text":
                first = False
                continue  # header line
            doc_id = _check_id(raw_id, name, lineno, "id")
            text = text.strip()
        first = False
        yield lineno, doc_id, text


def read_texts(
    path: PathLike, *, id_fields: Sequence[str] | None = None, allow_empty: bool = False,
    fields: TextFields | None = None,
) -> list[tuple[str, str]]:
    """Read (id, text) records, in file order, from JSONL, TSV, CSV or Parquet (or stdin for "-").

    Formats: `.jsonl`/`.json` hold one JSON object per line with an id (`_id` or `id`, string or integer), a
    `text` string and an optional `title`; the text is then `title + " " + text` (BEIR's rule). `.csv` has a header
    row naming the same fields (quoted values may hold commas and line breaks); `.parquet` has columns of those
    names (ids strings or integers). `fields` (a `TextFields`) names other fields, e.g. Pyserini's `docid` and
    `contents`. `.tsv`/`.txt` hold `id<TAB>text` lines; a header `id<TAB>text` is skipped. Stdin and other names
    are sniffed from the first non-blank line (`{` means JSONL, else TSV). Blank lines are skipped. Empty texts,
    duplicate ids and ids with whitespace are errors naming the file, the line (a Parquet file: the row) and the
    field.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
        >>> _ = p.write_text('{"_id": 1, "title": "Wings", "text": "lift and drag"}\\n')
        >>> read_texts(p)
        [('1', 'Wings lift and drag')]
        >>> _ = (p.parent / "docs.csv").write_text('docid,contents\\nd1,"lift, and drag"\\n')
        >>> read_texts(p.parent / "docs.csv", fields=TextFields.named(id="docid", text="contents"))
        [('d1', 'lift, and drag')]
    """
    return list(iter_texts(path, id_fields=id_fields, allow_empty=allow_empty, fields=fields))


def read_parquet_texts(path: PathLike, fields: TextFields | None = None) -> list[tuple[str, str]]:
    """A Parquet file of texts (`read_texts` on a `.parquet` file, whatever the file's name): an id column (`_id`
    or `id`, strings or integers), `text`, optional `title` (text = title + " " + text, BEIR's rule), or the
    columns `fields` names. Same rules as the JSONL reader: unique non-empty ids without whitespace, non-empty
    texts."""
    fields = fields or TextFields()
    records = _table_records(parquet_records(path, fields.columns()), str(path), fields, "row")
    return list(_iter_texts(records, str(path), False, "row"))


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

