#!/usr/bin/env bash
# Associative recall at length 1024 on CPU: dense vs local vs linear (configs/recall.py defaults).
# Usage: experiments/recall_compare.sh [variants...]   (default: dense local linear)
# Each run is capped at ${CAP:-720} s wall: SIGTERM saves a checkpoint and the curve so far stays
# in runs/recall-<variant>/metrics.jsonl; rerunning resumes. Then plots the curves.
set -u
cd "$(dirname "$0")/.."
VARIANTS=${*:-dense local linear}
for v in $VARIANTS; do
  start=$(date +%s)
  timeout -s TERM "${CAP:-720}" python -m attn_zoo.cli train --config "configs/recall.py:$v" --workdir "runs/recall-$v" \
    > "runs/recall-$v.log" 2>&1
  echo "$v: exit $? after $(( $(date +%s) - start )) s" | tee -a runs/recall-times.txt
done
python experiments/plot_curves.py --title "associative recall, L=1024 (CPU)" \
  --out experiments/results/recall_curves.png --table experiments/results/recall_table.md \
  $(for v in $VARIANTS; do echo "runs/recall-$v"; done)
