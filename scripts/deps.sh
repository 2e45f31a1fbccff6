#!/usr/bin/env bash
# Install what uhmm needs to build and test, from Debian's packages, only when
# something is missing (so a second run costs one dpkg query). Run as root, or
# with sudo available.
set -euo pipefail

packages=(
  g++ meson ninja-build pkg-config
  liburing-dev libboost-dev libspdlog-dev libfmt-dev catch2 libnuma-dev
  nlohmann-json3-dev libcli11-dev
  libasan8 libubsan1 libtsan2          # sanitizer runtimes for the test builds
  groff-base util-linux                # man page lint, setpriv for privilege tests
  python3 sqlite3 xz-utils gzip coreutils make   # the unmodified programs the preload tests run
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
