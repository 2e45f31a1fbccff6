#!/usr/bin/env bash
# Configure (once) and build one build directory.
#   scripts/build.sh DIR [meson options...]
# Options are applied on every run, so changing them reconfigures.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
if [ -f "$dir/build.ninja" ]; then
  meson configure "$dir" "$@" >/dev/null
else
  meson setup "$dir" "$@"
fi
ninja -C "$dir"
