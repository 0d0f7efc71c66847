"""Builds the C parts, which edgeworker requires (as OpenResty requires lua-resty-core): the
shared dict's (shm/_accel.c) and the request path's (edgeworker/_speedups.c). Without a C
compiler and the Python headers the install fails (Debian: apt-get install gcc python3-dev).
Also puts the recipes of config/examples into the package (edgeworker/examples), where
`edgeworker init` copies them from. Everything else is in setup.cfg."""

import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

EXAMPLES = "config/examples"


class BuildPyWithExamples(build_py):
    """build_py, plus config/examples/*.toml and handlers/*.py as edgeworker/examples/."""

    def run(self):
        super().run()
        sources = glob.glob(f"{EXAMPLES}/*.toml") + glob.glob(f"{EXAMPLES}/handlers/*.py")
        for source in sorted(sources):
            target = os.path.join(
                self.build_lib, "edgeworker", "examples", os.path.relpath(source, EXAMPLES)
            )
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target)


setup(
    cmdclass={"build_py": BuildPyWithExamples},
    ext_modules=[
        Extension("shm._accel", ["shm/_accel.c"], extra_compile_args=["-O2"]),
        Extension(
            "edgeworker._speedups",
            ["edgeworker/_speedups.c"],
            extra_compile_args=["-O2"],
            libraries=["m"],
        ),
    ],
)
