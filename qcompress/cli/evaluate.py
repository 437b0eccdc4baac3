"""`qcompress evaluate`: rank a test collection with one or more models, ir_measures metrics and paired tests."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from qcompress.cli._common import (
    cache_folder, check_model_options, check_writable, command, fail, model_spec, note, print_json, print_table,
    progress_bars, usage_error,
)
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, ENCODER_HELP, AsJson, Backend, BackendChoice, BatchSize, Bits, CacheDir, Device, Float32,
    Head, LegacyCache, MaxLength, NoCache, Revision, Similarity, TrustRemoteCode, chosen_backend, chosen_bits, value,
)

if TYPE_CHECKING:
    from rich.table import Table

    from qcompress.data import Collection
    from qcompress.evaluation import Comparison

DEFAULT_METRICS = ["nDCG@10", "RR@10", "R@100", "R@1000", "AP"]  # qcompress.evaluation.DEFAULT_MEASURES

_PROTOCOL_NOTES = {
    "judged": "judged-only re-ranking: each query's judged documents, as in the paper; not comparable with "
    "full-corpus retrieval or BM25 re-ranking",
    "full": "full-corpus ranking (exact top-k)",
    "pool": "ranking of the whole local passage pool (optimistic against the full MS MARCO corpus; for "
    "relative comparisons only)",
    "rerank": "re-ranking of a first-stage run",
    "runs": "TREC runs as given (--run), scored against the judgements",
}


class TrecYear(str, Enum):  # qcompress.data.EVALUATION_YEARS
    y2019 = "2019"
    y2020 = "2020"


class ProtocolChoice(str, Enum):  # qcompress.evaluation.PROTOCOLS
    judged = "judged"
    full = "full"
    pool = "pool"
    rerank = "rerank"


def _collection_and_protocol(trec: Optional[str], trec_dir: Optional[Path], dataset: Optional[str],
                             protocol: Optional[str], first_stage: Optional[Path]) -> tuple[str, str]:
    """(dataset id, protocol) named by --trec/--trec-dir or --dataset, --protocol and --first-stage."""
    from qcompress.data.trecdl import trec_dl_dataset
    from qcompress.errors import InputError
    from qcompress.evaluation import choose_protocol

    if trec is not None and dataset is not None:
        usage_error("--trec and --dataset both name the collection; give one")
    dataset_id = trec_dl_dataset(trec, local=trec_dir is not None) if trec is not None else dataset or "cranfield"
    try:
        return dataset_id, choose_protocol(dataset_id, protocol, first_stage=first_stage)
    except InputError as err:  # the library names the parameter at fault; a user of this command typed flags
        if err.field == "dataset":
            usage_error("--protocol pool ranks the passage pool of a local TREC DL folder (--trec YEAR with "
                        "--trec-dir DIR or $QCOMPRESS_TREC_DIR); use --protocol full to rank a whole corpus")
        if err.field == "first_stage":
            usage_error(f"--first-stage is only used by --protocol rerank, not {protocol}")
        raise InputError(err.reason) from None


def _load(dataset_id: str, split: str, trec: Optional[str], trec_dir: Optional[Path]) -> "Collection":
    """The collection; for --trec without a local folder, a failed ir_datasets download names both ways. Qrels
    without a positive judgement are a warning."""
    from qcompress.data import load_collection
    from qcompress.errors import InputError

    try:
        collection = load_collection(dataset_id, split, trec_dir=trec_dir)
    except InputError as err:
        if trec is None or trec_dir is not None:
            raise
        fail(f"--trec {trec}: no local TREC DL folder (set $QCOMPRESS_TREC_DIR or pass --trec-dir DIR; the layout is "
             f"in qcompress/data/trecdl.py), and ir_datasets could not read {dataset_id}: {err.reason}")
    if not any(grade > 0 for judged in collection.qrels.values() for grade in judged.values()):
        # Not an error (a split may be judged all-irrelevant on purpose), but every metric will be 0: say why.
        note(f"qcompress: warning: {collection.name} split {split!r}: the qrels hold no positive judgement (every "
             "grade is 0 or below), so every metric is 0")
    return collection


def _check_arguments(metrics: Optional[List[str]], run_out: Optional[Path], revision: Optional[str],
                     model_dirs: List[str]) -> None:
    """What can be refused before anything is loaded: a misspelt --metric, an unwritable --run-out, --revision
    with other than one --model."""
    from qcompress.evaluation import measure_names

    try:
        measure_names(metrics or DEFAULT_METRICS)
    except ValueError as err:
        usage_error(f"--metric {getattr(err, 'reason', err)}")
    if run_out is not None:
        check_writable(run_out, "--run-out")
    if revision is not None and len(model_dirs) != 1:
        usage_error("--revision goes with one --model (a Hub id)")


def _first_stage(first_stage: Optional[Path], protocol: str,
                 collection: "Collection") -> tuple[Optional[dict], Optional[str]]:
    """The run of --first-stage (None without) and how the output names the first stage (the collection's own
    for --protocol rerank without one)."""
    from qcompress.formats import read_run

    if first_stage is not None:
        return read_run(first_stage), str(first_stage)
    if protocol != "rerank":
        return None, None
    if collection.first_stage is None:
        usage_error(f"--protocol rerank needs --first-stage RUN (a TREC run file, e.g. BM25 top-1000); "
                    f"{collection.name} ships no first-stage run")
    return None, f"{collection.name} first stage (shipped)"


def _read_runs(paths: List[Path]) -> list[tuple[str, dict]]:
    """--run files as (name, run), each read and checked (an error names its file and line)."""
    from qcompress.formats import read_run

    return [(str(path), read_run(path)) for path in paths]


def _first_stage_line(path: Path, doc_id: str) -> Optional[int]:
    """The first line of a TREC run file that names `doc_id`."""
    from qcompress.formats.lines import open_lines

    return next((n for n, line in open_lines(path) if line.split()[2:3] == [doc_id]), None)


def _write_runs(comparison: "Comparison", run_out: Path) -> dict[str, str]:
    """Each model's TREC run, tagged with its label's tag: {label: path written}. One model: exactly
    --run-out; several: one file each, the model's tag before the suffix."""
    from qcompress.formats import write_run

    written = {}
    for m in comparison.models:
        if m.is_run:  # its own file already
            continue
        path = run_out.with_name(f"{run_out.stem}.{m.tag}{run_out.suffix}") if len(comparison.models) > 1 else run_out
        write_run(path, m.evaluation.run, m.tag)
        written[m.label] = str(path)
    return written


