"""`qcompress evaluate`: rank a test collection with one or more models, metrics and paired tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.table import Table

from qcompress.cli._common import (
    ENCODER_HELP, app, check_model_options, cli_errors, model_spec, print_json, print_table, progress_bars, stderr,
)
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, AsJson, BatchSize, CacheDir, Head, MaxLength, Revision, Similarity, TrustRemoteCode,
)
from qcompress.data import Collection, load_collection
from qcompress.data.trecdl import EVALUATION_YEARS, trec_dl_dataset
from qcompress.errors import InputError
from qcompress.evaluation import METRICS, SIGNIFICANCE_METRIC, Comparison, choose_protocol, compare
from qcompress.formats import read_run, write_run


_PROTOCOL_NOTES = {
    "judged": "judged-only re-ranking: each query's judged documents, as in the paper; not comparable with "
    "full-corpus retrieval or BM25 re-ranking",
    "full": "full-corpus ranking (exact top-k)",
    "pool": "ranking of the whole local passage pool (optimistic against the full MS MARCO corpus; for "
    "relative comparisons only)",
    "rerank": "re-ranking of a first-stage run",
}


def _collection_and_protocol(
    trec: Optional[str], trec_dir: Optional[Path], dataset: Optional[str], protocol: Optional[str],
    first_stage: Optional[Path],
) -> tuple[str, str]:
    """(dataset id, protocol) named by --trec/--trec-dir or --dataset, --protocol and --first-stage."""
    if trec is not None and dataset is not None:
        raise ValueError("--trec and --dataset both name the collection; give one")
    if trec is not None and trec not in EVALUATION_YEARS:
        raise ValueError(f"--trec {trec}: choose 2019 or 2020")
    if trec is not None:
        dataset_id = trec_dl_dataset(trec, local=trec_dir is not None)
    else:
        dataset_id = dataset or "cranfield"
    try:
        return dataset_id, choose_protocol(dataset_id, protocol, first_stage=first_stage)
    except InputError as err:  # the library names the parameter at fault; a user of this command typed flags
        if err.field == "dataset":
            raise ValueError("--protocol pool ranks the passage pool of a local TREC DL folder (--trec YEAR "
                             "--trec-dir DIR); use --protocol full to rank a whole corpus") from None
        if err.field == "first_stage":
            raise ValueError(f"--first-stage is only used by --protocol rerank, not {protocol}") from None
        raise ValueError(err.reason) from None


def _run_path(path: Path, tag: str, several: bool) -> Path:
    # One model: exactly --run-out; several: one file each, the model's tag before the suffix.
    return path.with_name(f"{path.stem}.{tag}{path.suffix}") if several else path


def _write_runs(comparison: Comparison, run_out: Path) -> dict[str, str]:
    """Each model's TREC run, tagged with its label's tag: {label: path written}."""
    written = {}
    for m in comparison.models:
        path = _run_path(run_out, m.tag, len(comparison.models) > 1)
        write_run(path, m.evaluation.run, m.tag)
        written[m.label] = str(path)
    return written


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None  # JSON has no inf/NaN: None where a test is undefined


def _json_output(comparison: Comparison, collection: Collection, *, top_k: int, first_stage: Optional[str],
                 run_files: dict[str, str], per_query: bool) -> dict:
    models, protocol = comparison.models, comparison.protocol
    rows = []
    for m in models:
        rows.append({"label": m.label, "tag": m.tag, "model": m.description, "head_parameters": m.head_parameters,
                     "bytes_per_vector": m.bytes_per_vector, "empty_queries": len(m.evaluation.empty_queries)})
        if m.label in run_files:
            rows[-1]["run_out"] = run_files[m.label]
    out: dict = {
        "dataset": collection.name,
        "split": collection.split,
        "protocol": protocol,
        "queries": len(comparison.qids),
        "relevance_level": collection.relevance_level,
        "top_k": top_k if protocol != "judged" else None,
        "first_stage": first_stage,
        "judged_without_text": comparison.judged_without_text,
        "models": rows,
        "metrics": {m.label: m.evaluation.metrics for m in models},
    }
    if comparison.significance:
        out["significance"] = {
            label: {"against": models[0].label, "metric": SIGNIFICANCE_METRIC, "difference": test.difference,
                    "randomization_p": test.randomization_p, "permutations": test.permutations, "seed": test.seed,
                    "t": _finite(test.t), "t_test_p": _finite(test.t_p)}
            for label, test in comparison.significance.items()
        }
    if len(models) == 1:
        out.update(models[0].evaluation.metrics)  # flat metric keys, e.g. "ndcg_cut_10", for one model
    if per_query:
        out["per_query"] = {m.label: m.evaluation.per_query for m in models}
    return out


def _caption(comparison: Comparison, collection: Collection, *, top_k: int, first_stage: Optional[str],
             permutations: int) -> str:
    protocol, unranked = comparison.protocol, comparison.judged_without_text
    return (
        _PROTOCOL_NOTES[protocol]
        + (f" ({first_stage}, top {top_k} per query)" if protocol == "rerank" else "")
        + (f"; {unranked:,} judgements without text could not be ranked" if unranked else "")
        + f"; relevance level {collection.relevance_level}"
        + (f"; p: paired randomization test on NDCG@10 vs {comparison.models[0].label} ({permutations} "
           "permutations)" if comparison.significance else "")
    )


def _results_table(comparison: Comparison, collection: Collection, caption: str) -> Table:
    table = Table(
        title=f"{collection.name} ({collection.split}), protocol {comparison.protocol}: "
        f"{len(comparison.qids)} queries",
        caption=caption,
    )
    table.add_column("model")
    for col in ("head", "dim", "head params", "bytes/vector", *METRICS.values()):
        table.add_column(col, justify="right")
    if comparison.significance:
        table.add_column("p", justify="right")
    for m in comparison.models:
        size = m.bytes_per_vector
        cells = [
            m.label, m.description["head"], str(m.description["dim"]), f"{m.head_parameters:,}",
            f"{size['float32']:,}" + (f" (u8 {size['uint8']:,})" if size["uint8"] else ""),
            *(f"{m.evaluation.metrics[k]:.4f}" for k in METRICS),
        ]
        if comparison.significance:
            test = comparison.significance.get(m.label)
            cells.append(f"{test.randomization_p:.4f}" if test else "-")
        table.add_row(*cells)
    return table


def _per_query_table(comparison: Comparison) -> Table:
    """One model: every metric per query; several: NDCG@10 per query and model."""
    models = comparison.models
    detail = Table(title=f"Per query, protocol {comparison.protocol}")
    detail.add_column("query")
    metrics = list(METRICS) if len(models) == 1 else ["ndcg_cut_10"]
    for m in models:
        for k in metrics:
            detail.add_column(METRICS[k] if len(models) == 1 else f"{m.label} NDCG@10", justify="right")
    for q in comparison.qids:
        detail.add_row(q, *(f"{m.evaluation.per_query[q][k]:.4f}" for m in models for k in metrics))
    return detail


# -- the command's own options (the shared ones are in qcompress.cli.options) ------------------------------------
ModelDirs = Annotated[List[str], typer.Option(
    "--model", help="A model folder from `qcompress train`; repeat to compare several (p-values against the first).")]
BaselineEncoder = Annotated[Optional[str], typer.Option(
    "--encoder", help=ENCODER_HELP + " Placed first (the baseline) when combined with --model.")]
Trec = Annotated[Optional[str], typer.Option(
    "--trec",
    help="2019 or 2020: the judged queries of TREC DL passage. From the local folder --trec-dir (or "
    "$QCOMPRESS_TREC_DIR; its passage pool need not hold every judged passage, see qcompress.data.trecdl) where "
    "one is given, else ir_datasets msmarco-passage/trec-dl-YEAR/judged (needs the MS MARCO corpus). "
    "Default protocol: rerank with --trec-dir (its BM25 top 100), judged with ir_datasets.")]
TrecDir = Annotated[Optional[Path], typer.Option(
    "--trec-dir", envvar="QCOMPRESS_TREC_DIR",
    help="Local TREC DL folder (qrels, queries, passage pool, BM25 runs) used by --trec.")]
Dataset = Annotated[Optional[str], typer.Option(
    "--dataset",
    help="'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or "
    "an ir_datasets id. Default protocol: full for cranfield and folders, judged for ir_datasets ids.")]
Split = Annotated[str, typer.Option(
    "--split", help="Qrels split of a BEIR folder or cranfield (ignored for ir_datasets ids).")]
Protocol = Annotated[Optional[str], typer.Option(
    "--protocol",
    help="judged: re-rank each query's judged documents (the paper's protocol; NOT comparable with full "
    "ranking). full: rank the whole corpus. pool: rank the whole passage pool of a local TREC DL folder "
    "(optimistic against the full MS MARCO corpus: for relative comparisons). rerank: re-rank a "
    "--first-stage run's top --top-k per query (default first stage: the collection's own, e.g. the local "
    "TREC DL BM25 run).")]
FirstStage = Annotated[Optional[Path], typer.Option(
    "--first-stage", help="TREC run whose candidates are re-ranked (e.g. BM25 top-1000); implies --protocol rerank.")]
TopK = Annotated[int, typer.Option(
    "--top-k", help="full: documents kept per query; rerank: first-stage candidates per query.")]
PerQuery = Annotated[bool, typer.Option("--per-query", help="Also print every query's values.")]
RunOut = Annotated[Optional[Path], typer.Option(
    "--run-out", help="Write each model's TREC run; with several models FILE gets the model's tag before its suffix.")]
Permutations = Annotated[int, typer.Option("--permutations", help="Permutations of the paired randomization test.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the randomization test.")]


@app.command("evaluate")
@cli_errors
def evaluate_command(
    model_dirs: ModelDirs = [],  # noqa: B006 - typer reads the default; it is never mutated
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
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    as_json: AsJson = False,
    per_query: PerQuery = False,
    run_out: RunOut = None,
    cache_dir: CacheDir = None,
    permutations: Permutations = 10000,
    seed: Seed = 0,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Rank a test collection with one or more models and report NDCG@10, RR@10, R@100, R@1000 and MAP.

    Metrics come from pytrec_eval over every judged query of the split: a query with nothing ranked scores 0
    (and is counted), never silently dropped. RR, recall and MAP count grades >= the collection's relevance
    level as relevant (2 for TREC DL); NDCG uses the graded labels. Every output names its protocol.

    Several models give one comparison table (head parameters, bytes per stored vector, metrics) with a
    two-sided paired randomization test (and a paired t-test) on per-query NDCG@10 against the first model.

    Examples:

        qcompress evaluate --encoder minilm --head none --similarity fidelity --dataset cranfield
        qcompress evaluate --model models/bec --model models/qbec --trec 2019 --json
        qcompress evaluate --model models/qbec --trec 2020 --protocol rerank --first-stage bm25.trec
    """
    check_model_options(encoder, head, similarity)
    if not model_dirs and encoder is None:
        raise ValueError("name a model: --model DIR (repeatable) or --encoder NAME --head none")
    dataset_id, protocol = _collection_and_protocol(trec, trec_dir, dataset, protocol, first_stage)
    for name, value in (("--top-k", top_k), ("--batch-size", batch_size), ("--permutations", permutations)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")

    collection = load_collection(dataset_id, split, trec_dir=trec_dir)
    if not any(grade > 0 for judged in collection.qrels.values() for grade in judged.values()):
        # Not an error (a split may be judged all-irrelevant on purpose), but every metric will be 0: say why.
        stderr.print(f"qcompress: warning: {collection.name} split {split!r}: the qrels hold no positive judgement "
                     "(every grade is 0 or below), so every metric is 0", highlight=False, markup=False,
                     soft_wrap=True)
    first = read_run(first_stage) if first_stage is not None else None
    first_stage_name = str(first_stage) if first_stage is not None else None
    if protocol == "rerank" and first is None:
        if collection.first_stage is None:
            raise ValueError(
                f"--protocol rerank needs --first-stage RUN (a TREC run file, e.g. BM25 top-1000); "
                f"{collection.name} ships no first-stage run"
            )
        first_stage_name = f"{collection.name} first stage (shipped)"
    specs = []
    if encoder is not None:  # the baseline: first
        specs.append(model_spec(None, encoder, head, similarity, max_length, trust_remote_code))
    if revision is not None and len(model_dirs) != 1:
        raise ValueError("--revision goes with one --model (a Hub id)")
    specs += [model_spec(d, None, None, None, max_length, trust_remote_code, revision) for d in model_dirs]
    with progress_bars() as start:
        comparison = compare(
            specs, collection, protocol, first_stage=first, top_k=top_k, batch_size=batch_size,
            cache_dir=cache_dir if cache_dir is not None and str(cache_dir).strip() else None,
            permutations=permutations, seed=seed, progress=start,
        )

    run_files = _write_runs(comparison, run_out) if run_out is not None else {}
    for note in comparison.notes:
        stderr.print(note, highlight=False, markup=False, soft_wrap=True)
    if as_json:
        print_json(_json_output(comparison, collection, top_k=top_k, first_stage=first_stage_name,
                                run_files=run_files, per_query=per_query))
        return
    caption = _caption(comparison, collection, top_k=top_k, first_stage=first_stage_name, permutations=permutations)
    print_table(_results_table(comparison, collection, caption))
    if per_query:
        print_table(_per_query_table(comparison))
