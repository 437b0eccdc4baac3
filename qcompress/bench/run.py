"""`run_bench`: encode once, rank exactly with float32 once, then fit, encode and search with every method.

1. Pooled encoder outputs of the fit documents, the evaluated documents and every query set, through the pooled
   cache (`qcompress.cache`; with no cache folder, a temporary one for this run, so that the head's training
   reads the fit documents' outputs instead of encoding them again).
2. The truth: each query's exact float32 cosine top 100 of the evaluated documents (`topk_cosine`), a pseudo-query's
   own document left out.
3. The plan: for each method family, the settings that reach each budget (and the refusals), plus the settings
   with a size of their own (float32, float16, int8, binary); a setting that two budgets share is run once.
   Randomised families run once per seed, the others once.
4. Each run: fit on the fit documents (timed), encode the evaluated documents (the stored arrays give the bytes),
   search every query set for its top 100 (timed), measure recall@10 / @100 against the truth and NDCG@10 on the
   judged queries; written at once to the results folder when there is one (`qcompress.bench.results`), and
   skipped when a previous run with the same key is there.

The runs use one thread (torch and faiss): their fits and searches are small (a few thousand vectors), and
OpenMP's spin-waiting made them an order of magnitude slower whenever another process shared the cores (2 shared
cores, measured: an OPQ fit at 32 B took 14.5 s on one thread and 158 s on two; 40 distillation steps 9 s and
105 s). The encoder keeps torch's threads. Timings are therefore single-core numbers.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from qcompress.bench.data import BenchData, Queries, pseudo_query_set
from qcompress.bench.measures import RECALL_DEPTHS, ndcg_at_10, recall_at
from qcompress.bench.methods import METHODS, FitContext, Refusal, Setting, exact_topk, stored_bytes
from qcompress.bench.results import ResultStore, digest, provenance
from qcompress.cache import PooledCache, encoder_key, pool_texts
from qcompress.defaults import BENCH_BYTES, BENCH_HEAD_STEPS, BENCH_METHODS, BENCH_PSEUDO_QUERIES, BENCH_SEEDS
from qcompress.errors import InputError
from qcompress.recipes.peers import DEFAULT_RESCORE_K

__all__ = ["BenchConfig", "BenchResult", "QuerySet", "run_bench", "plan_runs", "DEPTH"]

DEPTH = max(RECALL_DEPTHS)  # documents each method returns per query

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)
OnRun = Callable[[str, int, int], None]  # (what runs now, runs done, runs in all)


@dataclass(frozen=True)
class BenchConfig:
    budgets: tuple[int, ...] = BENCH_BYTES
    methods: tuple[str, ...] = BENCH_METHODS
    seeds: tuple[int, ...] = BENCH_SEEDS
    pseudo_queries: int = BENCH_PSEUDO_QUERIES
    pseudo_query_kind: str = "documents"
    sample_seed: int = 0  # the pseudo-queries' draw (and spans)
    head_steps: int = BENCH_HEAD_STEPS
    rescore_k: int = DEFAULT_RESCORE_K

    def options(self, family: str) -> dict:
        """The settings of a family's runs that are not part of its Setting (they enter its results' key)."""
        return {"head": {"head_steps": self.head_steps}, "binary": {"rescore_k": self.rescore_k}}.get(family, {})


@dataclass
class QuerySet:
    queries: Queries
    pooled: Tensor
    truth: Tensor  # (m, DEPTH) indices of the float32 top DEPTH
    exclude: Tensor | None

    @property
    def name(self) -> str:
        return self.queries.name


@dataclass
class BenchResult:
    data: BenchData
    config: BenchConfig
    query_sets: list[QuerySet]
    runs: list[dict]
    refusals: list[Refusal]
    encoder: str
    max_length: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Planned:
    setting: Setting
    seed: int | None
    budgets: tuple[int, ...]


def plan_runs(config: BenchConfig, dim: int, n_fit: int) -> tuple[list[_Planned], list[Refusal]]:
    """Every (setting, seed) to run, with the budgets each setting was chosen for, and the budgets refused."""
    order: dict[Setting, list[int]] = {}
    refusals: list[Refusal] = []
    for name in config.methods:
        method = METHODS[name]
        for setting in method.fixed(dim):
            order.setdefault(setting, [])
        for budget in config.budgets:
            for item in method.settings(budget, dim, n_fit):
                if isinstance(item, Refusal):
                    refusals.append(item)
                else:
                    order.setdefault(item, []).append(budget)
    planned = []
    for setting, budgets in order.items():
        seeds = config.seeds if METHODS[setting.family].randomised else (None,)
        planned += [_Planned(setting, seed, tuple(budgets)) for seed in seeds]
    return planned, refusals


def _pool(model, texts: Sequence[str], role: str, cache: PooledCache, batch_size: int, progress: Progress | None,
          what: str) -> Tensor:
    advance = progress(f"encoding {what}", len(texts)) if progress else None
    return pool_texts(model, list(texts), cache=cache, batch_size=batch_size, on_batch=advance, role=role)


def _query_sets(data: BenchData, config: BenchConfig, model, cache: PooledCache, docs: Tensor, batch_size: int,
                progress: Progress | None) -> list[QuerySet]:
    sets = [pseudo_query_set(data.evaluated, config.pseudo_queries, config.pseudo_query_kind, config.sample_seed)]
    if data.queries is not None and len(data.queries):
        sets.append(data.queries)
    out = []
    for queries in sets:
        pooled = _pool(model, queries.texts, "query", cache, batch_size, progress, queries.name)
        exclude = torch.tensor(queries.exclude) if queries.exclude is not None else None
        out.append(QuerySet(queries, pooled, exact_topk(pooled, docs, DEPTH, exclude), exclude))
    return out


def _measure(found: Tensor, query_set: QuerySet, doc_ids: Sequence[str]) -> dict[str, list[float]]:
    values = {f"recall@{k}": recall_at(found, query_set.truth, k).tolist() for k in RECALL_DEPTHS}
    judged = query_set.queries.judged()
    if judged:
        values["ndcg@10"] = ndcg_at_10(found, judged, query_set.queries.ids, doc_ids, query_set.queries.qrels).tolist()
    return values


def _run_one(planned: _Planned, fit: Tensor, docs: Tensor, query_sets: list[QuerySet], doc_ids: Sequence[str],
             context: FitContext) -> dict:
    setting = planned.setting
    t0 = time.perf_counter()
    fitted = METHODS[setting.family].fit(setting, fit, planned.seed, context)
    t1 = time.perf_counter()
    stored = fitted.encode(docs)
    t2 = time.perf_counter()
    per_query, search_seconds = {}, 0.0
    for qs in query_sets:
        t3 = time.perf_counter()
        found = fitted.search(qs.pooled, stored, DEPTH, qs.exclude)
        search_seconds += time.perf_counter() - t3
        per_query[qs.name] = _measure(found, qs, doc_ids)
    return {"family": setting.family, "setting": dict(setting.params), "label": setting.label, "seed": planned.seed,
            "randomised": METHODS[setting.family].randomised, "fixed_size": setting.fixed_size,
            "budgets": list(planned.budgets), "bytes_stored": stored_bytes(stored, len(docs)),
            "bytes_resident": fitted.resident_bytes(stored) / len(docs), "fitted_numbers": fitted.fitted_numbers,
            "trained_parameters": fitted.trained_parameters, "fit_seconds": t1 - t0, "encode_seconds": t2 - t1,
            "search_seconds": search_seconds, "per_query": per_query}


def _data_key(model, data: BenchData, query_sets: list[QuerySet]) -> str:
    """A digest of what every run's numbers depend on besides the method: encoder, documents, queries."""
    return digest({"encoder": encoder_key(model), "fit": [data.fit.ids, data.fit.texts],
                   "evaluated": [data.evaluated.ids, data.evaluated.texts],
                   "queries": [[qs.name, qs.queries.ids, qs.queries.texts, qs.queries.qrels, qs.queries.exclude]
                               for qs in query_sets]})


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """torch and faiss on one thread inside the block (module docstring), as they were after it."""
    import faiss

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)