_TESTS = ("scipy.stats.permutation_test (paired: permutation_type samples, two-sided, mean difference) and "
          "scipy.stats.ttest_rel; *_holm: Holm-adjusted over the models compared with the first")


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None  # JSON has no inf/NaN: None where a test is undefined


def _json_output(comparison: "Comparison", collection: "Collection", *, top_k: int, first_stage: Optional[str],
                 run_files: dict[str, str], per_query: bool) -> dict:
    models, protocol = comparison.models, comparison.protocol
    rows = []
    for m in models:
        rows.append({"label": m.label, "tag": m.tag, "model": m.description, "head_parameters": m.head_parameters,
                     "bytes_per_vector": m.bytes_per_vector, "empty_queries": len(m.evaluation.empty_queries)})
        if m.is_run:
            rows[-1]["run"] = m.description["run"]
        if m.label in run_files:
            rows[-1]["run_out"] = run_files[m.label]
    out: dict = {
        "dataset": collection.name, "split": collection.split, "protocol": protocol, "queries": len(comparison.qids),
        "relevance_level": collection.relevance_level, "top_k": top_k if protocol != "judged" else None,
        "first_stage": first_stage, "judged_without_text": comparison.judged_without_text,
        "measures": comparison.measures, "models": rows,
        "metrics": {m.label: m.evaluation.metrics for m in models},
    }
    if comparison.significance:
        out["significance"] = {
            label: {"against": models[0].label, "metric": comparison.metric, "difference": s.test.difference,
                    "test": _TESTS, "randomization_p": _finite(s.test.randomization_p),
                    "randomization_p_holm": _finite(s.randomization_p_holm), "permutations": s.test.permutations,
                    "seed": s.test.seed, "t": _finite(s.test.t), "t_test_p": _finite(s.test.t_p),
                    "t_test_p_holm": _finite(s.t_p_holm)}
            for label, s in comparison.significance.items()
        }
    if len(models) == 1:
        out.update(models[0].evaluation.metrics)  # flat metric keys, e.g. "nDCG@10", for one model
    if per_query:
        out["per_query"] = {m.label: m.evaluation.per_query for m in models}
    return out


