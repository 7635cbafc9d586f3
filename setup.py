"""Build the compiled engine (handit._tracer), fold (handit._blocks) and walk (handit._walk) with Cython; everything else is pure Python."""
import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_pth(build_py):
    """Also put handit.pth at the top of the install (site-packages): it continues a parent's
    session in Python child processes, and does nothing unless HANDIT_PARENT_SESSION is set."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, "handit.pth"), os.path.join(self.build_lib, "handit.pth"))



def unsupported_python():
    """Why the compiled engine must not be built for this interpreter, or None.

    It reads CPython's internal structures (handit/_compat.h), whose layouts are known for
    CPython 3.10 to 3.13 with the GIL only; anywhere else the pure-Python engine runs.
    """
    version = "%d.%d" % sys.version_info[:2]
    if sys.implementation.name != "cpython":
        return f"it is written for CPython, not {sys.implementation.name}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return f"free-threaded builds (Python {version}t) are not supported yet"
    if sys.version_info[:2] > (3, 13):
        return f"it reads CPython's internal frame layout, known for 3.10 to 3.13 only, not {version}"
    return None


# HANDIT_NO_EXTENSION=1 installs the pure-Python engine only (the fallback).
refused = unsupported_python()
if os.environ.get("HANDIT_NO_EXTENSION") == "1":
    ext_modules = []
elif refused is not None:
    sys.stderr.write(f"handit: building no compiled engine ({refused}); the pure-Python engine will be used\n")
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("handit._tracer", ["handit/_tracer.pyx"], extra_compile_args=["-O2"]),
            Extension("handit._blocks", ["handit/_blocks.pyx"], extra_compile_args=["-O2"]),
            Extension("handit._walk", ["handit/_walk.pyx"], extra_compile_args=["-O2"]),
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