@contextlib.contextmanager
def _work_cache(cache_dir: str | Path | None, model) -> Iterator[tuple[PooledCache, Path, Path]]:
    """(the pooled cache, its folder, a scratch folder), the cache being a temporary one without `cache_dir`."""
    with tempfile.TemporaryDirectory(prefix="qcompress-bench-") as scratch:
        folder = Path(cache_dir) if cache_dir is not None else Path(scratch) / "cache"
        yield PooledCache(folder, model), folder, Path(scratch)


def run_bench(data: BenchData, config: BenchConfig = BenchConfig(), *, encoder: str | None = None,
              max_length: int | None = None, batch_size: int = 64, device: str | None = None,
              cache_dir: str | Path | None = None, out: str | Path | None = None,
              progress: Progress | None = None, on_run: OnRun | None = None,
              stored_only: bool = False) -> BenchResult:
    """Run every method of `config` on `data` (module docstring); with `out`, results are kept and reused
    (`stored_only`: only those, running nothing new: a report of what has finished)."""
    from qcompress.model import build_model

    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}", field="method")
    model = build_model(encoder, head="none", similarity="cosine", max_length=max_length, device=device)
    store = ResultStore(Path(out) if out is not None else None)
    with _work_cache(cache_dir, model) as (cache, cache_folder, scratch):
        fit = _pool(model, data.fit.texts, "document", cache, batch_size, progress, "fit documents")
        docs = fit if data.transductive else _pool(model, data.evaluated.texts, "document", cache, batch_size,
                                                    progress, "evaluated documents")
        query_sets = _query_sets(data, config, model, cache, docs, batch_size, progress)
        data_key = _data_key(model, data, query_sets)
        planned, refusals = plan_runs(config, int(fit.shape[1]), len(data.fit))
        context = FitContext(data.fit.ids, data.fit.texts, encoder=encoder, max_length=model.max_length,
                             device=device, cache_dir=cache_folder, work_dir=scratch, head_steps=config.head_steps,
                             rescore_k=config.rescore_k, store_encoder=not model.config.base_model)
        runs = []
        for i, item in enumerate(planned):
            label = item.setting.label + (f" seed {item.seed}" if item.seed is not None else "")
            key = digest({"data": data_key, "setting": item.setting.label, "seed": item.seed,
                          "options": config.options(item.setting.family)})
            result = store.get(item.setting.label, item.seed, key)
            if on_run is not None:
                on_run(label + (" (done before)" if result is not None else ""), i, len(planned))
            if result is None and stored_only:
                continue
            if result is None:
                with single_threaded():
                    result = dict(_run_one(item, fit, docs, query_sets, data.evaluated.ids, context), key=key,
                                  **provenance())
                store.put(item.setting.label, item.seed, result)
            runs.append(dict(result, budgets=list(item.budgets)))  # this plan's budgets
        if on_run is not None:
            on_run("done", len(planned), len(planned))
    return BenchResult(data, config, query_sets, runs, refusals, encoder or "minilm", model.max_length,
                       list(data.notes))
