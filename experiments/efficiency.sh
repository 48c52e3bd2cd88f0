#!/usr/bin/env bash
# LRA's efficiency table on this machine: one training step of LRA's text model (4 layers, emb 256,
# mlp 1024, 4 heads) per registered variant at N = 1K, 2K, 3K, 4K, batch 2 (LRA: batch 32 over
# 16 TPU v3 chips, i.e. 2 per chip), against `dense` in the same run, beside LRA's published
# ratios; two interleaved passes over all variants (the machine is shared: a slow spell hits all).
# Workers run under tcmalloc when installed (apt install libtcmalloc-minimal4; the report names the
# malloc): under glibc's, re-faulting XLA's temp buffers every step slows dense 1.7x at 4K.
# Writes experiments/results/efficiency-cpu.{md,csv,jsonl}. 46 min on a 2-core CPU under tcmalloc.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results}
rm -f "$OUT/efficiency-cpu.jsonl"
cmd=(attn-zoo bench --mode train-step --config configs/text.py --variants all
     --lengths 1024,2048,3072,4096 --batch 2 --repeats 3 --rounds 2 --timeout 900 --out "$OUT" --name efficiency-cpu)
echo "${cmd[*]}"
"${cmd[@]}"
