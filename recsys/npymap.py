"""Read-only, memory-mapped `.npy` arrays that hold no file descriptor.

A bundle's arrays are mapped rather than read: the pages come from the page cache, so every worker
of a host (and every app loaded from the same file) shares them instead of holding a private copy.
`np.load(mmap_mode="r")` would do, but Python's `mmap` keeps a duplicate of the file's descriptor
open for as long as the array lives — about 30 per bundle, so a server with hundreds of resident
apps would run out of descriptors. Here the file is mapped with the C library's `mmap` and closed at
once; the mapping is released when the last array (or view) over it is gone.

The arrays are not writeable (numpy refuses to write into them, and to make them writeable): code
that must change a loaded array copies it first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("minirec.bundle")

_PROT_READ = mmap.PROT_READ
_MAP_SHARED = mmap.MAP_SHARED


def _libc() -> Any:
    """The C library's mmap/munmap, or None where ctypes cannot reach them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Mapping:
    """One mapped file; numpy arrays over it keep it alive (as their `base`), and it unmaps itself
    when the last of them is collected."""

    def __init__(self, address: int, length: int, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 fortran: bool) -> None:
        self._address, self._length = address, length
        self.__array_interface__ = {
            "version": 3, "shape": shape, "typestr": dtype.str,
            "descr": dtype.descr, "data": (address + offset, True),  # True: read-only
            "strides": None if not fortran else tuple(np.cumprod((dtype.itemsize,) + shape[:-1]).tolist()),
        }

    def __del__(self) -> None:
        if self._address and _LIBC is not None:
            _LIBC.munmap(self._address, self._length)
            self._address = 0


def _read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a `.npy` file; ValueError for object arrays."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{path.name}: object arrays would need pickle")
    return tuple(shape), bool(fortran), dtype, offset


def map_npy(path: str | os.PathLike) -> np.ndarray:
    """A read-only array over the pages of the `.npy` file at `path` (never unpickles).

    Falls back to `np.load(mmap_mode="r")` where the C library cannot be called, and to reading the
    file when it cannot be mapped (an empty array, a file system without mmap)."""
    path = Path(path)
    shape, fortran, dtype, offset = _read_header(path)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0 or _LIBC is None:
        return _fallback(path, mapped=size > 0)
    length = offset + size
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < length:
            raise ValueError(f"{path.name}: the file is shorter than its header says")
        address = _LIBC.mmap(None, length, _PROT_READ, _MAP_SHARED, fd, 0)
    finally:
        os.close(fd)  # the mapping stays valid without the descriptor
    if address is None or address == _MAP_FAILED:
        log.warning("%s: mmap failed (%s); reading it instead", path, os.strerror(ctypes.get_errno()))
        return _fallback(path, mapped=False)
    array = np.asarray(_Mapping(address, length, offset, shape, dtype, fortran))
    assert not array.flags.writeable
    return array


def _fallback(path: Path, mapped: bool) -> np.ndarray:
    array = np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
    array = array.view(np.ndarray)  # a plain array (a memmap's slices cost more on the request path)
    array.flags.writeable = False
    return array
