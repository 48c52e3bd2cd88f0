#!/usr/bin/env bash
# The main job: exact attention against local, linear and performer attention on associative recall
# (configs/recall.py preset `main`: 128 tokens, 8 key-value pairs at the start, 32 queries at random
# later positions, mostly beyond local's window of 8; 16 keys and 16 values, chance 1/16; 1 layer,
# emb 64, batch 32, 800 steps), 3 seeds each. Prints the leaderboard (mean ± 95% t-interval, ties
# with the best, chance) and writes $OUT/curves.png (validation accuracy per variant, mean and range
# over seeds), $OUT/leaderboard.{md,csv} and $OUT/pareto.png.
#   bash experiments/main_job.sh          # rerunning reuses finished runs under $OUT
set -euo pipefail
OUT=${OUT:-runs/main}
SEEDS=${SEEDS:-0,1,2}
cd "$(dirname "$0")/.."
mkdir -p "$(dirname "$OUT")"
start=$(date +%s)
attn-zoo compare --config configs/recall.py:main --variants blockwise,local,linear,performer \
  --seeds "$SEEDS" --workdir "$OUT" > "$OUT.log" 2>&1 || { tail -20 "$OUT.log"; exit 1; }
cat "$OUT/leaderboard.md"
echo
echo "curves: $OUT/curves.png; log: $OUT.log; $(( $(date +%s) - start )) s"
