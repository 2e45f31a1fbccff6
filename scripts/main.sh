#!/usr/bin/env bash
# The main job: install what is missing, build, and run a real program under
# the runtime with a short report. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build >/dev/null   # the same build directory as scripts/test.sh
echo
exec build/examples/runtime_demo "$@"
