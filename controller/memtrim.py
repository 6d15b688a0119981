"""Hand freed heap memory back to the kernel (glibc malloc): fixed thresholds and a trimmer.

Measured in bench/resources.py (1000 nodes, 10 000 pods): after start-up
glibc held ≈ 17 MiB of freed memory (out of a 49 MiB heap) that it never
returned, left by transient buffers - list pages of JSON, the large dicts and
sets of a policy recompute - freed between long-lived blocks, in the arenas of
several threads. Python's own allocator only serves blocks up to 512 bytes;
everything bigger is glibc's.

* ``tune()`` fixes the mmap and trim thresholds at glibc's defaults (128 KiB).
  Left dynamic, glibc raises them each time a large mmapped block is freed, so
  later list pages come from the heap and stay there.
* ``Trimmer`` calls ``malloc_trim(0)`` (which also releases free pages in the
  middle of every arena) once a second while more than ``threshold`` bytes are
  free; it costs ≈ 1 ms and runs with the interpreter lock released.

On a C library without these calls (e.g. musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import threading

LOG = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 128 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has malloc_trim and mallopt)."""
    try:
        lib = ctypes.CDLL(None)
    except OSError:
        return None
    if not (hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt")):
        return None
    if hasattr(lib, "mallinfo2"):
        lib.mallinfo2.restype = _MallInfo2
    return lib


def tune(lib: ctypes.CDLL | None = None) -> bool:
    """Fix glibc's mmap and trim thresholds; False where that is not glibc."""
    lib = lib or _libc()
    if lib is None:
        return False
    ok = lib.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD) == 1
    return lib.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD) == 1 and ok


def free_bytes(lib: ctypes.CDLL) -> int | None:
    """Bytes glibc holds free in its arenas (None without mallinfo2, glibc < 2.33)."""
    if not hasattr(lib, "mallinfo2"):
        return None
    return int(lib.mallinfo2().fordblks)


class Trimmer:
    """A daemon thread that trims the heap while more than ``threshold`` bytes are free."""

    def __init__(self, interval: float = 1.0, threshold: int = 4 << 20) -> None:
        self.interval = interval
        self.threshold = threshold
        self.trims = 0
        self._lib = _libc()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)

    def start(self) -> bool:
        """Start trimming; False (and no thread) where the C library is not glibc."""
        if self._lib is None:
            LOG.info("not glibc: freed heap memory is left to the C library")
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the thread (it is a daemon: stopping is optional)."""
        self._stop.set()

    def trim_once(self) -> bool:
        """Trim if enough is free; return whether it trimmed."""
        assert self._lib is not None
        free = free_bytes(self._lib)
        if free is not None and free < self.threshold:
            return False
        self._lib.malloc_trim(0)
        self.trims += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.trim_once()
