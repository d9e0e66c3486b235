#!/usr/bin/env bash
# Sets up, builds, trains the default tiny GPT-2 on the King James Bible (on the CPU when there is
# no GPU), then prints a sample from the trained model.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/setup.sh
scripts/build.sh
scripts/shards.sh
build/slimtrain train --config configs/tiny.json --set out_dir=runs/tiny "$@"
echo
echo "sample from runs/tiny:"
build/slimtrain sample --checkpoint runs/tiny --prompt "And God said" --tokens 64 --top-k 40 --temperature 0.8