def _rerank_depth(comparison: "Comparison", top_k: int) -> str:
    """How many candidates a query had to re-rank: the first stage's depth, cut at top_k (BM25's 100 is not 1000)."""
    sizes = [len(docs) for docs in comparison.models[0].evaluation.run.values()] or [0]
    most = max(sizes)
    depth = f"up to {most:,}" if min(sizes) < most else f"{most:,}"
    return f"{depth} candidates per query (--top-k {top_k:,})"


def _caption(comparison: "Comparison", collection: "Collection", *, top_k: int, first_stage: Optional[str],
             permutations: int) -> str:
    protocol, unranked = comparison.protocol, comparison.judged_without_text
    holm = ", Holm-adjusted over the models" if len(comparison.significance) > 1 else ""
    return (
        _PROTOCOL_NOTES[protocol]
        + (f" ({first_stage}, {_rerank_depth(comparison, top_k)})" if protocol == "rerank" else "")
        + ("; --run files scored as given" if protocol != "runs" and any(m.is_run for m in comparison.models)
           else "")
        + (f"; {unranked:,} judgements without text could not be ranked" if unranked else "")
        + f"; relevance level {collection.relevance_level}"
        + (f"; p: two-sided paired permutation test (scipy, {permutations:,} permutations) on {comparison.metric} "
           f"vs {comparison.models[0].label}{holm}" if comparison.significance else "")
    )


def _results_table(comparison: "Comparison", collection: "Collection", caption: str) -> "Table":
    from rich.table import Table

    table = Table(title=f"{collection.name} ({collection.split}), protocol {comparison.protocol}: "
                  f"{len(comparison.qids)} queries", caption=caption)
    table.add_column("model")
    for col in ("head", "dim", "head params", "bytes/vector", *comparison.measures):
        table.add_column(col, justify="right")
    several = len(comparison.significance) > 1
    if comparison.significance:
        table.add_column("p", justify="right")
        if several:
            table.add_column("p (Holm)", justify="right")
    for m in comparison.models:
        size = m.bytes_per_vector
        if m.is_run:
            described = ["run", "-", "-", "-"]
        else:
            stored = (f"{size['codes']:,} ({size['bits']}-bit x {m.description['dim']})" if size.get("codes") else
                      f"{size['float32']:,}" + (f" (u8 {size['uint8']:,})" if size["uint8"] else ""))
            described = [m.description["head"], str(m.description["dim"]), f"{m.head_parameters:,}", stored]
        cells = [m.label, *described, *(f"{m.evaluation.metrics[k]:.4f}" for k in comparison.measures)]
        s = comparison.significance.get(m.label)
        if comparison.significance:
            cells.append(f"{s.test.randomization_p:.4f}" if s else "-")
            if several:
                cells.append(f"{s.randomization_p_holm:.4f}" if s else "-")
        table.add_row(*cells)
    return table


