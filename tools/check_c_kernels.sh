#!/usr/bin/env bash
# Builds csrc/ with its C test driver (csrc/test/sn_test.c) and runs it:
# natively, then for arm64 with a cross compiler under qemu, so the arm64
# code paths (FPCR flush-to-zero, the portable kernel as NEON) are checked on
# this x86-64 machine. With --install, fetches the cross tools with apt when
# they are missing; without them the arm64 part is reported as skipped.
# Natively also csrc/test/sn_test_enomem.c, the trainer when malloc fails
# (built with the linker's --wrap).
# Then the several-threads test (`sn_test threads`) runs under gcc's
# ThreadSanitizer, built without OpenMP: libgomp is not instrumented, so its
# own synchronisation would be reported as races. Every data race fails it.
# Last, the whole driver runs under valgrind memcheck (fetched with apt by
# --install when missing): any invalid access, use of an uninitialised value
# or definitely lost block fails it. No suppression is needed: libgomp's
# thread pool is still alive at exit, and the thread stacks (TLS) it holds are
# only "possibly lost" or "still reachable", which are not counted.
# valgrind's CPU has no AVX-512 (so the driver tests up to AVX2 there) and
# ignores flush-to-zero, so sn_test skips that one check under it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
flags=(-O2 -std=c11 -ffp-contract=off -fno-math-errno -fopenmp -Wall -Icsrc)
sources=(csrc/test/sn_test.c csrc/*.c)

echo "== native ($(uname -m))"
gcc "${flags[@]}" "${sources[@]}" -lm -o "$out/sn_test"
"$out/sn_test"

echo "== native, the trainer when memory runs out (csrc/test/sn_test_enomem.c)"
# malloc and the optimizer's entry point wrapped: every malloc fails once the
# update of the batch before has begun
gcc "${flags[@]}" -Wl,--wrap=malloc -Wl,--wrap=sn_optim_step_range csrc/test/sn_test_enomem.c \
  csrc/*.c -lm -o "$out/sn_test_enomem"
"$out/sn_test_enomem"

if [[ "${1:-}" == "--install" ]] && ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user) >/dev/null 2>&1 \
    || echo "could not install gcc-aarch64-linux-gnu and qemu-user with apt"
fi
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
  echo "== arm64 (cross-compiled, run under qemu)"
  aarch64-linux-gnu-gcc "${flags[@]}" "${sources[@]}" -lm -static -o "$out/sn_test_arm64" 2>&1 | grep -v -e "dlopen" -e "goacc" || true
  # qemu-user cannot start a thread in a forked child of a process with threads
  qemu-aarch64 -E SN_TEST_NO_THREADS_AFTER_FORK=1 "$out/sn_test_arm64"
else
  echo "== arm64: SKIPPED (no aarch64-linux-gnu-gcc / qemu-aarch64; run with --install)"
fi

echo "== native, ThreadSanitizer (serial kernels, several calling threads)"
tsan_flags=(-O1 -g -std=c11 -ffp-contract=off -fno-math-errno -fsanitize=thread -Wall -Wno-unknown-pragmas -Icsrc)
if echo 'int main(void){return 0;}' | gcc -fsanitize=thread -x c - -o "$out/tsan_probe" 2>/dev/null; then
  gcc "${tsan_flags[@]}" "${sources[@]}" -lm -pthread -o "$out/sn_test_tsan"
  # halt_on_error: the first race ends the run with exit code 66
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/sn_test_tsan" threads
else
  echo "== ThreadSanitizer: SKIPPED (gcc cannot link -fsanitize=thread here)"
fi

echo "== native, valgrind memcheck (no error, no definite leak)"
if [[ "${1:-}" == "--install" ]] && ! command -v valgrind >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null 2>&1 \
    || echo "could not install valgrind with apt"
fi
if command -v valgrind >/dev/null; then
  gcc "${flags[@]}" -g "${sources[@]}" -lm -o "$out/sn_test_memcheck"
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite "$out/sn_test_memcheck"
else
  echo "== valgrind: SKIPPED (not installed; run with --install)"
fi

echo "== the trainer A/B harness (benchmarks/c/ab_mlp_trainer.c) with the per-phase timers"
# two copies of one build with -DSN_STEP_PROFILE: the same steps to the bit,
# and PHASES=1 prints each phase of each copy's steps
gcc -O2 -std=c11 -ffp-contract=off -fno-math-errno -fopenmp -Wall -fPIC -shared -DSN_STEP_PROFILE \
  -Icsrc csrc/sn_*.c -lm -o "$out/libsn_profile_a.so"
cp "$out/libsn_profile_a.so" "$out/libsn_profile_b.so"
gcc -O2 -std=gnu11 -Wall -Icsrc benchmarks/c/ab_mlp_trainer.c -ldl -lm -o "$out/ab_mlp_trainer"
ab() { LIBA="$out/libsn_profile_a.so" LIBB="$out/libsn_profile_b.so" "$out/ab_mlp_trainer"; }
CHECK=3 ab | tee "$out/ab_check.txt"
grep -q "status 0 / 0, .*differ by at most 0 " "$out/ab_check.txt"
DEEP=1 SGD=1 ROUNDS=1 PHASES=1 ab | tee "$out/ab_phases.txt"
# each copy: the gather (with the update of the step before), the first
# layer's finish, the second's with the last layer, two backwards (the last
# layer's is in that finish) and the update after the run's last step
test "$(grep -cE '^  (update|finish|backward).* region +[0-9.]+ us, units +[0-9.]+' "$out/ab_phases.txt")" -eq 12
echo "ab_mlp_trainer: same steps, per-phase report: ok"

