#!/usr/bin/env bash
# Positions for the byte LM, and length extrapolation: the exact baseline (blockwise) trained with
# each model.positions on zoo_cpu.sh's bytelm entry (configs/bytelm.py:cpu, 2 layers, batch 16,
# 1000 steps, 256-byte windows: data.pack=False, the form of the recorded table) at the learning rate that entry's sweep chose for blockwise (1e-2,
# experiments/results/zoo-cpu/bytelm/tuning.md), 3 seeds, then each run's best checkpoint evaluated
# on the test split at 1×, 2× and 4× the training length (attn-zoo eval --length). Writes the table
# (test bits per byte, mean ± 95% t interval over seeds) to $OUT. sinusoidal is the suite's own
# configuration, so its 1× column repeats experiments/results/zoo-cpu/bytelm's records. Learned
# positions are left out: their table cannot be evaluated past the training length (eval refuses).
# Finished runs are not trained again (train returns a done workdir's results), so a rerun only
# evaluates. ~2.5 min per run on 2 CPU cores: 12 runs, ~35 min.
#   bash experiments/positions_bytelm.sh
#   STEPS=20 SEEDS=0 WORK=/tmp/pos OUT=/tmp/pos.md bash experiments/positions_bytelm.sh   # a quick try
set -euo pipefail
cd "$(dirname "$0")/.."
KINDS=${KINDS:-rope,alibi,nope,sinusoidal}
SEEDS=${SEEDS:-0,1,2}
STEPS=${STEPS:-1000}
LR=${LR:-1e-2}
VARIANT=${VARIANT:-blockwise}
LENGTH=256  # configs/bytelm.py:cpu's data.max_length
WORK=${WORK:-runs/positions-bytelm}
OUT=${OUT:-experiments/results/positions-bytelm.md}
mkdir -p "$WORK" "$(dirname "$OUT")"

for kind in ${KINDS//,/ }; do
  for seed in ${SEEDS//,/ }; do
    w="$WORK/$kind-seed$seed"
    attn-zoo train --config "configs/bytelm.py:$VARIANT,cpu" --workdir "$w" \
      --config.model.num_layers=2 --config.train.batch_size=16 --config.train.num_steps="$STEPS" \
      --config.train.learning_rate="$LR" --config.train.seed="$seed" \
      --config.model.positions="$kind" --config.data.pack=False >> "$WORK/train.log" 2>&1 \
      || { echo "$kind seed $seed: training failed, see $WORK/train.log"; exit 1; }
    for mult in 1 2 4; do
      attn-zoo eval --workdir "$w" --split test --length $((LENGTH * mult)) > /dev/null \
        || { echo "$kind seed $seed: eval at $((LENGTH * mult)) failed"; exit 1; }
    done
    echo "$kind seed $seed: done ($(date -u +%FT%TZ))"
  done
done

python - "$WORK" "$OUT" "$KINDS" "$SEEDS" "$LENGTH" "$VARIANT" "$STEPS" <<'EOF'
import json, os, sys
from attn_zoo.train.stats import t_interval
work, out, kinds, seeds, length, variant, steps = sys.argv[1:]
length, mults = int(length), (1, 2, 4)
rows = []
for kind in kinds.split(","):
    cells = []
    for m in mults:  # each run's last test evaluation at that length
        bits = []
        for seed in seeds.split(","):
            with open(os.path.join(work, f"{kind}-seed{seed}", "extrapolation.jsonl")) as f:
                found = [r for r in map(json.loads, f) if r["length"] == length * m and r["split"] == "test"]
            bits.append(found[-1]["bits_per_token"])
        t = t_interval(bits)
        cells.append(f"{t.mean:.4f}" + (f" ± {t.half:.4f}" if t.half is not None else ""))
    rows.append(f"| {kind} | {t.n} | " + " | ".join(cells) + " |")
with open(out, "w") as f:
    f.write(f"# Byte LM: positions and length extrapolation\n\n"
            f"`bash experiments/positions_bytelm.sh`: attention {variant}, `configs/bytelm.py:cpu` with "
            f"2 layers, batch 16, {steps} steps, trained on {length}-byte windows; test bits per byte "
            f"(lower is better; mean ± half-width of the 95% Student's t interval over seeds) of the best "
            f"checkpoint on the test split cut into windows of 1×, 2× and 4× the training length.\n\n"
            f"| positions | seeds | " + " | ".join(f"{m}× ({length * m} B)" for m in mults) + " |\n"
            f"|---|---|" + "---|" * len(mults) + "\n" + "\n".join(rows) + "\n")
print(f"wrote {out}")
EOF
