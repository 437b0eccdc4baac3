"""TREC run files (`qid Q0 docid rank score tag`) and relevance judgements (TREC or BEIR qrels).

Readers raise `InputError` naming the file, the 1-based line and the field; `write_run` checks every value before
it touches the output and never leaves a partial file at the final path.
"""

from __future__ import annotations

import math
import sys
from typing import IO, Iterator, Mapping

from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.formats.ids import id_problem
from qcompress.formats.lines import STDIN, WHITESPACE, PathLike, display_name, open_lines

__all__ = ["write_run", "read_run", "read_qrels", "iter_qrels"]


def _id_key(value: str) -> tuple[int, int, str, str]:
    """Numeric ids (ASCII digits) in numeric order, then the others as strings (only for a deterministic, readable
    order). Compared by length and digits, not converted: `²` is a digit to `str.isdigit` but no number to `int`,
    and Python refuses to convert more than 4,300 digits.

    Example:
        >>> sorted(["10", "9", "²", "b", "0010"], key=_id_key)
        ['9', '0010', '10', 'b', '²']
    """
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        return (0, len(digits), digits, value)
    return (1, 0, value, value)


def _run_lines(run: Mapping[str, Mapping[str, float]], tag: str, top_k: int | None) -> Iterator[str]:
    if not tag or WHITESPACE.search(tag):
        raise InputError(f"run tag must be a non-empty word without whitespace, got {tag!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise InputError(f"top_k must be a positive integer or None, got {top_k!r}")
    for qid in sorted(run, key=_id_key):
        if id_problem(qid) is not None:
            raise InputError(f"query id {qid!r} {id_problem(qid)}; it cannot go into a TREC run")
        scored = []
        for docid, score in run[qid].items():
            if id_problem(docid) is not None:
                raise InputError(f"doc id {docid!r} {id_problem(docid)}; it cannot go into a TREC run")
            score = float(score)
            if not math.isfinite(score):
                raise ValueError(f"score of query {qid!r}, doc {docid!r} is {score}; scores must be finite")
            scored.append((score, docid))
        scored.sort(key=lambda item: (-item[0], item[1]))
        if top_k is not None:
            scored = scored[:top_k]
        for rank, (score, docid) in enumerate(scored, 1):
            # repr: the shortest text that reads back as the same float, so no new ties appear.
            yield f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def write_run(
    path_or_stream: PathLike | IO[str],
    run: Mapping[str, Mapping[str, float]],
    tag: str,
    *,
    top_k: int | None = None,
) -> None:
    """Write a TREC run: lines `qid Q0 docid rank score tag`, by score descending (ties: doc id ascending).

    `path_or_stream` is a path (written atomically), "-" (stdout) or an open text stream. `top_k` keeps the
    best k documents per query.

    Example:
        >>> write_run(sys.stdout, {"1": {"d2": 0.5, "d1": 0.9, "d3": 0.5}}, "qc", top_k=2)
        1 Q0 d1 1 0.9 qc
        1 Q0 d2 2 0.5 qc
    """
    lines = list(_run_lines(run, tag, top_k))  # validate everything before touching the output
    if hasattr(path_or_stream, "write"):
        path_or_stream.writelines(lines)  # type: ignore[union-attr]
        return
    if str(path_or_stream) == STDIN:
        sys.stdout.writelines(lines)
        return
    with atomic_file(path_or_stream) as tmp:  # type: ignore[arg-type]
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(lines)


def read_run(path: PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run (`qid Q0 docid rank score tag`, whitespace-separated) into {qid: {docid: score}}."""
    name = display_name(path)
    run: dict[str, dict[str, float]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in open_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputError(
                f"expected 6 whitespace-separated fields `qid Q0 docid rank score tag`, got {len(fields)}",
                file=name,
                line=lineno,
            )
        qid, _, docid, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(
                f"score {score_text!r} is not a finite number", file=name, line=lineno, field="score"
            )
        if (qid, docid) in seen:
            raise InputError(
                f'query "{qid}" lists doc "{docid}" twice (first on line {seen[qid, docid]})',
                file=name,
                line=lineno,
                field="docid",
            )
        seen[qid, docid] = lineno
        run.setdefault(qid, {})[docid] = score
    return run


_BEIR_HEADER = ("query-id", "corpus-id", "score")


def iter_qrels(path: PathLike) -> Iterator[tuple[str, str, int, int]]:
    """Stream (qid, docid, grade, line number) from TREC qrels (`qid 0 docid rel`) or BEIR qrels
    (`query-id<TAB>corpus-id<TAB>score`, header optional); the format is detected from the first line."""
    name = display_name(path)
    return _iter_qrels(name, open_lines(path))


def _iter_qrels(name: str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[str, str, int, int]]:
    width = None
    for lineno, line in lines:
        fields = line.split()
        if not fields:
            continue
        if width is None:
            if tuple(f.lower() for f in fields) == _BEIR_HEADER:
                width = 3
                continue
            if len(fields) not in (3, 4):
                raise InputError(
                    f"got {len(fields)} fields; expected TREC qrels `qid 0 docid rel` (4 fields) or BEIR qrels "
                    "`query-id corpus-id score` (3 fields, tab-separated, with that header)",
                    file=name,
                    line=lineno,
                )
            width = len(fields)
        if len(fields) != width:
            layout = "`qid 0 docid rel`" if width == 4 else "`query-id corpus-id score`"
            raise InputError(
                f"got {len(fields)} fields; expected {width} like the first line, {layout}", file=name, line=lineno
            )
        qid, docid, grade_text = (fields[0], fields[2], fields[3]) if width == 4 else fields
        try:
            grade_value = float(grade_text)
        except ValueError:
            grade_value = math.nan
        if not grade_value.is_integer():
            layout = "`qid 0 docid rel`" if width == 4 else "`query-id corpus-id score`"
            raise InputError(
                f"relevance grade {grade_text!r} is not an integer; expected lines {layout}",
                file=name,
                line=lineno,
                field="rel" if width == 4 else "score",
            )
        yield qid, docid, int(grade_value), lineno


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read relevance judgements into {qid: {docid: grade}} from TREC or BEIR qrels (auto-detected).

    A pair judged twice with the same grade is accepted; with different grades it is an error naming both lines.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "qrels.tsv"
        >>> _ = p.write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t2\\n")
        >>> read_qrels(p)
        {'q1': {'d1': 2}}
    """
    name = display_name(path)
    qrels: dict[str, dict[str, int]] = {}
    lines_of: dict[tuple[str, str], int] = {}
    for qid, docid, grade, lineno in iter_qrels(path):
        judged = qrels.setdefault(qid, {})
        if docid in judged and judged[docid] != grade:
            raise InputError(
                f'query "{qid}", doc "{docid}" is judged {grade} here and {judged[docid]} on line '
                f"{lines_of[qid, docid]}; keep one judgement",
                file=name,
                line=lineno,
            )
        judged[docid] = grade
        lines_of[qid, docid] = lineno
    return qrels
