"""TREC Deep Learning passage: the one place for its dataset names, and a reader for a local folder.

The evaluation years 2019 and 2020 are named "trec-dl-2019" / "trec-dl-2020" when read from a local folder and
by their ir_datasets ids (msmarco-passage/trec-dl-YEAR/judged) otherwise; "trec-dl-21" (MS MARCO v2) is local
training data. The local folder (`trec_dir`, or the QCOMPRESS_TREC_DIR environment variable) holds:
    qrels.dl19-passage.txt, qrels.dl20-passage.txt     official judgements (TREC format, grades 0-3)
    queries.dl19.tsv, queries.dl20.tsv                  judged queries, `qid<TAB>text`
    collection.tsv                                      `pid<TAB>text`: a pool of MS MARCO v1 passages
    run.bm25.dl19.trec, run.bm25.dl20.trec             BM25 top-100 runs (the first stage for `rerank`)
    qrels.dl21-passage.txt, queries.dl21.tsv, collection.dl21.tsv   DL21 (MS MARCO v2), used for training

MS MARCO text is for non-commercial research only: it is read from the user's folder, never shipped.
Judgements keep every judged passage, also those without text in the pool, so that NDCG's ideal ranking is
the official one; a passage without text can simply never be retrieved.
"""

from __future__ import annotations

import os
from pathlib import Path

from qcompress.data.collection import Collection
from qcompress.errors import InputError
from qcompress.formats import iter_qrels, iter_texts, read_run

__all__ = [
    "TREC_DIR_ENV",
    "TREC_DL",
    "EVALUATION_SETS",
    "EVALUATION_YEARS",
    "IR_DATASETS_PREFIXES",
    "RELEVANCE_LEVEL",
    "trec_dl_dataset",
    "trec_dir",
    "load_trec_dl",
]

TREC_DIR_ENV = "QCOMPRESS_TREC_DIR"
# local dataset name -> (file suffix, expected number of judged queries; None: not checked)
TREC_DL = {"trec-dl-2019": ("19", 43), "trec-dl-2020": ("20", 54), "trec-dl-21": ("21", None)}
# The evaluation years: locally they ship a BM25 run to re-rank and a passage pool (DL21 is training data here).
EVALUATION_SETS = ("trec-dl-2019", "trec-dl-2020")
# year -> the ir_datasets id of its judged queries (needs the MS MARCO corpus, downloaded by ir_datasets)
_IR_DATASETS_IDS = {"2019": "msmarco-passage/trec-dl-2019/judged", "2020": "msmarco-passage/trec-dl-2020/judged"}
EVALUATION_YEARS = tuple(_IR_DATASETS_IDS)
# ir_datasets ids of TREC DL passage judgements (v1 and v2), which use the same grades as the local files
IR_DATASETS_PREFIXES = ("msmarco-passage/trec-dl", "msmarco-passage-v2/trec-dl")
# TREC DL passage judgements are graded 0-3 and count 2+ as relevant for RR, MAP and recall (SPEC §6).
RELEVANCE_LEVEL = 2


def trec_dl_dataset(year: str, local: bool) -> str:
    """The dataset name of an evaluation year: the local folder's name, or the ir_datasets id.

    Example:
        >>> trec_dl_dataset("2019", local=True), trec_dl_dataset("2020", local=False)
        ('trec-dl-2019', 'msmarco-passage/trec-dl-2020/judged')
    """
    if year not in _IR_DATASETS_IDS:
        raise InputError(f"no TREC DL evaluation set for year {year!r}; choose {' or '.join(EVALUATION_YEARS)}")
    return f"trec-dl-{year}" if local else _IR_DATASETS_IDS[year]


