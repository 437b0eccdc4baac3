#!/usr/bin/env bash
# The main job on the bundled default, offline: which compression, at how many bytes per vector? `qcompress bench`
# fits every method (float16, int8, binary with rescoring, PCA + Lloyd-Max scalar codes, PQ, OPQ, RaBitQ, LSH, the
# label-free distilled quantum head, its low-bit angle codes) on one half of the bundled Cranfield corpus, compresses
# the other half at 16 / 32 / 48 / 64 / 128 bytes per vector, and measures how much of the offline
# all-MiniLM-L6-v2's own float32 ranking each keeps (recall@10 / @100 over every evaluated document as a
# pseudo-query) and NDCG@10 on Cranfield test's judged queries, with 95% intervals; then the frontier plot.
#
#   bash recipes/quickstart.sh [OUT_DIR]          (default runs/quickstart; finished runs are kept: rerun to resume)
#
# The paper's own comparison (QBEC against BEC, briefly trained) is recipes/qbec-vs-bec.sh; the multi-seed
# experiments are in docs/results.md.
set -euo pipefail
out=${1:-runs/quickstart}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 QCOMPRESS_CACHE=${QCOMPRESS_CACHE:-$out/cache}
qcompress bench cranfield --out "$out" --plot "$out/frontier.png"