def _per_query_table(comparison: "Comparison") -> "Table":
    """One model: every measure per query; several: the tested measure per query and model."""
    from rich.table import Table

    models = comparison.models
    detail = Table(title=f"Per query, protocol {comparison.protocol}")
    detail.add_column("query")
    measures = comparison.measures if len(models) == 1 else [comparison.metric]
    for m in models:
        for k in measures:
            detail.add_column(k if len(models) == 1 else f"{m.label} {k}", justify="right")
    for q in comparison.qids:
        detail.add_row(q, *(f"{m.evaluation.per_query[q][k]:.4f}" for m in models for k in measures))
    return detail


# -- the command's own options (the shared ones are in qcompress.cli.options) ------------------------------------
ModelDirs = Annotated[Optional[List[str]], typer.Option(
    "--model", show_default=False, metavar="<path>",
    help="A model folder from `qcompress train`; repeat to compare several (p-values against the first). Without "
    "--model and --encoder: the default model, a trained head shipped with qcompress when there is one, else "
    "all-MiniLM-L6-v2's own angles (the paper's QBT); stderr says which.")]
BaselineEncoder = Annotated[Optional[str], typer.Option(
    "--encoder", help=ENCODER_HELP + " Placed first (the baseline) when combined with --model.")]
Trec = Annotated[Optional[TrecYear], typer.Option(
    "--trec",
    help="The judged queries of TREC DL passage of that year. From the local folder --trec-dir (or "
    "$QCOMPRESS_TREC_DIR; its passage pool need not hold every judged passage, see qcompress.data.trecdl) where "
    "one is given, else ir_datasets msmarco-passage/trec-dl-YEAR/judged (downloads the MS MARCO corpus). "
    "Default protocol: rerank with a local folder (its BM25 top 100), judged with ir_datasets.")]
TrecDir = Annotated[Optional[Path], typer.Option(
    "--trec-dir", envvar="QCOMPRESS_TREC_DIR", show_envvar=True,
    help="Local TREC DL folder (qrels, queries, passage pool, BM25 runs) used by --trec.")]
Dataset = Annotated[Optional[str], typer.Option(
    "--dataset",
    help="'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or an "
    "ir_datasets id (beir/scifact, msmarco-passage/trec-dl-2019/judged...). Default protocol: full for "
    "cranfield, folders and beir/... ids (as BEIR and MTEB report them), judged for other ir_datasets ids.")]
Split = Annotated[str, typer.Option(
    "--split", help="Qrels split of a BEIR folder or cranfield, or of an ir_datasets id that has splits "
    "(--dataset beir/scifact --split test reads beir/scifact/test); an id that names its split is read as it is.")]
Protocol = Annotated[Optional[ProtocolChoice], typer.Option(
    "--protocol",
    help="judged: re-rank each query's judged documents (the paper's protocol; NOT comparable with full "
    "ranking). full: rank the whole corpus. pool: rank the whole passage pool of a local TREC DL folder "
    "(optimistic against the full MS MARCO corpus: for relative comparisons). rerank: re-rank a "
    "--first-stage run's top --top-k per query (default first stage: the collection's own, e.g. the local "
    "TREC DL BM25 run).")]
FirstStage = Annotated[Optional[Path], typer.Option(
    "--first-stage", help="TREC run whose candidates are re-ranked (e.g. BM25 top-1000); implies --protocol rerank.")]
TopK = Annotated[int, typer.Option(
    "--top-k", min=1, help="full: documents kept per query; rerank: first-stage candidates per query.")]
Metrics = Annotated[Optional[List[str]], typer.Option(
    "--metric", show_default=False, metavar="<name>",
    help="An ir_measures name (https://ir-measur.es): nDCG@10, RR@10, R@100, R@1000, AP, P@5, AP(rel=2)...; repeat "
    "for several. Default: nDCG@10, RR@10, R@100, R@1000, AP. Measures that need a relevance level and name "
    "none count the collection's (2 for TREC DL), and their name says so: AP there is AP(rel=2). The p-values "
    "test the first.")]
