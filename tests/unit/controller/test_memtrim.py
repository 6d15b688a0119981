"""The glibc trimmer gives memory freed between live blocks back to the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import memtrim

pytestmark = pytest.mark.skipif(memtrim._libc() is None, reason="needs glibc")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_holes_between_live_blocks_are_returned_after_a_trim() -> None:
    assert memtrim.tune()
    blocks = []
    for _ in range(800):  # 60 KB holes (heap, below the mmap threshold) between survivors
        blocks += [bytearray(60_000), bytearray(600)]
    del blocks[::2]
    before = rss_mib()
    trimmer = memtrim.Trimmer(threshold=0)
    assert trimmer.trim_once() and trimmer.trims == 1
    assert before - rss_mib() > 20  # of ≈ 46 MiB freed
    assert len(blocks) == 800


def test_nothing_to_trim_below_the_threshold() -> None:
    trimmer = memtrim.Trimmer(threshold=1 << 40)
    assert not trimmer.trim_once() and trimmer.trims == 0
