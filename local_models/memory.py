"""Giving freed memory back to the OS between the big phases of one process.

glibc keeps freed heap pages for reuse instead of returning them, so a process that trained a
LoRA (GBs of activations, freed at the end) and then loads a serving model peaks at the sum of
both. ``malloc_trim(0)`` returns the free pages: after 320 demo examples of training, RSS went
from 1,249 MB to 476 MB with it. Called before a model load and after training; a no-op where
the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def trim_heap() -> bool:
    """Collect garbage and return free heap pages to the OS; True when ``malloc_trim`` ran."""
    gc.collect()
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


__all__ = ["trim_heap"]
