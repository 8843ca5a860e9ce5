"""Builds the one extension, scratchnet._core, from _core.pyx and csrc/*.c.

All metadata is in pyproject.toml. Flags are chosen by compiler, portable by
default: no -march=native and no fast-math, because the wheel must run on any
CPU of its platform; the SIMD kernels carry their own target attributes and
are picked at run time (csrc/sn_runtime.c). OpenMP is used when a test
compile shows the compiler has it, and the code falls back to serial loops
otherwise:

    gcc / clang (Linux)   -fopenmp (libgomp; auditwheel bundles it in wheels)
    Apple clang (macOS)   -Xpreprocessor -fopenmp ... -lomp, only where libomp
                          is installed (e.g. Homebrew's); serial otherwise
    MSVC (Windows)        /openmp (vcomp)

SCRATCHNET_OPENMP=0 skips OpenMP (the release workflow builds macOS wheels
serial, so they carry no libomp). The chosen flags are printed in the build
log ("scratchnet: compiler ..., flags ...").

SCRATCHNET_SANITIZE=address,undefined (any comma-separated list of gcc/clang
-fsanitize= names) builds a debugging extension instrumented by those
sanitizers: -fsanitize=..., -fno-omit-frame-pointer, -g and -O1 when
compiling, -fsanitize=... when linking. Unset or empty, it changes nothing.
Such an extension needs the sanitizer runtime preloaded into Python:
tools/check_sanitizers.sh does that and runs the tests with it.
"""
import hashlib
import os
import sys
import tempfile
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off: no a * b + c fused into one rounding unless the code asks
# (GCC's -std=c11 implies it, clang's default does not): a kernel compiled
# twice, for the baseline and for AVX2, must give the same bits both times
UNIX_FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-fno-math-errno",
              "-Wall", "-Wno-unused-function"]
MSVC_FLAGS = ["/O2"]

# The OpenMP constructs csrc/ uses (parallel for over int64_t with dynamic
# schedule, num_threads and a reduction; a named critical section): a compiler whose
# OpenMP cannot build these gets the serial fallback instead of a failed build.
OMP_PROBE = r"""
#include <omp.h>
#include <stdint.h>
int main(void)
{
    double work = 0.0;
    int failed = 0;
    const int nthreads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) reduction(+ : work)
    for (int64_t i = 0; i < 4; ++i) {
        work += (double)i;
        if (i == 5) {
#pragma omp critical(probe_status)
            failed = 1;
        }
    }
    return nthreads < 1 || work != 6.0 || failed;
}
"""


def macos_libomp_dirs():
    """(include, lib) folders of a libomp install on macOS, or None.

    LIBOMP_PREFIX wins; otherwise Homebrew's usual prefixes are tried."""
    prefixes = [os.environ.get("LIBOMP_PREFIX", ""), "/opt/homebrew/opt/libomp",
                "/usr/local/opt/libomp"]
    for prefix in filter(None, prefixes):
        inc, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib")
        if os.path.isfile(os.path.join(inc, "omp.h")):
            return inc, lib
    return None


def openmp_candidates(ctype):
    """(compile flags, link flags) to try in order for this compiler."""
    if ctype == "msvc":
        return [(["/openmp"], [])]          # MSVC links vcomp by itself
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag: the preprocessor flag plus
        # libomp, found on the default paths or where Homebrew keeps it.
        cands = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
        dirs = macos_libomp_dirs()
        if dirs:
            inc, lib = dirs
            cands.append((["-Xpreprocessor", "-fopenmp", "-I" + inc],
                          ["-L" + lib, "-lomp", "-Wl,-rpath," + lib]))
        cands.append((["-fopenmp"], ["-fopenmp"]))   # gcc or LLVM clang on macOS
        return cands
    return [(["-fopenmp"], ["-fopenmp"])]


def compiler_has_openmp(compiler, compile_flags, link_flags):
    """Compile and link a small OpenMP program with these flags; True if it works."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(OMP_PROBE)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
            compiler.link_executable(objs, os.path.join(tmp, "omp_probe"),
                                     extra_postargs=link_flags)
        except Exception:
            return False
    return True


def sanitizer_flags(ctype):
    """(compile flags, link flags) for SCRATCHNET_SANITIZE, ([], []) when unset."""
    names = [n.strip() for n in os.environ.get("SCRATCHNET_SANITIZE", "").split(",") if n.strip()]
    if not names:
        return [], []
    bad = [n for n in names if not n.replace("-", "").isalnum()]
    if bad or ctype == "msvc":
        raise SystemExit(f"SCRATCHNET_SANITIZE={os.environ['SCRATCHNET_SANITIZE']!r}: expected "
                         "gcc/clang sanitizer names such as address,undefined")
    flag = "-fsanitize=" + ",".join(names)
    # -O1 (after the -O3 above, so it wins): faster to build, clearer reports
    return [flag, "-fno-omit-frame-pointer", "-g", "-O1"], [flag]


def assembly_flags(compiler):
    """The AVX2 micro-kernel's inline assembly is in AT&T syntax (GCC's and
    Clang's default): a build whose compiler command asks for Intel syntax
    (from CC, CFLAGS or CPPFLAGS, which setuptools puts in compiler_so)
    compiles its intrinsics instead (same sums, a little slower) rather than
    failing in the assembler."""
    command = getattr(compiler, "compiler_so", None) or []
    return ["-DSN_GEMM_NO_ASM"] if "-masm=intel" in command else []


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        san_compile, san_link = sanitizer_flags(ctype)
        compile_flags = (list(MSVC_FLAGS if ctype == "msvc" else UNIX_FLAGS) + san_compile
                         + assembly_flags(self.compiler))
        omp = None
        if os.environ.get("SCRATCHNET_OPENMP", "1") != "0":
            omp = next((c for c in openmp_candidates(ctype)
                        if compiler_has_openmp(self.compiler, *c)), None)
        print(f"scratchnet: compiler {ctype} ({sys.platform}), flags {compile_flags}, "
              f"OpenMP {'on ' + str(omp[0] + omp[1]) if omp else 'off (serial)'}")
        # POSIX threads for csrc/sn_helper.c (glibc before 2.34 keeps them in libpthread)
        threads = [] if ctype == "msvc" else ["-pthread"]
        build_id = build_hash([getattr(self.compiler, "compiler_so", ctype), compile_flags,
                               threads, omp])
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + threads + (omp[0] if omp else [])
            ext.extra_link_args = threads + (omp[1] if omp else []) + san_link
            ext.define_macros = ext.define_macros + [("SN_BUILD_ID", f'"{build_id}"')]
        super().build_extensions()


def build_hash(flags):
    """The first 16 hex digits of a SHA-256 over what the build compiles and
    how (the compiler command and flags): compiled in as SN_BUILD_ID, it
    keys the tuning file (scratchnet/_tuning.py), so a build of other
    kernels, or with other flags (a sanitizer's), times them again, where
    one version number covered every development build (a choice timed
    before a change was kept after it)."""
    digest = hashlib.sha256(repr(flags).encode())
    for path in sorted(glob("csrc/*.[ch]") + glob("scratchnet/_core*.pyx")
                       + glob("scratchnet/_core*.pxd") + glob("scratchnet/_core*.pxi")):
        digest.update(path.encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


ext = Extension(
    "scratchnet._core",
    ["scratchnet/_core.pyx", *sorted(glob("csrc/*.c"))],
    include_dirs=["csrc", numpy.get_include()],
    # a changed header rebuilds every source (setuptools does not track includes)
    depends=sorted(glob("csrc/*.h")),
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize([ext], language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
