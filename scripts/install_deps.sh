#!/usr/bin/env bash
# Installs the Debian 12 packages kvcache needs, only those missing. Run as root (or with sudo).
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config libtbb-dev libmimalloc-dev libhwy-dev doctest-dev
          libbenchmark-dev libcli11-dev nlohmann-json3-dev libfmt-dev libcpp-httplib-dev python3-matplotlib
          libpcre2-dev)
packages+=("$@")
installed() {
  case "$1" in
    # A nodejs from elsewhere (NodeSource's) bundles npm and conflicts with Debian's npm package:
    # working commands count as installed.
    nodejs) command -v node >/dev/null ;;
    npm) command -v npm >/dev/null ;;
    *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" ;;
  esac
}
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
