#!/usr/bin/env bash
# Dumps the default training corpus, the King James Bible from Debian's bible-kjv package, as
# plain UTF-8 text to OUT_DIR/kjv.txt (OUT_DIR defaults to <repo>/data/kjv).
#
# Text layout, chosen to be clean for language modelling: each chapter is a heading line
# ("Genesis 1", "1 Samuel 3", ...), a blank line, then one verse per line with the verse number
# dropped, and a blank line between chapters. Verse references ("Ge1:1") are not kept: they are
# noise a small model would spend capacity memorising. About 4.2 MB, 31,102 verses.
#
# Idempotent and quiet when kjv.txt already exists. Shards are made separately, after the build:
#   slimtrain prepare --input data/kjv/kjv.txt ...
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$repo_root/data/kjv}"
out_file="$out_dir/kjv.txt"

if [[ -s "$out_file" ]]; then
  exit 0
fi

if ! command -v bible >/dev/null 2>&1; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "prepare_corpus.sh: the 'bible' command (Debian package bible-kjv) is missing." >&2
    echo "  Run this script as root so it can install it, or install it yourself:" >&2
    echo "  sudo apt-get install -y --no-install-recommends bible-kjv" >&2
    exit 1
  fi
  echo "prepare_corpus.sh: installing bible-kjv ..."
  # Recommends would pull in a desktop front end we do not need.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bible-kjv
fi

mkdir -p "$out_dir"
tmp_file="$(mktemp "$out_dir/.kjv.txt.XXXXXX")"
trap 'rm -f "$tmp_file"' EXIT

# "Gen1:1-Rev22:21" is the whole book. Pretty-printing (the default) gives the chapter headings
# and indented numbered verses; -l with a huge width stops it wrapping verses over lines.
# stdin is /dev/null so bible never waits for interactive commands.
bible -l 1000000 Gen1:1-Rev22:21 </dev/null |
  sed -e '1{/^$/d}' -e 's/^  [0-9][0-9]* //' -e 's/[[:space:]]*$//' >"$tmp_file"

# Sanity check: a broken or different bible-kjv would otherwise give a silently wrong corpus.
verse_count=$(grep -c -v -e '^$' -e '^[1-3A-Z][A-Za-z ]* [0-9][0-9]*$' "$tmp_file" || true)
if [[ "$verse_count" -ne 31102 ]]; then
  echo "prepare_corpus.sh: expected 31102 verses from 'bible', got $verse_count; is bible-kjv intact?" >&2
  echo "  Try: apt-get install --reinstall bible-kjv" >&2
  exit 1
fi

chmod 644 "$tmp_file"   # mktemp makes it private; the corpus is for everyone
sync "$tmp_file"
mv "$tmp_file" "$out_file"
trap - EXIT
echo "prepare_corpus.sh: wrote $out_file ($(wc -c <"$out_file") bytes, $verse_count verses)"
