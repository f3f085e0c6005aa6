#!/usr/bin/env bash
# Downloads the stories260K model and its tok512 tokenizer (karpathy/tinyllamas, MIT licence) into
# models/ at the repo root, where kvstream finds them (see integrations/llama/README.md).
# Never run by the build or the tests. Usage: scripts/fetch_model.sh [DEST_DIR]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/models}"
base="https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K"

# name  sha256 (as recorded in ../shared/README.md)
files=(
  "stories260K.bin b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"
  "tok512.bin 037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"
)

fetch() {  # url out
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -O "$2" "$1"
  else
    echo "fetch_model.sh: need curl or wget" >&2
    exit 1
  fi
}

mkdir -p "$dest"
for entry in "${files[@]}"; do
  read -r name sum <<<"$entry"
  out="$dest/$name"
  if [[ -f "$out" ]] && echo "$sum  $out" | sha256sum -c --status; then
    echo "$out: present, checksum ok"
    continue
  fi
  tmp="$(mktemp "$dest/.$name.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  fetch "$base/$name" "$tmp"
  if ! echo "$sum  $tmp" | sha256sum -c --status; then
    echo "fetch_model.sh: checksum mismatch for $name (expected $sum)" >&2
    exit 1
  fi
  mv "$tmp" "$out"
  trap - EXIT
  echo "$out: downloaded, checksum ok"
done
