#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest). Extra arguments go to ctest, e.g. -L cpu.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/setup.sh
scripts/build.sh
scripts/shards.sh
cd build
ctest --output-on-failure --timeout 900 -j2 "$@"
