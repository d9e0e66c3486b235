#!/usr/bin/env bash
# Trains the quickstart model once per optimizer x accumulation mode on the bundled corpus, with
# the same data order, schedule and step count, and draws the loss curves into one PNG with
# scripts/plot.py. Four micro-batches per step (micro_batch 2 x 4 = the quickstart's 8 sequences of
# 128 tokens), so AdamA folds four times per step and differs from grads mode.
#
#   scripts/compare_optimizers.sh [out_root (default runs/compare)] [steps (default 300)] [extra --set ...]
#
# Prints a table of each arm's final train loss (mean of the last 20 steps) and val losses.
set -euo pipefail
cd "$(dirname "$0")/.."
out_root=${1:-runs/compare}
steps=${2:-300}
shift $(( $# > 2 ? 2 : $# )) || true
binary=build/slimtrain
[[ -x $binary ]] || { echo "build first: scripts/build.sh" >&2; exit 1; }
mkdir -p "$out_root"
arms=()
for kind in adamw adam_mini slim_adam; do
  for mode in grads adama; do
    arm="${kind}_${mode}"
    arms+=("$out_root/$arm")
    echo "== $arm: $steps steps, log in $out_root/$arm.log"
    "$binary" train --config configs/tiny.json --set out_dir="$out_root/$arm" \
      optimizer.kind=$kind optimizer.accumulation=$mode training.steps=$steps \
      training.micro_batch=2 training.total_batch_tokens=1024 checkpoint.every=0 \
      eval.every=$(( steps / 3 )) "$@" > "$out_root/$arm.log" 2>&1 \
      || { echo "$arm failed; see $out_root/$arm.log" >&2; exit 1; }
  done
done
/usr/bin/python3 scripts/plot.py "${arms[@]}" --out "$out_root/losses.png" --smooth 20
/usr/bin/python3 - "${arms[@]}" <<'PY'
import json, sys
print(f"{'arm':<20} {'train (last 20)':>16} {'val losses':>30}")
for run in sys.argv[1:]:
    train, val = [], []
    for line in open(run + "/metrics.jsonl"):
        r = json.loads(line)
        if "train_loss" in r and not r.get("skipped"):
            train.append(r["train_loss"])
        if "val_loss" in r:
            val.append(f"{r['val_loss']:.4f}@{r['step']}")
    tail = train[-20:]
    print(f"{run.rsplit('/', 1)[-1]:<20} {sum(tail) / len(tail):>16.4f} {' '.join(val):>30}")
PY
echo "curves: $out_root/losses.png"
