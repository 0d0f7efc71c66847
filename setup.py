"""Builds the optional C parts: the shared dict's (shm/_accel.c) and the parser callbacks'
(edgeworker/_speedups.c); everything else is in setup.cfg. Without a C compiler the install
still succeeds and both run in pure Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("shm._accel", ["shm/_accel.c"], optional=True, extra_compile_args=["-O2"]),
        Extension("edgeworker._speedups", ["edgeworker/_speedups.c"], optional=True,
                  extra_compile_args=["-O2"], libraries=["m"]),
    ]
)
