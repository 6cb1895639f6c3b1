"""keep_freed_memory(): let the C allocator reuse freed memory instead of mapping it afresh each time."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 32 << 20  # arrays up to this size come from the heap, not from a fresh mapping
TRIM_THRESHOLD_BYTES = 128 << 20  # free heap kept for reuse before any is given back to the kernel


def keep_freed_memory() -> bool:
    """Make glibc serve the arrays of a request from memory freed by the last one; False without glibc.

    Fingerprinting a clip allocates and frees a few arrays of 0.5-2 MB (frames, spectrum, peaks). By
    default glibc maps each afresh and unmaps it on free, and the kernel faults every page in again:
    1,300 page faults for a 10 s clip, a quarter of its fingerprinting time (6.7 ms against 4.9 ms
    with this, server side on the 1,000-song benchmark; docs/ALGORITHM.md). The heap then keeps up
    to ``TRIM_THRESHOLD_BYTES`` of free memory resident. Process-wide, inherited by forked workers;
    calling it again is harmless.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    except (OSError, AttributeError):
        return False
