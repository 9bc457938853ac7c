"""Build hook for the one C extension, the BM25 query kernel; all other metadata is in pyproject.toml.

Optional: if it cannot be compiled, search/bm25.py answers the same queries through NumPy, more slowly.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("search._bm25_kernel", ["search/_bm25_kernel.c"], optional=True)])