PerQuery = Annotated[bool, typer.Option("--per-query", help="Also print every query's values.")]
Runs = Annotated[Optional[List[Path]], typer.Option(
    "--run", show_default=False, metavar="<file>",
    help="An existing TREC run (qid Q0 docid rank score tag) to score with the same measures against the same "
    "judgements; repeat for several. After the models in the table and the tests (p-values against the first of "
    "--encoder, --model, --run); with --run alone no model is loaded.")]
RunOut = Annotated[Optional[Path], typer.Option(
    "--run-out", help="Write each model's TREC run; with several models FILE gets the model's tag before its suffix.")]
Permutations = Annotated[int, typer.Option(
    "--permutations", min=1, help="Random permutations of the paired permutation test (exact below 2^n).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the permutation test.")]


@command("evaluate")
def evaluate_command(
    model_dirs: ModelDirs = None,
    runs: Runs = None,
    revision: Revision = None,
    encoder: BaselineEncoder = None,
    head: Head = None,
    similarity: Similarity = None,
    trec: Trec = None,
    trec_dir: TrecDir = None,
    dataset: Dataset = None,
    split: Split = "test",
    protocol: Protocol = None,
    first_stage: FirstStage = None,
    top_k: TopK = 1000,
    metrics: Metrics = None,
    bits: Bits = None,
    float32: Float32 = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    device: Device = None,
    backend: Backend = BackendChoice.torch,
    as_json: AsJson = False,
    per_query: PerQuery = False,
    run_out: RunOut = None,
    cache_dir: CacheDir = None,
    cache: LegacyCache = None,
    no_cache: NoCache = False,
    permutations: Permutations = 10000,
    seed: Seed = 0,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Rank a test collection with one or more models and report nDCG@10, RR@10, R@100, R@1000 and AP (or --metric).

    Metrics are ir_measures names, computed by pytrec_eval over every judged query of the split: a query with
    nothing ranked scores 0 (and is counted), never silently dropped. Every output names its protocol.

    With --bits B (and by default for a model trained with --bits) the documents are ranked as the B-bit codes
    `compress --bits B` stores, against float32 query angles (as `score` ranks them); bytes/vector says so.

    Several models (and --run files: existing TREC runs, scored the same way) give one table (head parameters,
    bytes per stored vector, metrics) with p-values against the first on the first metric: a two-sided paired
    permutation test (scipy.stats.permutation_test) in the table, in --json also a paired t-test
    (scipy.stats.ttest_rel), each raw and Holm-adjusted over the models compared.

    Examples:

        qcompress evaluate --trec 2019                       # the default model; $QCOMPRESS_TREC_DIR or ir_datasets
        qcompress evaluate --encoder minilm --head none --similarity fidelity --dataset cranfield
        qcompress evaluate --model models/bec --model models/qbec --trec 2019 --json --metric nDCG@10 --metric AP
        qcompress evaluate --model models/qbec --dataset beir/scifact --split test
        qcompress evaluate --model models/qbec --dataset path/to/beir-folder --bits 4
        qcompress evaluate --run bm25.trec --run run.trec --dataset path/to/beir-folder
        qcompress evaluate --trec 2019 --backend onnx-int8     # the encoder run by ONNX Runtime in int8
    """
    model_dirs, runs, bits = model_dirs or [], runs or [], chosen_bits(bits, float32)
    check_model_options(encoder, value(head), value(similarity))
    dataset_id, protocol = _collection_and_protocol(value(trec), trec_dir, dataset, value(protocol), first_stage)
    from qcompress.evaluation.compare import compare  # not the package's: importing the submodule replaces it
    from qcompress.evaluation.protocols import UnknownDocuments

    _check_arguments(metrics, run_out, revision, model_dirs)
    scored_runs = _read_runs(runs)  # checked before any model loads
    collection = _load(dataset_id, split, value(trec), trec_dir)
    _warn_deeper_than(metrics or DEFAULT_METRICS, top_k, protocol, collection.relevance_level)
    first, first_stage_name = _first_stage(first_stage, protocol, collection)
    backend_options = {"backend": chosen_backend(backend, device), "export_dir": cache_folder(cache_dir, cache, False)}
    specs = _specs(model_dirs, encoder, value(head), value(similarity), max_length, trust_remote_code, revision,
                   baseline=encoder is not None or (not model_dirs and not runs), backend_options=backend_options)
    try:
        with progress_bars() as start:
            comparison = compare(
                specs, collection, protocol, first_stage=first, top_k=top_k, batch_size=batch_size,
                cache_dir=cache_folder(cache_dir, cache, no_cache), permutations=permutations, seed=seed,
                progress=start, measures=metrics or DEFAULT_METRICS, device=device, bits=bits, runs=scored_runs,
            )
    except UnknownDocuments as err:
        _unknown_first_stage_documents(err, first_stage, collection)
    _report(comparison, collection, top_k=top_k, first_stage=first_stage_name, run_out=run_out, as_json=as_json,
            per_query=per_query, permutations=permutations)


def _unknown_first_stage_documents(err, first_stage: Optional[str], collection) -> None:
    """A --first-stage run naming documents the collection lacks: one line naming its file and line (re-raised
    when there is no such file: then it is a bug)."""
    if first_stage is None:
        raise err
    line = _first_stage_line(first_stage, err.doc_ids[0])
    fail(f'{first_stage}:{line}: field "docid": doc "{err.doc_ids[0]}" is not in the corpus of {collection.name} '
         f"({len(err.doc_ids)} such candidates); the first-stage run names documents of another collection")


def _warn_deeper_than(metrics: List[str], top_k: int, protocol: str, relevance_level: int) -> None:
    """Warn about measures that count deeper than --top-k ranks (judged ranks every judged document instead)."""
    from qcompress.evaluation.metrics import deeper_than

    for name, cutoff in deeper_than(metrics, top_k, relevance_level) if protocol != "judged" else []:
        note(f"qcompress: warning: {name} counts the top {cutoff} documents of each query, but --top-k {top_k} ranks "
             f"only {top_k}: the others count as not retrieved (raise --top-k to {cutoff} for {name} itself)")


def _specs(model_dirs: List[str], encoder: Optional[str], head: Optional[str], similarity: Optional[str],
           max_length: Optional[int], trust_remote_code: bool, revision: Optional[str], baseline: bool,
           backend_options: dict) -> list:
    """The models to compare: each --model, after --encoder (the baseline) or the default model when `baseline`
    (there is no --model and no --run); `backend_options`: the backend and where its exports are kept."""
    specs = [model_spec(d, None, None, None, max_length, trust_remote_code, revision, **backend_options) for d in model_dirs]
    if baseline:  # the baseline (or the default model): first
        specs.insert(0, model_spec(None, encoder, head, similarity, max_length, trust_remote_code, **backend_options))
    return specs


def _report(comparison: "Comparison", collection: "Collection", *, top_k: int, first_stage: Optional[str],
            run_out: Optional[Path], as_json: bool, per_query: bool, permutations: int) -> None:
    run_files = _write_runs(comparison, run_out) if run_out is not None else {}
    for line in comparison.notes:
        note(line)
    if as_json:
        print_json(_json_output(comparison, collection, top_k=top_k, first_stage=first_stage, run_files=run_files,
                                per_query=per_query))
        return
    caption = _caption(comparison, collection, top_k=top_k, first_stage=first_stage, permutations=permutations)
    print_table(_results_table(comparison, collection, caption))
    if per_query:
        print_table(_per_query_table(comparison))
