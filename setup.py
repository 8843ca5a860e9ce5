"""Builds the one extension, scratchnet._core, from _core.pyx and csrc/*.c.

All metadata is in pyproject.toml. Flags are chosen by compiler, portable by
default: no -march=native and no fast-math, because the wheel must run on any
CPU of its platform; the SIMD kernels carry their own target attributes and
are picked at run time (csrc/sn_runtime.c). OpenMP is used when a test
compile shows the compiler has it, and the code falls back to serial loops
otherwise.
"""
import os
import sys
import tempfile
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

UNIX_FLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
MSVC_FLAGS = ["/O2"]


def compiler_has_openmp(compiler, flag):
    """Compile and link a tiny OpenMP program with flag; True if it works."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objs, os.path.join(tmp, "omp_probe"),
                                     extra_postargs=[flag])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            compile_flags, omp_flag = list(MSVC_FLAGS), "/openmp"
        else:
            compile_flags, omp_flag = list(UNIX_FLAGS), "-fopenmp"
        use_openmp = os.environ.get("SCRATCHNET_OPENMP", "1") != "0" and \
            compiler_has_openmp(self.compiler, omp_flag)
        print(f"scratchnet: compiler {ctype}, flags {compile_flags}, "
              f"OpenMP {'on (' + omp_flag + ')' if use_openmp else 'off'}")
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + ([omp_flag] if use_openmp else [])
            if use_openmp and ctype != "msvc":
                ext.extra_link_args = [omp_flag]
        super().build_extensions()


ext = Extension(
    "scratchnet._core",
    ["scratchnet/_core.pyx", *sorted(glob("csrc/*.c"))],
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize([ext], language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
