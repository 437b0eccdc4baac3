"""`qcompress evaluate`: rank a test collection with one or more models, metrics and paired tests."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from qcompress.cli._common import (
    ENCODER_HELP, HEAD_HELP, SIMILARITY_HELP, app, check_model_options, cli_errors, load_cli_model, print_json,
    print_table, progress_bars, stderr,
)


_PROTOCOL_NOTES = {
    "judged": "judged-only re-ranking: each query's judged documents, as in the paper; not comparable with "
    "full-corpus retrieval or BM25 re-ranking",
    "full": "full-corpus ranking (exact top-k)",
    "pool": "ranking of the whole local passage pool (optimistic against the full MS MARCO corpus; for "
    "relative comparisons only)",
    "rerank": "re-ranking of a first-stage run",
}


def _encoder_label(name: str) -> str:
    from qcompress.encoder import offline_minilm_path, resolve_encoder

    offline = offline_minilm_path()
    if offline is not None and resolve_encoder(name) == str(offline):
        return "all-MiniLM-L6-v2"
    return Path(name.rstrip("/")).name or name


def _tag(label: str) -> str:
    """A model label as a TREC run tag and file-name part: no whitespace or path characters."""
    return re.sub(r"[^\w.+-]", "_", label)


def _run_path(path: Path, tag: str, several: bool) -> Path:
    # One model: exactly --run-out; several: one file each, the model's tag before the suffix.
    return path.with_name(f"{path.stem}.{tag}{path.suffix}") if several else path


@app.command("evaluate")
@cli_errors
def evaluate_command(
    model_dirs: List[str] = typer.Option(
        [], "--model",
        help="A model folder from `qcompress train`; repeat to compare several (p-values against the first).",
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help=ENCODER_HELP + " Placed first (the baseline) when combined with --model."
    ),
    head: Optional[str] = typer.Option(None, "--head", help=HEAD_HELP),
    similarity: Optional[str] = typer.Option(None, "--similarity", help=SIMILARITY_HELP),
    trec: Optional[str] = typer.Option(
        None, "--trec",
        help="2019 or 2020: the judged queries of TREC DL passage. From the local folder --trec-dir (or "
        "$QCOMPRESS_TREC_DIR; its passage pool need not hold every judged passage, see qcompress.data.trecdl) where "
        "one is given, else ir_datasets msmarco-passage/trec-dl-YEAR/judged (needs the MS MARCO corpus). "
        "Default protocol: rerank with --trec-dir (its BM25 top 100), judged with ir_datasets.",
    ),
    trec_dir: Optional[Path] = typer.Option(
        None, "--trec-dir", envvar="QCOMPRESS_TREC_DIR",
        help="Local TREC DL folder (qrels, queries, passage pool, BM25 runs) used by --trec.",
    ),
    dataset: Optional[str] = typer.Option(
        None, "--dataset",
        help="'cranfield' (bundled; the default), a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or "
        "an ir_datasets id. Default protocol: full for cranfield and folders, judged for ir_datasets ids.",
    ),
    split: str = typer.Option(
        "test", "--split", help="Qrels split of a BEIR folder or cranfield (ignored for ir_datasets ids)."
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol",
        help="judged: re-rank each query's judged documents (the paper's protocol; NOT comparable with full "
        "ranking). full: rank the whole corpus. pool: rank the whole passage pool of a local TREC DL folder "
        "(optimistic against the full MS MARCO corpus: for relative comparisons). rerank: re-rank a "
        "--first-stage run's top --top-k per query (default first stage: the collection's own, e.g. the local "
        "TREC DL BM25 run).",
    ),
    first_stage: Optional[Path] = typer.Option(
        None, "--first-stage",
        help="TREC run whose candidates are re-ranked (e.g. BM25 top-1000); implies --protocol rerank.",
    ),
    top_k: int = typer.Option(
        1000, "--top-k", help="full: documents kept per query; rerank: first-stage candidates per query."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per text. Default: the model's (256)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    per_query: bool = typer.Option(False, "--per-query", help="Also print every query's values."),
    run_out: Optional[Path] = typer.Option(
        None, "--run-out",
        help="Write each model's TREC run; with several models FILE gets the model's tag before its suffix.",
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache", envvar="QCOMPRESS_CACHE",
        help="Folder caching pooled encoder outputs per (encoder weights, max length, text): a repeated evaluation "
        "with the same encoder skips the encoder. Default: $QCOMPRESS_CACHE, else no cache.",
    ),
    permutations: int = typer.Option(10000, "--permutations", help="Permutations of the paired randomization test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the randomization test."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
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
    from qcompress.data import load_collection
    from qcompress.evaluation import (
        METRICS, check_protocol, default_protocol, evaluate, paired_randomization_test, paired_t_test,
    )
    from qcompress.formats import read_run, write_run
    from qcompress.data.trecdl import EVALUATION_SETS, EVALUATION_YEARS, trec_dl_dataset

    check_model_options(encoder, head, similarity)
    if not model_dirs and encoder is None:
        raise ValueError("name a model: --model DIR (repeatable) or --encoder NAME --head none")
    if trec is not None and dataset is not None:
        raise ValueError("--trec and --dataset both name the collection; give one")
    if trec is not None and trec not in EVALUATION_YEARS:
        raise ValueError(f"--trec {trec}: choose 2019 or 2020")
    if first_stage is not None and protocol is None:
        protocol = "rerank"
    if trec is not None:
        dataset_id = trec_dl_dataset(trec, local=trec_dir is not None)
    else:
        dataset_id = dataset or "cranfield"
    local_trec = dataset_id in EVALUATION_SETS
    if protocol is None:
        protocol = default_protocol(dataset_id)
    if protocol == "pool" and not local_trec:
        raise ValueError("--protocol pool ranks the passage pool of a local TREC DL folder (--trec YEAR --trec-dir "
                         "DIR); use --protocol full to rank a whole corpus")
    if protocol != "rerank":  # rerank's first stage is checked once the collection (which may ship one) is loaded
        check_protocol(protocol, first_stage)
    for name, value in (("--top-k", top_k), ("--batch-size", batch_size), ("--permutations", permutations)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")

    collection = load_collection(dataset_id, split, trec_dir=trec_dir)
    first = read_run(first_stage) if first_stage is not None else None
    first_stage_name = str(first_stage) if first_stage is not None else None
    if protocol == "rerank" and first is None:
        if collection.first_stage is None:
            raise ValueError(
                f"--protocol rerank needs --first-stage RUN (a TREC run file, e.g. BM25 top-1000); "
                f"{collection.name} ships no first-stage run"
            )
        first, first_stage_name = collection.first_stage, f"{collection.name} first stage (shipped)"
    cache_root = cache_dir if cache_dir is not None and str(cache_dir).strip() else None

    specs: list[tuple[Optional[str], Optional[str]]] = ([(None, encoder)] if encoder is not None else [])
    specs += [(d, None) for d in model_dirs]
    rows: list[dict] = []
    results = []
    labels: set[str] = set()
    with progress_bars() as start:
        for model_dir, enc in specs:
            model = load_cli_model(model_dir, enc, head if enc else None, similarity if enc else None,
                                    max_length, trust_remote_code)
            if model_dir is not None:
                label = Path(model_dir.rstrip("/")).name or model_dir
            else:
                label = f"{_encoder_label(enc)}:{model.similarity}"
            base, n = label, 2
            while label in labels or _tag(label) in {_tag(x) for x in labels}:  # tags name the run files
                label, n = f"{base}#{n}", n + 1
            labels.add(label)
            cache = None
            if cache_root is not None:
                from qcompress.cache import PooledCache

                cache = PooledCache(cache_root, model)
            result = evaluate(
                model, collection, protocol, first_stage=first, top_k=top_k, batch_size=batch_size, cache=cache,
                progress=lambda what, total, label=label: start(f"{label}: {what}", total),
            )
            head_params = sum(p.numel() for p in model.head.parameters()) if model.head is not None else 0
            rows.append({
                "label": label,
                "tag": _tag(label),
                "model": model.describe(),
                "head_parameters": head_params,
                "bytes_per_vector": {
                    "float32": 4 * model.dim,
                    "uint8": model.dim if model.output_kind == "angles" else None,
                },
                "empty_queries": len(result.empty_queries),
            })
            results.append(result)
            del model

    n_queries = len(collection.qrels)
    if run_out is not None:
        for row, result in zip(rows, results):
            path = _run_path(run_out, row["tag"], len(rows) > 1)
            write_run(path, result.run, row["tag"])
            row["run_out"] = str(path)
    significance = {}
    qids = list(collection.qrels)
    base_ndcg = [results[0].per_query[q]["ndcg_cut_10"] for q in qids]
    for row, result in zip(rows[1:], results[1:]):
        ndcg = [result.per_query[q]["ndcg_cut_10"] for q in qids]
        t, t_p = paired_t_test(ndcg, base_ndcg)
        significance[row["label"]] = {
            "against": rows[0]["label"],
            "metric": "ndcg_cut_10",
            "difference": result.metrics["ndcg_cut_10"] - results[0].metrics["ndcg_cut_10"],
            "randomization_p": paired_randomization_test(ndcg, base_ndcg, n=permutations, seed=seed),
            "permutations": permutations,
            "seed": seed,
            "t": t if math.isfinite(t) else None,  # JSON has no inf/NaN: None where the test is undefined
            "t_test_p": t_p if math.isfinite(t_p) else None,
        }
    if protocol == "judged" and results[0].judged_without_text:
        total = sum(len(docs) for docs in collection.qrels.values())
        stderr.print(
            f"note: {results[0].judged_without_text:,} of {total:,} judgements name documents without text in "
            f"{collection.name}; they cannot be ranked (NDCG's ideal ranking still counts them)",
            highlight=False, markup=False, soft_wrap=True,
        )
    for row in rows:
        if row["empty_queries"]:
            stderr.print(f"{row['label']}: {row['empty_queries']} of {n_queries} judged queries had no candidates "
                         "and score 0", highlight=False, markup=False, soft_wrap=True)

    if as_json:
        out: dict = {
            "dataset": collection.name,
            "split": collection.split,
            "protocol": protocol,
            "queries": n_queries,
            "relevance_level": collection.relevance_level,
            "top_k": top_k if protocol != "judged" else None,
            "first_stage": first_stage_name,
            "judged_without_text": results[0].judged_without_text if protocol == "judged" else None,
            "models": rows,
            "metrics": {row["label"]: result.metrics for row, result in zip(rows, results)},
        }
        if significance:
            out["significance"] = significance
        if len(rows) == 1:
            out.update(results[0].metrics)  # flat metric keys, e.g. "ndcg_cut_10", for one model
        if per_query:
            out["per_query"] = {row["label"]: result.per_query for row, result in zip(rows, results)}
        print_json(out)
        return

    table = Table(
        title=f"{collection.name} ({collection.split}), protocol {protocol}: {n_queries} queries",
        caption=_PROTOCOL_NOTES[protocol]
        + (f" ({first_stage_name}, top {top_k} per query)" if protocol == "rerank" else "")
        + (f"; {results[0].judged_without_text:,} judgements without text could not be ranked"
           if protocol == "judged" and results[0].judged_without_text else "")
        + f"; relevance level {collection.relevance_level}"
        + (f"; p: paired randomization test on NDCG@10 vs {rows[0]['label']} ({permutations} permutations)"
           if significance else ""),
    )
    table.add_column("model")
    for col in ("head", "dim", "head params", "bytes/vector", *METRICS.values()):
        table.add_column(col, justify="right")
    if significance:
        table.add_column("p", justify="right")
    for row, result in zip(rows, results):
        size = row["bytes_per_vector"]
        cells = [
            row["label"], row["model"]["head"], str(row["model"]["dim"]), f"{row['head_parameters']:,}",
            f"{size['float32']:,}" + (f" (u8 {size['uint8']:,})" if size["uint8"] else ""),
            *(f"{result.metrics[m]:.4f}" for m in METRICS),
        ]
        if significance:
            sig = significance.get(row["label"])
            cells.append(f"{sig['randomization_p']:.4f}" if sig else "-")
        table.add_row(*cells)
    print_table(table)
    if per_query:
        detail = Table(title=f"Per query, protocol {protocol}")
        detail.add_column("query")
        metrics = list(METRICS) if len(rows) == 1 else ["ndcg_cut_10"]
        for row in rows:
            for m in metrics:
                detail.add_column(METRICS[m] if len(rows) == 1 else f"{row['label']} NDCG@10", justify="right")
        for q in qids:
            detail.add_row(q, *(f"{r.per_query[q][m]:.4f}" for r in results for m in metrics))
        print_table(detail)
