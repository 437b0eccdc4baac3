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

Example (the offline MiniLM on eight documents, fit on four, evaluated on the other four; the command line is
`qcompress bench`):
    >>> import json, pathlib, tempfile
    >>> texts = ["lift on a wing", "drag of a wing", "heat transfer in a layer", "boundary layer flow",
    ...          "shock waves at mach 3", "supersonic flow over a cone", "buckling of thin shells", "stress in a plate"]
    >>> corpus = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
    >>> _ = corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\\n" for i, t in enumerate(texts)))
    >>> data = load_bench_data(str(corpus))
    >>> data.describe()
    'inductive: fit on 4 documents disjoint from the 4 evaluated'
    >>> result = run_bench(data, BenchConfig(budgets=(2,), methods=("float32", "pca-scalar"), pseudo_queries=4))
    >>> sorted((row["bytes_stored"], row["label"]) for row in summary_rows(result))
    [(2.0, 'pca-scalar dims=2 bits=8'), (2.0, 'pca-scalar dims=4 bits=4'), (1536.0, 'float32')]
    >>> summary_rows(result)[-1]["measures"]["pseudo-queries"]["recall@10"]["mean"]
    1.0
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
