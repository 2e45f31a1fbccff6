#!/usr/bin/env bash
# The main job: install what is missing, build, and run real programs under
# the runtime with a short report. Idempotent.
#   1. examples/runtime_demo [MiB] [config]: the C++ API on a program of ours
#   2. scripts/preload_job.py: sort (coreutils, unmodified) under
#      libuhmm_preload.so with policy=tier (tier_hot: a quarter of its
#      footprint), compared with a native run
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# The same build directory, and the same release configuration, as scripts/test.sh.
scripts/build.sh build --buildtype=release -Dwerror=true >/dev/null
echo
build/examples/runtime_demo "$@"
echo
exec scripts/preload_job.py build/lib/preload/libuhmm_preload.so
