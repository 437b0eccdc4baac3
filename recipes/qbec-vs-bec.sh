#!/usr/bin/env bash
# The paper's comparison in miniature, offline (the README's main job before issue 24): train QBEC and BEC briefly
# on Cranfield train with the offline all-MiniLM-L6-v2, compress the corpus with each, and evaluate both on
# Cranfield test (full ranking of the 1,398 documents), printing one comparison table (head parameters, bytes per
# vector, NDCG@10, p-values against the untrained encoder).
#
#   bash recipes/qbec-vs-bec.sh [OUT_DIR]          (default runs/qbec-vs-bec; QUICKSTART_STEPS=N to change the length)
#
# A short demonstration, not a result: docs/results.md holds the multi-seed experiments.
set -euo pipefail
out=${1:-runs/qbec-vs-bec}
steps=${QUICKSTART_STEPS:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
corpus="$here/qcompress/data/cranfield/corpus.jsonl"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 QCOMPRESS_CACHE=${QCOMPRESS_CACHE:-$out/cache}

# Short runs: 2 trained layers (the paper trains 4), 128 tokens, 8 queries x (positive + 3 negatives) per step
# keep this to minutes on 2 CPU cores. Untrained-encoder work (mining negatives) is cached and shared.
common=(--dataset cranfield --split train --train-layers 2 --max-length 128 --batch-size 8 --negatives 3
        --max-steps "$steps" --seed 42 --overwrite)
for variant in QBEC BEC; do
  name=$(echo "$variant" | tr 'A-Z' 'a-z')
  echo "== train $variant ($steps steps) -> $out/$name" >&2
  qcompress train --variant "$variant" "${common[@]}" -o "$out/$name"
  echo "== compress the corpus with $variant -> $out/$name-corpus.parquet" >&2
  qcompress compress "$corpus" --model "$out/$name" -o "$out/$name-corpus.parquet" --max-length 128 --force \
    --cache-dir "$QCOMPRESS_CACHE"   # evaluate below reuses these pooled outputs instead of encoding the corpus again
done

# The untrained encoder without a head (the paper's BT, 384 float32) comes first: the p-values compare each
# compressed model with it. Its pooled outputs are already cached from mining the training negatives.
echo "== evaluate on Cranfield test (full ranking)" >&2
qcompress evaluate --encoder minilm --head none --similarity cosine --model "$out/qbec" --model "$out/bec" \
  --dataset cranfield --split test --max-length 128 --cache-dir "$QCOMPRESS_CACHE" --run-out "$out/run.trec"
