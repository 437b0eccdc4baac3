"""Several models on one collection under one protocol: what each costs, how each ranks, and paired tests.

`compare` is what `qcompress evaluate` runs: each model is loaded in turn (one in memory at a time), labelled
uniquely (labels double as TREC run tags and file names), evaluated through the pooled-output cache on ir_measures
measures, and tested against the first model query by query on the first measure (`stats.scipy_paired_test`),
with Holm's correction over the models compared (`stats.holm`). Existing TREC runs (`evaluate --run`) join the
comparison after the models: scored by the same measures against the same judgements (`metrics.measure_run`),
tested the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from qcompress.cache import PooledCache
from qcompress.scalar_codes import check_bits
from qcompress.encoder import offline_minilm_path, resolve_encoder
from qcompress.errors import InputError
from qcompress.evaluation.protocols import check_protocol
from qcompress.evaluation.ranking import Evaluation, Progress, evaluate
from qcompress.evaluation.metrics import DEFAULT_MEASURES, measure_names, measure_run
from qcompress.evaluation.stats import PairedTest, holm, scipy_paired_test
from qcompress.model import ModelSpec

__all__ = ["SIGNIFICANCE_METRIC", "ModelResult", "Significance", "Comparison", "compare", "run_tag"]

SIGNIFICANCE_METRIC = DEFAULT_MEASURES[0]  # the measure the paired tests compare unless others are named


@dataclass(frozen=True)
class ModelResult:
    """One model of a comparison: its unique label, what it is, what it stores, how it ranked."""

    label: str  # unique within the comparison
    tag: str  # the label as a TREC run tag and file-name part (`run_tag`)
    description: dict  # qcompress.model.ModelConfig.describe(); for an existing run, {"run": its file}
    head_parameters: int | None  # None for an existing run
    # "float32", "uint8" (None for vectors: only angles have codes), and "codes" and "bits": the low-bit codes the
    # documents were ranked as (None when they were not); None for an existing run
    bytes_per_vector: dict[str, int | None] | None
    evaluation: Evaluation

    @property
    def is_run(self) -> bool:
        """An existing TREC run (`evaluate --run`), not a model qcompress ranked with."""
        return "run" in self.description


@dataclass(frozen=True)
class Significance:
    """One later model against the first: the paired tests' raw p-values and their Holm-adjusted values (over
    the models compared with the first; equal to the raw ones when there is one)."""

    test: PairedTest
    randomization_p_holm: float
    t_p_holm: float


@dataclass(frozen=True)
class Comparison:
    """The models of one `compare` call, in order, and each later model's paired tests against the first."""

    protocol: str
    qids: list[str]  # the judged queries, in the collection's order: the pairing of the tests
    models: list[ModelResult]
    measures: list[str]  # the canonical ir_measures names of every model's metrics, in order
    metric: str  # the measure the tests compare: measures[0]
    significance: dict[str, Significance]  # label -> tests on `metric` against models[0]
    notes: list[str]  # what a reader should know about the numbers: judged documents without text, empty queries

    @property
    def judged_without_text(self) -> int | None:
        """`judged` protocol: the judgements that could not be ranked (no text); None under other protocols."""
        return self.models[0].evaluation.judged_without_text if self.protocol == "judged" else None


def run_tag(label: str) -> str:
    """A model label as a TREC run tag and file-name part: no whitespace or path characters.

    Example:
        >>> run_tag("all-MiniLM-L6-v2:cosine")
        'all-MiniLM-L6-v2_cosine'
    """
    return re.sub(r"[^\w.+-]", "_", label)


def _encoder_name(encoder: str) -> str:
    offline = offline_minilm_path()
    if offline is not None and resolve_encoder(encoder) == str(offline):
        return "all-MiniLM-L6-v2"
    return Path(encoder.rstrip("/")).name or encoder


def _unique_label(label: str, taken: Sequence[str]) -> str:
    """`label`, or `label#2`, `label#3`... where a label or its tag is taken."""
    base, n = label, 2
    while label in taken or run_tag(label) in {run_tag(x) for x in taken}:  # tags name the run files
        label, n = f"{base}#{n}", n + 1
    return label


def _evaluate_spec(spec: ModelSpec, taken: Sequence[str], collection, protocol: str, *, cache_dir, device,
                   progress: Progress | None, bits: int | None, **options) -> ModelResult:
    model = spec.load(device)
    # The folder's name, or encoder:similarity.
    label = _unique_label(spec.label if spec.model_dir is not None else
                          f"{_encoder_name(spec.encoder)}:{model.similarity}", taken)
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    labelled = None if progress is None else (lambda what, total: progress(f"{label}: {what}", total))
    angles = model.output_kind == "angles"
    bits = bits if angles else 0  # vectors have no codes: a note says so (`_notes`)
    result = evaluate(model, collection, protocol, cache=cache, progress=labelled, bits=bits, **options)
    codec = result.codec
    return ModelResult(
        label=label,
        tag=run_tag(label),
        description=model.describe(),
        head_parameters=model.head_parameters(),
        bytes_per_vector={"float32": 4 * model.dim, "uint8": model.dim if angles else None,
                          "codes": codec.bytes_per_vector if codec is not None else None,
                          "bits": codec.bits if codec is not None else None},
        evaluation=result,
    )


