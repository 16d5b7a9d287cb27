"""The OpenMP team release the batcher relies on for speed (``local_models/threads.py``)."""

from __future__ import annotations

import threading

import pytest


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
def test_a_thread_can_free_its_openmp_team_and_torch_still_works_after():
    import torch

    from local_models.threads import release_thread_pool

    x = torch.arange(300_000, dtype=torch.float32)
    expected = float((x + x).sum())  # a parallel op: this thread now has a team
    freed: list[bool] = []

    def other_thread() -> None:
        float((x * 2).sum())
        freed.append(release_thread_pool())
        freed.append(float((x + x).sum()) == expected)  # the team comes back on demand

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert release_thread_pool()  # torch's OpenMP runtime was found and did it
    assert freed == [True, True]
    assert float((x + x).sum()) == expected


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
def test_freed_heap_goes_back_to_the_os_before_a_model_load():
    import platform

    from local_models.memory import trim_heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB in heap-sized blocks
    del blocks
    assert trim_heap()
