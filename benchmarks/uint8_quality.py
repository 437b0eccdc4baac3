"""NDCG@10 of 8-bit angle codes against float32 angles, on a local collection (default: bundled Cranfield test).

    python benchmarks/uint8_quality.py                       # MiniLM QBT (encoded angles, no head)
    python benchmarks/uint8_quality.py --model runs/quickstart/qbec --max-length 128

Full ranking of the corpus by log-fidelity (exact top-1000 with qcompress.search.topk), pytrec_eval NDCG@10 over
every judged query. Three storages: float32 queries and corpus; the corpus as codes round(theta/pi*255) (what
`qcompress compress --uint8` writes) with float32 queries; both as codes. Prints one line per storage and the
difference to float32. Pooled encoder outputs are cached (--cache), so a rerun skips the encoder.
"""

from __future__ import annotations

import argparse
import json

import torch

from qcompress.cache import PooledCache, encode
from qcompress.data import load_collection
from qcompress.evaluation import evaluate_run
from qcompress.formats import dequantize_angles, quantize_angles
from qcompress.model import build_model, load_model
from qcompress.search import topk


def ndcg10(collection, qids, doc_ids, queries: torch.Tensor, corpus: torch.Tensor, codes: bool) -> float:
    scores, indices = topk(queries, corpus, 1000, corpus_codes=codes)
    run = {q: {doc_ids[j]: s for j, s in zip(indices[i].tolist(), scores[i].tolist())} for i, q in enumerate(qids)}
    mean, _ = evaluate_run(run, collection.qrels, collection.relevance_level, ["ndcg_cut_10"])
    return mean["ndcg_cut_10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="A model folder (fidelity). Default: MiniLM encoded angles (QBT).")
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-length", type=int, default=None, help="Tokens per text (default: the model's).")
    parser.add_argument("--cache", default=".qcompress-cache", help="Pooled-output cache folder.")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.model:
        model = load_model(args.model)
        label = args.model
    else:
        model = build_model("minilm", head="none", similarity="fidelity", normalize=False)  # QBT: no normalisation
        label = "minilm QBT"
    if args.max_length:
        model.config = model.config.replace(max_length=args.max_length)
    if model.similarity != "fidelity":
        raise SystemExit(f"{label} compares by {model.similarity}; 8-bit angle codes need a fidelity model")
    collection = load_collection(args.dataset, split=args.split)
    cache = PooledCache(args.cache, model)
    qids = list(collection.queries)
    doc_ids = list(collection.corpus)
    with torch.no_grad():
        queries = encode(model, [collection.queries[q] for q in qids], cache=cache)
        corpus = encode(model, [collection.corpus[d] for d in doc_ids], cache=cache)

    corpus_codes = quantize_angles(corpus)
    query_codes = dequantize_angles(quantize_angles(queries))
    results = {
        "float32": ndcg10(collection, qids, doc_ids, queries, corpus, codes=False),
        "uint8 corpus": ndcg10(collection, qids, doc_ids, queries, corpus_codes, codes=True),
        "uint8 corpus + queries": ndcg10(collection, qids, doc_ids, query_codes, corpus_codes, codes=True),
    }
    base = results["float32"]
    print(f"{label}: {args.dataset} {args.split}, full ranking, {len(qids)} queries, {corpus.shape[1]} qubits")
    for name, value in results.items():
        print(f"  NDCG@10 {name:<24} {value:.4f}  (change {value - base:+.4f})")
    print(json.dumps({"model": label, "dataset": args.dataset, "split": args.split, **results}))


if __name__ == "__main__":
    main()
