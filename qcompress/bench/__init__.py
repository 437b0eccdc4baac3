"""`qcompress bench`: which compression, at how many bytes per vector (issue 24).

An inductive benchmark: every method is fit on documents disjoint from those it is evaluated on, and measured by
label-free recall against the float32 encoder's own exact ranking over thousands of pseudo-queries (and by NDCG@10
where judgements are given), at equal bytes per stored vector, with 95% intervals over queries and seeds.

    data.py       fit / evaluated documents (a seeded split, a second corpus, or transductive), queries, checks
    methods/      the method families and the settings that reach each byte budget
    topk.py       top-k over stored codes a chunk at a time; a query's own document left out
    measures.py   recall@k against the truth, NDCG@10, intervals
    run.py        run_bench: encode, rank exactly, fit / encode / search every method
    results.py    one JSON per finished run, reused when rerun
    report.py     the summary rows, the table, the JSON object, the plot

Example (a few seconds on a laptop; the command line is `qcompress bench`):
    >>> from qcompress.bench import BenchConfig, load_bench_data, run_bench, summary_rows
    >>> data = load_bench_data("cranfield")                                              # doctest: +SKIP
    >>> result = run_bench(data, BenchConfig(budgets=(32,), methods=("float32", "pca-scalar")))  # doctest: +SKIP
"""

from qcompress._lazy import attach

__all__ = ["BenchConfig", "BenchResult", "run_bench", "load_bench_data", "BenchData", "summary_rows",
           "bench_json", "results_table", "plot_frontier", "METHODS"]

__getattr__, __dir__ = attach(__name__, {
    "BenchConfig": "run", "BenchResult": "run", "run_bench": "run",
    "BenchData": "data", "load_bench_data": "data",
    "summary_rows": "report", "bench_json": "report", "results_table": "report", "plot_frontier": "report",
    "METHODS": "methods",
})
