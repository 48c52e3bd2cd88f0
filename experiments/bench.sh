#!/usr/bin/env bash
# The attention benchmark on this machine: every registered variant against jax.nn.dot_product_attention
# (and PyTorch's CPU flash kernel when torch is installed), B=1, H=8, D=64, one process per measurement.
#   main    -> bench-cpu:        fp32, N = 1K-8K               (~10 min on a 2-core CPU)
#   long    -> bench-cpu-long:   fp32, N = 16K, 32K, each variant until a timeout or OOM ends it
#   causal  -> bench-cpu-causal: causal fp32, N = 1K-8K
#   bf16    -> bench-cpu-bf16:   bf16, N = 1K, 2K
# Usage: bash experiments/bench.sh [main] [long] [causal] [bf16]   (default: main long)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results}
[ $# -gt 0 ] || set -- main long
for what in "$@"; do
  case $what in
    main)   name=bench-cpu;        opts=(--lengths 1024,2048,4096,8192 --repeats 3 --timeout 400) ;;
    long)   name=bench-cpu-long;   opts=(--lengths 16384,32768 --repeats 1 --timeout 150) ;;
    causal) name=bench-cpu-causal; opts=(--lengths 1024,2048,4096,8192 --repeats 3 --timeout 400 --causal) ;;
    bf16)   name=bench-cpu-bf16;   opts=(--lengths 1024,2048 --repeats 3 --timeout 400 --dtype bfloat16) ;;
    *) echo "unknown: $what (main|long|causal|bf16)"; exit 2 ;;
  esac
  rm -f "$OUT/$name.jsonl"
  cmd=(attn-zoo bench --variants all "${opts[@]}" --out "$OUT" --name "$name")
  echo "${cmd[*]}"
  "${cmd[@]}"
done
