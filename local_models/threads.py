"""CPU threads for torch: how many, and why only one thread in the process should own them.

libgomp (torch's OpenMP on Linux) keeps a team of worker threads per thread that ran a parallel
op, and lets them spin between ops only while the process has no more OpenMP threads than
CPUs. The thread that loaded the model keeps its team after loading, so the batcher's model
thread gets a second one, both teams go to sleep between ops, and every op pays a futex
wake-up (~35 us here). Decoding the int4 model is hundreds of small ops per token, so that
halved it (measured: 28 tok/s in the batcher thread vs 57 tok/s in the loading thread). Freeing
the loading thread's team once it is done (``release_thread_pool``) gives the model thread the
machine back; the team is re-created if that thread runs torch again.
"""

from __future__ import annotations

import ctypes
import functools
import os

OMP_PAUSE_HARD = 2
"""``omp_pause_hard`` from OpenMP 5.0's ``omp_pause_resource_t``: free the threads."""


def default_threads() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime already loaded into this process (torch's), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/lib" in line}
    except OSError:  # pragma: no cover - not Linux
        return None
    for path in sorted(paths):
        name = os.path.basename(path)
        if name.startswith(("libgomp", "libiomp", "libomp")):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "omp_pause_resource_all"):
                lib.omp_pause_resource_all.argtypes = [ctypes.c_int]
                return lib
    return None


def release_thread_pool() -> bool:
    """Free the calling thread's OpenMP worker threads; True when a runtime did it.

    Call it on a thread that is done with torch for now (after loading a model or building a
    new adapter), so the model thread's team is the only one. Safe while other threads run
    parallel ops; the caller's next op re-creates its team.
    """
    lib = _openmp()
    return lib is not None and lib.omp_pause_resource_all(OMP_PAUSE_HARD) == 0


__all__ = ["default_threads", "release_thread_pool"]
