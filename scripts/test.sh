#!/usr/bin/env bash
# The project's test command: installs what is missing, builds, runs every
# test through ctest. CI runs exactly this (.ci/run).
# Usage: scripts/test.sh [--sanitize] [extra ctest arguments...]
#   --sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer
#               into build-asan/ and run the same suite there (a process
#               whose log holds a sanitizer report fails its test).
# Without --sanitize the libFuzzer targets are built too (build-fuzz/) and
# each fuzzes for 20 s as a ctest test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
build_args=()
if [ "${1:-}" = "--sanitize" ]; then build_args+=(--sanitize); shift; fi
build_dir=$(bash scripts/build.sh "${build_args[@]}" | tail -n 1)

ctest_args=()
if [ ${#build_args[@]} -eq 0 ]; then
  # The libFuzzer targets (clang, already ASan + UBSan) are built here and run
  # by ctest for 20 s each; 77 means clang is missing and ctest skips them.
  fuzz_rc=0
  bash scripts/fuzz.sh --build-only || fuzz_rc=$?
  if [ "$fuzz_rc" -ne 0 ] && [ "$fuzz_rc" -ne 77 ]; then exit "$fuzz_rc"; fi
  # Clang's thread-safety analysis (build-tsa/): a field touched without the
  # lock it is guarded by fails the build, and so this run.
  bash scripts/build.sh --thread-safety >/dev/null
  echo "test: thread-safety analysis (clang -Wthread-safety) passed" >&2
else
  # The fuzzers are sanitized builds of their own: not run a second time.
  ctest_args+=(--label-exclude fuzz)
  # Two suites whose length is wall-clock time, not code, run only in the
  # plain pass: a fresh chaos seed (the fixed seed runs here, so the
  # campaign's paths are sanitized reproducibly) and the site-bandwidth
  # test's 60 s of fixed-rate phases (its policy code runs here in the
  # bandwidth unit tests and under every other netns suite).
  ctest_args+=(--exclude-regex '^(chaos_fresh_seed|faults_site_bandwidth)$')
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
# Unit tests run in parallel; integration and fault tests are RUN_SERIAL
# (each alone), since they measure detection times on a 2-core machine.
status=0
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" "${ctest_args[@]}" "$@" || status=$?
# The chaos campaigns' seeds and figures: ctest keeps a passing test's output
# only in its log, and a fresh seed is worth seeing either way.
log="$build_dir/Testing/Temporary/LastTest.log"
if [ -f "$log" ]; then
  grep -E '^chaos: (summary|FAILED)' "$log" | sed 's/^/test: /' >&2 || true
fi
exit "$status"
