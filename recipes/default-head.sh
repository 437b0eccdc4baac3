#!/usr/bin/env bash
# The head that ships with qcompress (qcompress/default_model/): a 384 -> 128 quantum head for the offline
# all-MiniLM-L6-v2 with a PCA mixing (centring and a rotation onto the principal axes, fitted on the same text),
# trained label-free (train --loss distill) on the Cranfield corpus, the text that ships with qcompress. The head is
# 12 KB (3,072 parameters); the fitted rotation 578 KB (384 x 384 float32): the few-KB mixings measured worse (see
# docs/results.md). The encoder is named by its Hub id, never copied. About 5 minutes on 2 CPU cores.
#
#   bash recipes/default-head.sh            # rewrites qcompress/default_model/
#
# Its numbers: `qcompress evaluate` (Cranfield) and recipes/frontier.toml's "distilled d=128 pca" rows.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
qcompress train --loss distill --encoder minilm --head quantum --dim 128 --mixing pca --dataset cranfield \
  --seed 42 --no-store-encoder -o "$work/head"
mkdir -p qcompress/default_model
cp "$work/head/qcompress.json" "$work/head/head.safetensors" "$work/head/mixing.safetensors" qcompress/default_model/
ls -l qcompress/default_model/
