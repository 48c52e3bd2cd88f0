#!/usr/bin/env bash
# The calibrated CPU suite: every registered variant that fits each task, the learning rate swept
# on validation per variant, 3 seeds at the chosen rate (attn-zoo sweep). Cumulative: each finished
# run leaves a record keyed by its full config under experiments/results/zoo-cpu/<entry>/records/,
# a recorded run is never trained again, and experiments/zoo_table.py rebuilds zoo-cpu.{md,csv} and
# the MQAR figure from the records; so a later session (or another machine: SHARD=i/n) extends the
# suite instead of redoing it. Commit the records as they land.
#   bash experiments/zoo_cpu.sh                    # every entry, in order
#   ONLY=mqar-L64 bash experiments/zoo_cpu.sh      # the entries whose name contains ONLY
# Calibration (what each preset needs for the exact baseline to learn): experiments/results/zoo-cpu/calibration.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RES=${RES:-experiments/results/zoo-cpu}
WORK=${WORK:-runs/zoo-cpu}
SHARD=${SHARD:-0/1}
LRS=${LRS:-3e-3,1e-2}
SEEDS=${SEEDS:-0,1,2}
ONLY=${ONLY:-}
mkdir -p "$RES"

entry() {  # name config [overrides...] variants: one sweep, timed into $RES/wall.log
  local name=$1 config=$2 variants=${*: -1} extra=("${@:3:$#-3}")
  [[ -n "$ONLY" && "$name" != *"$ONLY"* ]] && return 0
  local start
  start=$(date +%s)
  attn-zoo sweep --config "$config" --variants "$variants" --grid "train.learning_rate=$LRS" \
    --seeds "$SEEDS" --workdir "$WORK/$name" --records "$RES/$name/records" --out "$RES/$name" \
    --shard "$SHARD" "${extra[@]}" >> "$WORK/$name.log" 2>&1 || { echo "$name: sweep failed, see $WORK/$name.log"; return 1; }
  echo "$name $SHARD: $(( $(date +%s) - start )) s ($(date -u +%FT%TZ))" | tee -a "$RES/wall.log"
}

mkdir -p "$WORK"
# Zoology's figure first: exact, windowed and two fixed-state variants, N growing (4, 8, 16) at L = 64
# (the cheapest cells), then the longer cells (pairs beyond local's window; N = 32 at L = 128, more
# pairs than linear attention held at L = 64), then the fixed-state ones at
# d_model 128 (recovery), then every variant at the first cell and the other tasks.
FIGURE=blockwise,local,linear,performer
# The byte-LM cell's preset, one string: its leaderboard is keyed by the override text.
BYTELM="configs/bytelm.py:cpu --config.model.num_layers=2 --config.train.num_steps=1000 --config.train.batch_size=16"
FIXED=linear,performer
entry mqar-L64-N4-d64    configs/mqar.py:cpu,L64,d64                                    "$FIGURE"
entry mqar-L64-N8-d64    configs/mqar.py:cpu,L64,d64 --config.data.num_kv_pairs=8       blockwise,linear,performer,local
entry mqar-L64-N16-d64   configs/mqar.py:cpu,L64,d64 --config.data.num_kv_pairs=16     blockwise,linear,local
entry mqar-L64-N16-d128  configs/mqar.py:cpu,L64,d128 --config.data.num_kv_pairs=16    linear
entry recall             configs/recall.py:main --config.train.num_steps=1200           "$FIGURE"
entry mqar-L128-N8-d64   configs/mqar.py:cpu,L128,d64                                   "$FIGURE"
entry mqar-L128-N32-d64  configs/mqar.py:cpu,L128,d64 --config.data.num_kv_pairs=32    blockwise,linear,local
entry mqar-L128-N32-d128 configs/mqar.py:cpu,L128,d128 --config.data.num_kv_pairs=32   linear
entry mqar-L256-N16-d64  configs/mqar.py:cpu,L256,d64                                   blockwise,local,linear
entry mqar-L128-N8-d128  configs/mqar.py:cpu,L128,d128                                  linear
entry mqar-L256-N16-d128 configs/mqar.py:cpu,L256,d128                                  linear
entry mqar-L64-N4-d128   configs/mqar.py:cpu,L64,d128                                   "$FIXED"
entry mqar-L64-N8-d128   configs/mqar.py:cpu,L64,d128 --config.data.num_kv_pairs=8      "$FIXED"
# linear chose the grid's top rate (1e-2) in every MQAR cell, 3e-3 far behind and still rising at the
# last step: one rate above the grid for it (its records join the same leaderboards).
LRS=3e-3,1e-2,3e-2 entry mqar-L128-N32-d64  configs/mqar.py:cpu,L128,d64 --config.data.num_kv_pairs=32   linear
LRS=3e-3,1e-2,3e-2 entry mqar-L128-N32-d128 configs/mqar.py:cpu,L128,d128 --config.data.num_kv_pairs=32  linear
LRS=3e-3,1e-2,3e-2 entry mqar-L64-N16-d64   configs/mqar.py:cpu,L64,d64 --config.data.num_kv_pairs=16    linear
LRS=3e-3,1e-2,3e-2 entry mqar-L64-N16-d128  configs/mqar.py:cpu,L64,d128 --config.data.num_kv_pairs=16   linear
LRS=3e-3,1e-2,3e-2 entry mqar-L64-N8-d64    configs/mqar.py:cpu,L64,d64 --config.data.num_kv_pairs=8     linear
LRS=3e-3,1e-2,3e-2 entry mqar-L64-N4-d64    configs/mqar.py:cpu,L64,d64                                   linear
entry bytelm $BYTELM blockwise
entry copy               configs/copy.py:cpu                                           blockwise
# ListOps: LRA's rsqrt schedule, whose base 0.05 and 0.15 peak at 3.5e-3 and 1.1e-2 (warmup 200).
LRS=0.05,0.15 entry listops configs/listops.py:small,shallow                          blockwise
entry mqar-L64-N4-d64    configs/mqar.py:cpu,L64,d64                                    all
entry mqar-L256-N16-d64  configs/mqar.py:cpu,L256,d64                                   performer
# Every variant on the other calibrated tasks (recall and copy are bidirectional: every variant fits).
entry recall             configs/recall.py:main --config.train.num_steps=1200           all
entry copy               configs/copy.py:cpu                                           all
LRS=0.05,0.15 entry listops configs/listops.py:small,shallow                          all
# blockwise, linear and local chose the grid's top rate (0.15): one rate above it (worse for
# blockwise and local; linear chose it, so its optimum may lie higher still).
LRS=0.05,0.15,0.45 entry listops configs/listops.py:small,shallow                     blockwise,linear,local
entry bytelm $BYTELM all
# Every byte-LM variant chose the grid's top rate (1e-2), 3e-3 well behind: one rate above it for all.
LRS=3e-3,1e-2,3e-2 entry bytelm $BYTELM all
# linear, performer, reformer and bigbird chose 3e-2, the new top: one more rate for them (worse for all four).
LRS=3e-3,1e-2,3e-2,1e-1 entry bytelm $BYTELM linear,performer,reformer,bigbird
# Then every variant at the next MQAR cells, N growing at L = 64.
entry mqar-L64-N8-d64    configs/mqar.py:cpu,L64,d64 --config.data.num_kv_pairs=8       all
python experiments/zoo_table.py --root "$RES"
