#!/usr/bin/env bash
# Configures and builds slimtrain into build/ (Release, -j2). Extra arguments go to cmake.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$repo/build" -j2
