"""Keep freed memory for reuse: large CPU tensors then cost no page faults.

glibc's malloc serves big blocks (tens of MB, the size of a layer's activations over all
time steps) with fresh mmap calls and unmaps them on free, so every first touch of every
page of every such tensor costs a page fault. On the Randman network that doubled the time
of a training step. Raising the mmap and trim thresholds (to THRESHOLD and twice that)
makes malloc keep such blocks in its heap and hand them out again (TRIM_THRESHOLD below).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
# Blocks up to 64 MiB come from the reusable heap: a Randman layer's activations over all
# steps at batch 400 (51 MB) then cost no page faults. Bigger ones (an SHD-shaped layer's,
# 0.6 GB) are still mapped and returned at once: with a 1 GiB threshold the SHD-shaped step
# ran faster but peaked at 6.5 GB instead of 3.8 GB, since freed giant blocks stayed held.
THRESHOLD = 1 << 26
# Freed memory at the top of the heap is returned to the OS only above this much. At 128 MiB
# (twice THRESHOLD) a Randman step gave back and faulted in again up to 350 MB of its
# activations at every step (15,000-90,000 minor faults, up to about 100 ms a step); at
# 1 GiB none after the first step, while the SHD-shaped step's peak stays under 4 GB (its
# largest blocks are mapped, above THRESHOLD, and go back at once).
TRIM_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Ask glibc malloc to keep and reuse freed blocks; True if it took effect.

    Does nothing (False) off Linux/glibc, or when SGTHEORY_MALLOPT=0. Call it once, early,
    in a program that trains on the CPU; it concerns the whole process.
    """
    if os.environ.get("SGTHEORY_MALLOPT", "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
