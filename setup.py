"""Build the compiled engine (handit._tracer) with Cython; everything else is pure Python."""
import os

from setuptools import Extension, setup

# HANDIT_NO_EXTENSION=1 installs the pure-Python engine only (the fallback).
if os.environ.get("HANDIT_NO_EXTENSION") == "1":
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("handit._tracer", ["handit/_tracer.pyx"], extra_compile_args=["-O2"])],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )

setup(ext_modules=ext_modules)
