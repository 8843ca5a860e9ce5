#!/usr/bin/env bash
# The test suite against an extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer (SCRATCHNET_SANITIZE=address,undefined, see
# setup.py). Fails on any sanitizer report, in pytest's process or in any
# process a test starts, even one whose failure the test expected.
#
#   1. The tracked (and untracked, not ignored) files are copied to a
#      temporary folder, so the normal build in this tree is not touched.
#   2. A temporary virtual environment that sees this Python's packages
#      (numpy, pytest, hypothesis, torch) gets the build requirements, and the
#      extension is built in place in the copy with the sanitizers.
#   3. pytest runs there with libasan preloaded (Python itself is not
#      instrumented, and ASan's runtime must be the first library loaded):
#        ASAN_OPTIONS  detect_leaks=0: CPython and NumPy keep allocations
#                      alive until exit on purpose (interned strings, caches),
#                      which LeakSanitizer would report; the kernels' own
#                      leaks are valgrind's job (tools/check_c_kernels.sh);
#                      allocator_may_return_null=1: a huge allocation returns
#                      NULL (NumPy raises MemoryError, as without ASan) instead
#                      of ending the run.
#        UBSAN_OPTIONS halt_on_error=1, print_stacktrace=1.
#      ASan writes its reports to files in a log folder (log_path), from any
#      process, checked after the run. gcc's UBSan (libubsan beside libasan)
#      ignores log_path and writes to stderr: pytest runs with --capture=sys
#      so that a report of its own process reaches the output (fd 2 is not
#      captured), which is scanned for "runtime error:"; in a process a test
#      starts, the report ends it with an error, which that test sees.
#      Any report fails the script.
#   Tests marked `sanitizer_slow` (long real-data training, benchmarks,
#   whole-wheel builds; see tests/conftest.py) are skipped under the
#   sanitizers (SCRATCHNET_SANITIZED=1); everything else runs.
#
# Usage: bash tools/check_sanitizers.sh [pytest arguments]   (default: tests/)
#   SANITIZERS=address,undefined picks the sanitizers; KEEP=1 keeps the
#   temporary folder. SCRATCHNET_DATA / SCRATCHNET_REQUIRE_DATA pass through.
#   About 10 minutes on this project's 2-core machine (build ~3, tests ~7).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SANITIZERS="${SANITIZERS:-address,undefined}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/check_sanitizers.XXXXXX")"
T_START=$SECONDS
trap '[[ "${KEEP:-0}" == 1 ]] && echo "check_sanitizers: kept $WORK" || rm -rf "$WORK"' EXIT
say() { echo "== check_sanitizers [$((SECONDS - T_START)) s]: $*"; }

say "copy of the source tree in $WORK/src"
mkdir -p "$WORK/src" "$WORK/logs"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test ! -e "$1" || printf "%s\0" "$1"' _ {} \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"

say "virtual environment (build requirements) and the $SANITIZERS build"
"$PYTHON" -m venv --system-site-packages "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --disable-pip-version-check --no-input \
    "setuptools>=77" "Cython>=3.1,<4"
(cd "$WORK/src" && SCRATCHNET_SANITIZE="$SANITIZERS" "$VPY" setup.py build_ext --inplace -q \
    > "$WORK/build.log" 2>&1) || { tail -n 40 "$WORK/build.log"; exit 1; }
grep -m1 "^scratchnet: compiler" "$WORK/build.log"

preload=()
if [[ ",$SANITIZERS," == *",address,"* ]]; then
    libasan="$(gcc -print-file-name=libasan.so)"
    [[ -f "$libasan" ]] || { echo "check_sanitizers: no libasan.so ($libasan)" >&2; exit 1; }
    preload=("$libasan")
fi
ext=("$WORK"/src/scratchnet/_core*.so)
# The libraries the extension needs, read from its dynamic section (readelf
# reads the file; ldd runs the loader, and `ldd | grep -q` under pipefail can
# fail when grep stops reading early). Once, in a CI run, this check failed
# on a build whose link line had -fsanitize: the output is now shown.
deps="$(readelf -d "${ext[0]}" 2>&1 || true)"
if [[ ",$SANITIZERS," == *",address,"* && "$deps" != *libasan* ]]; then
    echo "check_sanitizers: ${ext[0]} is not linked with libasan; its dynamic section:" >&2
    echo "$deps" >&2
    tail -n 5 "$WORK/build.log" >&2
    exit 1
fi

say "pytest under $SANITIZERS"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:log_path=$WORK/logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$WORK/logs/ubsan"
export SCRATCHNET_SANITIZED=1
set +e
(cd "$WORK/src" && LD_PRELOAD="${preload[*]:-}" PYTHONPATH="$WORK/src" \
    "$VPY" -m pytest -q -p no:cacheprovider --capture=sys "${@:-tests/}") 2>&1 \
    | tee "$WORK/pytest.log"
rc=${PIPESTATUS[0]}
set -e
if grep -q -E "runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer" "$WORK/pytest.log"; then
    echo "check_sanitizers: FAILED: a sanitizer report in the test output (above)" >&2
    exit 1
fi

# A report is any line but ASan's warning that a huge allocation returned
# NULL (allocator_may_return_null=1: tests that expect a MemoryError).
reports=()
for f in "$WORK"/logs/*; do
    [[ -e "$f" ]] || continue
    if grep -v -q -e "WARNING: AddressSanitizer failed to allocate" -e '^[[:space:]]*$' "$f"; then
        reports+=("$f")
    else
        echo "check_sanitizers: (not a report) $(head -c 200 "$f")"
    fi
done
if [[ ${#reports[@]} -gt 0 ]]; then
    for f in "${reports[@]}"; do echo "---- $f"; cat "$f"; done
    echo "check_sanitizers: FAILED: ${#reports[@]} sanitizer report(s) (above)" >&2
    exit 1
fi
[[ $rc -eq 0 ]] || { echo "check_sanitizers: FAILED: pytest exited $rc" >&2; exit "$rc"; }
say "passed, no sanitizer report"
