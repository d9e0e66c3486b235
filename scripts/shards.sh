#!/usr/bin/env bash
# Turns the default corpus text into token shards with the freshly built slimtrain, unless the
# shards are already there and newer than the text.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
text="$repo/data/kjv/kjv.txt"
shard="$repo/data/kjv/kjv_train_000000.bin"
if [[ ! -f "$shard" || "$text" -nt "$shard" ]]; then
  "$repo/build/slimtrain" prepare --input "$text" --out "$repo/data/kjv" --val-fraction 0.05
fi
