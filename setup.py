"""Builds the optional C accelerator of the shared dict (shm/_accel.c); everything else is in
setup.cfg. Without a C compiler the install still succeeds and shm runs in pure Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("shm._accel", ["shm/_accel.c"], optional=True, extra_compile_args=["-O2"]),
    ]
)
