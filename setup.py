"""Build the compiled engine (handit._tracer) and fold (handit._blocks) with Cython; everything else is pure Python."""
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_pth(build_py):
    """Also put handit.pth at the top of the install (site-packages): it continues a parent's
    session in Python child processes, and does nothing unless HANDIT_PARENT_SESSION is set."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, "handit.pth"), os.path.join(self.build_lib, "handit.pth"))


# HANDIT_NO_EXTENSION=1 installs the pure-Python engine only (the fallback).
if os.environ.get("HANDIT_NO_EXTENSION") == "1":
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("handit._tracer", ["handit/_tracer.pyx"], extra_compile_args=["-O2"]),
            Extension("handit._blocks", ["handit/_blocks.pyx"], extra_compile_args=["-O2"]),
        ],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": build_py_with_pth})
