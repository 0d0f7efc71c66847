"""Builds the C parts, which edgeworker requires (as OpenResty requires lua-resty-core): the
shared dict's (shm/_accel.c) and the request path's (edgeworker/_speedups.c). Without a C
compiler and the Python headers the install fails (Debian: apt-get install gcc python3-dev).
Everything else is in setup.cfg."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("shm._accel", ["shm/_accel.c"], extra_compile_args=["-O2"]),
        Extension("edgeworker._speedups", ["edgeworker/_speedups.c"],
                  extra_compile_args=["-O2"], libraries=["m"]),
    ]
)
