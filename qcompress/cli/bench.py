"""`qcompress bench`: every compression at equal bytes per vector, fit on documents disjoint from those it is
evaluated on, measured by label-free recall against the float32 encoder (qcompress.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from qcompress.cli._common import (
    cache_folder, check_writable, command, note, print_json, print_table, progress, usage_error,
)
from qcompress.cli.options import DEFAULT_BATCH_SIZE, AsJson, BatchSize, CacheDir, Device, MaxLength, NoCache
from qcompress.defaults import (
    BENCH_BYTES, BENCH_HEAD_STEPS, BENCH_METHODS, BENCH_PSEUDO_QUERIES, BENCH_SEEDS, PSEUDO_QUERY_KINDS,
)

Corpus = Annotated[str, typer.Argument(
    metavar="CORPUS", show_default=False,
    help="The documents: 'cranfield' (bundled), a BEIR folder, a local TREC DL name (trec-dl-2019...), an "
    "ir_datasets id, or a JSONL/TSV file of texts. A collection brings its judged queries of --split, unless "
    "--queries is given.")]
Split = Annotated[str, typer.Option("--split", help="Which judged queries of a collection CORPUS to use.")]
QueryFiles = Annotated[Optional[List[str]], typer.Option(
    "--queries", metavar="FILE", show_default=False,
    help="Queries (JSONL or TSV, `id<TAB>text`) to rank besides the pseudo-queries, instead of the collection's; "
    "repeatable (e.g. DL19 and DL20 over one passage pool).")]
QrelsFiles = Annotated[Optional[List[str]], typer.Option(
    "--qrels", metavar="FILE", show_default=False,
    help="Judgements of --queries (TREC `qid 0 docid rel` or BEIR `query-id corpus-id score`): NDCG@10 is "
    "reported when given; repeatable.")]
FitCorpus = Annotated[Optional[str], typer.Option(
    "--fit-corpus", metavar="CORPUS",
    help="Fit every method on this corpus (same forms as CORPUS) and evaluate on the whole of CORPUS.")]
FitFraction = Annotated[Optional[float], typer.Option(
    "--fit-fraction", min=0.0, max=1.0, show_default=False,
    help="Fit on this seeded random share of CORPUS and evaluate on the rest (documents with the same text stay "
    "together). Default 0.5, unless --fit-corpus or --transductive.")]
Transductive = Annotated[bool, typer.Option(
    "--transductive", help="Fit on the evaluated documents themselves (what most published tables do; a method "
    "can then memorise them). Without it, fit and evaluated documents sharing an id or a text are refused.")]
Budgets = Annotated[Optional[List[int]], typer.Option(
    "--bytes", metavar="B", min=1, show_default=False,
    help=f"A budget in bytes per stored document vector; repeatable. Default: {' '.join(map(str, BENCH_BYTES))}.")]
Methods = Annotated[Optional[List[str]], typer.Option(
    "--method", metavar="NAME", show_default=False,
    help=f"Run only these methods; repeatable. Methods: {', '.join(BENCH_METHODS)}. float32, float16, int8 and "
    "binary have sizes of their own and are run once whatever the budgets.")]
Seeds = Annotated[Optional[List[int]], typer.Option(
    "--seed", metavar="S", show_default=False,
    help=f"Seeds of the randomised methods (pq, opq, rabitq, lsh, head); repeatable. Default: "
    f"{' '.join(map(str, BENCH_SEEDS))}.")]
PseudoQueries = Annotated[int, typer.Option(
    "--pseudo-queries", min=1, help="Evaluated documents drawn as pseudo-queries (all of them when fewer).")]
PseudoQueryKind = Annotated[str, typer.Option(
    "--pseudo-query-kind", metavar="KIND",
    help=f"{' or '.join(PSEUDO_QUERY_KINDS)}: a drawn document is the query itself, or a seeded span of 4-16 of "
    "its words. Either way its own document is left out of the rankings.")]
SplitSeed = Annotated[int, typer.Option(
    "--split-seed", help="Seed of the fit / evaluated split, of the pseudo-queries' draw and of their spans.")]
HeadSteps = Annotated[int, typer.Option(
    "--head-steps", min=1, help="Training steps of each distilled head (batch 128, head learning rate 3e-3).")]
Plot = Annotated[Optional[Path], typer.Option(
    "--plot", metavar="PNG", help="Write the frontier plot: recall@10 (and NDCG@10) against bytes per vector.")]
Out = Annotated[Optional[Path], typer.Option(
    "--out", metavar="DIR", help="Keep each finished run as DIR/results/*.json; a rerun skips the runs found there "
    "with the same settings (Ctrl-C keeps what finished).")]
Encoder = Annotated[Optional[str], typer.Option(
    "--encoder", help="The encoder every method compresses (hub id, local folder, or 'minilm' for the offline "
    "all-MiniLM-L6-v2, the default), pooled, normalised and prompted as its sentence-transformers configuration "
    "says.")]


def _check(methods: List[str], pseudo_query_kind: str, plot: Optional[Path], out: Optional[Path]) -> None:
    unknown = [m for m in methods if m not in BENCH_METHODS]
    if unknown:
        usage_error(f"--method {unknown[0]}: unknown; choose from {', '.join(BENCH_METHODS)}")
    if pseudo_query_kind not in PSEUDO_QUERY_KINDS:
        usage_error(f"--pseudo-query-kind {pseudo_query_kind}: choose {' or '.join(PSEUDO_QUERY_KINDS)}")
    if plot is not None:
        check_writable(plot, "--plot")
    if out is not None:
        check_writable(out / "results" / "x.json", "--out")


def _run(data, config, **options):
    """run_bench with one progress display on stderr: a bar per encoding stage, then one for the runs, which
    names the run in progress."""
    from qcompress.bench import run_bench

    with progress() as bars:
        task = None

        def start(description: str, total: int):
            stage = bars.add_task(description, total=total)
            return lambda n: bars.advance(stage, n)

        def on_run(what: str, done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bars.add_task("runs", total=total)
            bars.update(task, completed=done, description=f"run {min(done + 1, total)}/{total}: {what}")

        return run_bench(data, config, progress=start, on_run=on_run, **options)


@command("bench")
def bench_command(
    corpus: Corpus,
    split: Split = "test",
    queries: QueryFiles = None,
    qrels: QrelsFiles = None,
    fit_corpus: FitCorpus = None,
    fit_fraction: FitFraction = None,
    transductive: Transductive = False,
    budgets: Budgets = None,
    methods: Methods = None,
    seeds: Seeds = None,
    pseudo_queries: PseudoQueries = BENCH_PSEUDO_QUERIES,
    pseudo_query_kind: PseudoQueryKind = "documents",
    split_seed: SplitSeed = 0,
    head_steps: HeadSteps = BENCH_HEAD_STEPS,
    encoder: Encoder = None,
    max_length: MaxLength = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    device: Device = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    as_json: AsJson = False,
    plot: Plot = None,
    out: Out = None,
) -> None:
    """Which compression, at how many bytes per vector: every method fit on documents disjoint from those it is
    evaluated on, ranked by how much of the float32 encoder's own ranking it keeps.

    Each method (float32, float16, int8, binary with rescoring, PCA + Lloyd-Max scalar codes at every dims x bits
    split, PQ, OPQ, RaBitQ, LSH, the distilled quantum head) is fit on the fit documents, compresses the evaluated
    documents into B bytes per vector for each budget it can reach, and searches them. Reported per method and
    budget: recall@10 and recall@100 against the float32 encoder's exact top k over the evaluated documents, for
    pseudo-queries (drawn evaluated documents, their own document left out) and for the given queries; NDCG@10 when
    they are judged; bytes stored and held in memory per vector; fit and search seconds. Every value has a 95%
    interval (over queries, and over seeds for randomised methods). Every output says whether the run was
    inductive (fit on documents disjoint from the evaluated ones) or transductive.

    Examples:

        qcompress bench cranfield                                  # fit on half, evaluate on the other half
        qcompress bench cranfield --transductive --bytes 32 --bytes 64 --method pca-scalar --method opq
        qcompress bench corpus.jsonl --queries q.tsv --qrels qrels.txt --plot frontier.png --out runs/bench
        qcompress bench trec-dl-2019 --fit-corpus trec-dl-21 --queries dl19.tsv --queries dl20.tsv --qrels q19.txt --qrels q20.txt
    """
    methods = methods or list(BENCH_METHODS)
    _check(methods, pseudo_query_kind, plot, out)
    if transductive and (fit_corpus is not None or fit_fraction is not None):
        usage_error("--transductive fits on the evaluated documents themselves: drop --fit-corpus / --fit-fraction")
    if fit_corpus is not None and fit_fraction is not None:
        usage_error("--fit-corpus and --fit-fraction both say what to fit on; give one")
    if qrels and not queries:
        usage_error("--qrels judges the --queries: give them too")
    from qcompress.bench import BenchConfig, bench_json, load_bench_data, plot_frontier, results_table

    data = load_bench_data(corpus, split=split, queries=queries or [], qrels=qrels or [], fit_corpus=fit_corpus,
                           fit_fraction=fit_fraction, transductive=transductive, seed=split_seed)
    note(f"qcompress bench: {data.collection}: {data.describe()}")
    config = BenchConfig(budgets=tuple(budgets or BENCH_BYTES), methods=tuple(methods),
                         seeds=tuple(seeds or BENCH_SEEDS), pseudo_queries=pseudo_queries,
                         pseudo_query_kind=pseudo_query_kind, sample_seed=split_seed, head_steps=head_steps)
    try:
        result = _run(data, config, encoder=encoder, max_length=max_length, batch_size=batch_size, device=device,
                      cache_dir=cache_folder(cache_dir, None, no_cache), out=out)
    except KeyboardInterrupt:
        if out is not None:
            note(f"qcompress bench: interrupted; finished runs are kept in {out / 'results'} (run again to go on)")
        raise
    for line in result.notes:
        note(f"note: {line}")
    if plot is not None:
        note(f"plot: {plot_frontier(result, plot)}")
    if as_json:
        print_json(bench_json(result))
    else:
        print_table(results_table(result))
