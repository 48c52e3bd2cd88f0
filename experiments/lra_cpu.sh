#!/usr/bin/env bash
# Every registered variant, 3 seeds, on four CPU-sized tasks (preset `cpu` of each config): ListOps
# (generated, length ≤ 256), Pathfinder-32 (generated, hard), associative recall (length 256), byte LM
# (causal variants only). Two compares at a time (lane 1: pathfinder then bytelm; lane 2: listops
# then recall), about 50 min on 2 CPU cores. Writes runs/lra-cpu/<task>/leaderboard.{md,csv}
# (+ <task>.log, wall_s), then experiments/results/lra-cpu.{md,csv} (experiments/lra_table.py).
#   bash experiments/lra_cpu.sh        # rerunning resumes: finished runs are summarized, not retrained
#   VARIANTS=dense,local SEEDS=0 OUT=/tmp/lra RESULTS=/tmp/lra/lra-cpu bash experiments/lra_cpu.sh   # a quick try
set -uo pipefail
ENV=$(env | grep -E '^(OUT|VARIANTS|SEEDS|RESULTS)=' | tr '\n' ' ')
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/lra-cpu}
ARGS="--variants ${VARIANTS:-all} --seeds ${SEEDS:-0,1,2}"
mkdir -p "$OUT"

task() {  # generate the task's data (not timed with the runs), then its compare, timed into wall_s
  python -c "from attn_zoo import configs, data; data.load(configs.load('configs/$1.py:dense,cpu').data)" || return
  local start=$(date +%s)
  # shellcheck disable=SC2086
  attn-zoo compare --config "configs/$1.py:cpu" $ARGS --workdir "$OUT/$1" > "$OUT/$1.log" 2>&1 \
    || { echo "$1: compare failed, see $OUT/$1.log; tabulating its finished runs" >&2
         attn-zoo summarize "$OUT/$1" --out "$OUT/$1" > /dev/null; return 1; }
  echo $(( $(date +%s) - start )) > "$OUT/$1/wall_s"
  echo "$1: $(cat "$OUT/$1/wall_s") s"
}

(task pathfinder; task bytelm) & lane1=$!
(task listops; task recall) & lane2=$!
wait $lane1; wait $lane2
python experiments/lra_table.py --root "$OUT" --out "${RESULTS:-experiments/results/lra-cpu}" --compare-args "$ARGS" \
  --command "${ENV}bash experiments/lra_cpu.sh"
mkdir -p experiments/results/lra-cpu  # each task's leaderboard (per-run wall time, memory, params)
for t in listops pathfinder recall bytelm; do cp "$OUT/$t/leaderboard.md" "experiments/results/lra-cpu/$t.md"; done
