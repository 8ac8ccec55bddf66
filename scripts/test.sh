#!/usr/bin/env bash
# The project's test command: installs what is missing, builds, runs every
# test through ctest. CI runs exactly this (.ci/run).
# Usage: scripts/test.sh [--sanitize] [extra ctest arguments...]
#   --sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer
#               into build-asan/ and run the same suite there.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
build_args=()
if [ "${1:-}" = "--sanitize" ]; then build_args+=(--sanitize); shift; fi
build_dir=$(bash scripts/build.sh "${build_args[@]}" | tail -n 1)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Unit tests run in parallel; integration and fault tests are RUN_SERIAL
# (each alone), since they measure detection times on a 2-core machine.
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" "$@"
