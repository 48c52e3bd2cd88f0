#!/usr/bin/env bash
# Small ListOps comparison: dense vs local (window 32) vs blockwise on generated ListOps
# (length < 256, 5000/500/500 rows), preset `small` (2 layers, emb 64, 4 heads, batch 32).
# Prints a markdown table (majority-class rate first) and writes val-accuracy curves.
#   experiments/listops_small.sh              # quick: STEPS=150, a few minutes on 2 CPU cores
#   STEPS=800 experiments/listops_small.sh    # experiments/results/listops-small.md (~20 min)
# Rerunning resumes or reuses finished workdirs under $OUT.
set -euo pipefail
STEPS=${STEPS:-150}
OUT=${OUT:-runs/listops-small-$STEPS}
DATA=${DATA:-runs/data/listops-small}
cd "$(dirname "$0")/.."

if [ ! -f "$DATA/basic_test.tsv" ]; then
  attn-zoo data listops --out "$DATA" --train 5000 --val 500 --test 500 --min-length 32 --max-length 256
fi
for variant in dense local blockwise; do
  extra=()
  [ "$variant" = local ] && extra=(--config.attention.window=32 --config.attention.block=32)
  attn-zoo train --config "configs/listops.py:$variant,small" --workdir "$OUT/$variant" \
    --config.data.dir="$DATA" --config.train.num_steps="$STEPS" "${extra[@]}"
done
python - "$DATA" <<'PY'
import collections, sys
with open(f"{sys.argv[1]}/basic_test.tsv") as f:
    labels = [line.rsplit("\t", 1)[1].strip() for line in list(f)[1:]]
label, n = collections.Counter(labels).most_common(1)[0]
print(f"majority class on test: {label} ({n / len(labels):.4f})")
PY
python -m attn_zoo.train.summary --plot "$OUT/val_accuracy.png" "$OUT/dense" "$OUT/local" "$OUT/blockwise"