def trec_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The local TREC DL folder: `explicit`, else $QCOMPRESS_TREC_DIR; an error says how to set it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     trec_dir(tmp) == Path(tmp)
        True
    """
    value = explicit or os.environ.get(TREC_DIR_ENV)
    if not value:
        raise InputError(
            f"the local TREC DL files need a folder: name one (trec_dir) or set {TREC_DIR_ENV} "
            f"(or use the ir_datasets ids {_IR_DATASETS_IDS['2019']} etc. with internet access)"
        )
    folder = Path(value)
    if not folder.is_dir():
        raise InputError(f"TREC DL folder does not exist: {folder}")
    return folder


def _require(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"missing file {path.name} in the TREC DL folder {path.parent}", file=path)
    return path


def load_trec_dl(name: str, folder: str | os.PathLike | None = None) -> Collection:
    r"""Load `trec-dl-2019`, `trec-dl-2020` (evaluation, with the BM25 run as first stage) or `trec-dl-21`.

    For DL21, meant for training, judgements are restricted to passages that have text, and each query's
    judged-0 passages with text are its hard negatives.

    The evaluation years check the number of judged queries (43, 54) and that every passage of the BM25 run has
    text. A tiny DL21 folder (p9 is judged but has no text, so it is left out):
        >>> import tempfile
        >>> files = {
        ...     "collection.dl21.tsv": "p1\tlift on a wing\np2\tshock waves\n",
        ...     "queries.dl21.tsv": "q1\twing lift\nq2\tno judgements\n",
        ...     "qrels.dl21-passage.txt": "q1 0 p1 3\nq1 0 p2 0\nq1 0 p9 2\n",
        ... }
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for name, text in files.items():
        ...         _ = (Path(tmp) / name).write_text(text)
        ...     c = load_trec_dl("trec-dl-21", tmp)
        >>> c.split, c.queries, c.qrels, c.hard_negatives, c.relevance_level
        ('train', {'q1': 'wing lift'}, {'q1': {'p1': 3, 'p2': 0}}, {'q1': ['p2']}, 2)
    """
    if name not in TREC_DL:
        raise InputError(f"unknown TREC DL set {name!r}; choose one of {', '.join(TREC_DL)}")
    suffix, expected = TREC_DL[name]
    folder = trec_dir(folder)
    collection_file = _require(folder / ("collection.dl21.tsv" if suffix == "21" else "collection.tsv"))
    queries_file = _require(folder / f"queries.dl{suffix}.tsv")
    qrels_file = _require(folder / f"qrels.dl{suffix}-passage.txt")

    corpus = dict(iter_texts(collection_file, allow_empty=True))
    all_queries = dict(iter_texts(queries_file))
    qrels: dict[str, dict[str, int]] = {}
    for qid, doc_id, grade, line in iter_qrels(qrels_file):
        if qid not in all_queries:
            raise InputError(f'query id "{qid}" is not in {queries_file.name}', file=qrels_file, line=line)
        if suffix == "21" and doc_id not in corpus:
            continue
        qrels.setdefault(qid, {})[doc_id] = grade
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    if expected is not None and len(queries) != expected:
        raise InputError(f"expected {expected} judged queries for {name}, found {len(queries)}", file=qrels_file)

    first_stage = hard_negatives = None
    if suffix == "21":
        hard_negatives = {q: [d for d, g in qrels[q].items() if g <= 0] for q in queries}
    else:
        run_file = _require(folder / f"run.bm25.dl{suffix}.trec")
        first_stage = read_run(run_file)
        unknown = [q for q in first_stage if q not in queries]
        if unknown:
            raise InputError(f"run names query {unknown[0]!r}, which has no judgements", file=run_file)
        missing = sorted({d for run in first_stage.values() for d in run if d not in corpus})
        if missing:
            raise InputError(
                f"{len(missing)} passage(s) of the BM25 run have no text in {collection_file.name}, e.g. {missing[0]}",
                file=run_file,
            )
    return Collection(
        name=name,
        corpus=corpus,
        queries=queries,
        qrels={q: qrels[q] for q in queries},
        split="test" if suffix != "21" else "train",
        relevance_level=RELEVANCE_LEVEL,
        hard_negatives=hard_negatives,
        first_stage=first_stage,
    )
