"""The one compiled module (the wire-columns kernel of the trade hot path); everything else is pyproject.toml."""

from Cython.Build import cythonize
from setuptools import setup

setup(ext_modules=cythonize(["trading_platform/exchanges/wire_columns.pyx"], quiet=True))