def _evaluate_run(name: str, run: Mapping[str, Mapping[str, float]], taken: Sequence[str], collection,
                  measures: Sequence[str]) -> ModelResult:
    """An existing run, labelled by its file's name, scored as the models' runs are."""
    mean, per_query = measure_run(run, collection.qrels, measures, collection.relevance_level)
    label = _unique_label(Path(name).name or name, taken)
    evaluation = Evaluation(protocol="run", run={q: dict(d) for q, d in run.items()}, metrics=mean,
                            per_query=per_query, empty_queries=[q for q in collection.qrels if not run.get(q)])
    return ModelResult(label=label, tag=run_tag(label), description={"run": name}, head_parameters=None,
                       bytes_per_vector=None, evaluation=evaluation)


def _notes(collection, protocol: str, models: list[ModelResult], bits: int | None) -> list[str]:
    notes = []
    unranked = models[0].evaluation.judged_without_text
    if protocol == "judged" and unranked:
        total = sum(len(docs) for docs in collection.qrels.values())
        notes.append(f"note: {unranked:,} of {total:,} judgements name documents without text in "
                     f"{collection.name}; they cannot be ranked (NDCG's ideal ranking still counts them)")
    for m in models:
        codec = m.evaluation.codec
        if codec is not None:
            notes.append(f"{m.label}: documents ranked as {codec.bits}-bit codes ({codec.bytes_per_vector:,} bytes a "
                         f"vector), levels {m.evaluation.levels_source}; float32 query angles against them")
        elif bits and not m.is_run and m.bytes_per_vector["uint8"] is None:
            notes.append(f"{m.label}: cosine vectors, ranked as float32 (--bits codes qubit angles)")
        if m.evaluation.empty_queries:
            notes.append(f"{m.label}: {len(m.evaluation.empty_queries)} of {len(collection.qrels)} judged queries "
                         "had no candidates and score 0")
    return notes


def compare(
    specs: Sequence[ModelSpec],
    collection,
    protocol: str = "full",
    *,
    first_stage: Mapping[str, Mapping[str, float]] | None = None,
    top_k: int = 1000,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    permutations: int = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    measures: Sequence[str] = DEFAULT_MEASURES,
    device: str | None = None,
    bits: int | None = None,
    runs: Sequence[tuple[str, Mapping[str, Mapping[str, float]]]] = (),
) -> Comparison:
    """Evaluate each model of `specs` on `collection` (a `qcompress.data.Collection`) under `protocol` on the
    ir_measures `measures` (`metrics.measure_run`) and test every later model against the first on per-query
    values of the first measure (`scipy_paired_test` with `permutations` and `seed`; Holm-adjusted over the
    later models).

    `first_stage`, `top_k`, `batch_size` and `progress` are `rank`'s; `rerank` without `first_stage` uses the
    collection's own. `cache_dir` holds pooled encoder outputs (`qcompress.cache.PooledCache`), None for none;
    `device` is where the models run (default: cuda when available). `bits` ranks the documents of angle models
    as the low-bit codes `compress --bits` stores (`ranking.rank`; 0: float32; None: as each model stores them by
    default; cosine models are ranked as float32, with a note). `runs`, (name, run) pairs of existing TREC runs,
    are scored after the models (`protocol` does not apply to them; with runs alone it is "runs"). The arguments
    are checked before any model is loaded.
    """
    if not specs and not runs:
        raise InputError("specs is empty: name at least one model (or run)")
    names = list(dict.fromkeys(measure_names(measures, collection.relevance_level)))
    if not names:
        raise InputError("measures is empty: name at least one measure")
    for name, value in (("top_k", top_k), ("batch_size", batch_size), ("permutations", permutations)):
        if value <= 0:
            raise InputError(f"{name} must be positive, got {value}")
    if bits:
        check_bits(bits)
    shipped = getattr(collection, "first_stage", None) if protocol == "rerank" else None
    if specs:
        check_protocol(protocol, first_stage if first_stage is not None else shipped)
    else:
        protocol = "runs"

    models: list[ModelResult] = []
    for spec in specs:
        models.append(_evaluate_spec(spec, [m.label for m in models], collection, protocol, cache_dir=cache_dir,
                                     device=device, progress=progress, first_stage=first_stage, top_k=top_k,
                                     batch_size=batch_size, metrics=names, bits=bits))
    for name, run in runs:
        models.append(_evaluate_run(name, run, [m.label for m in models], collection, names))
    qids, metric = list(collection.qrels), names[0]
    base = [models[0].evaluation.per_query[q][metric] for q in qids]
    tests = [scipy_paired_test([m.evaluation.per_query[q][metric] for q in qids], base, permutations=permutations,
                               seed=seed) for m in models[1:]]
    holm_randomization, holm_t = holm([t.randomization_p for t in tests]), holm([t.t_p for t in tests])
    significance = {m.label: Significance(test, holm_randomization[i], holm_t[i])
                    for i, (m, test) in enumerate(zip(models[1:], tests))}
    return Comparison(protocol, qids, models, names, metric, significance, _notes(collection, protocol, models, bits))
