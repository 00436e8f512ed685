"""Keep freed memory for reuse and back large blocks by huge pages: large CPU tensors then
cost few page faults and TLB misses.

glibc's malloc serves big blocks (tens of MB, the size of a layer's activations over all
time steps) with fresh mmap calls and unmaps them on free, so every first touch of every
page of every such tensor costs a page fault. On the Randman network that doubled the time
of a training step. Raising the mmap and trim thresholds (to THRESHOLD and twice that)
makes malloc keep such blocks in its heap and hand them out again (TRIM_THRESHOLD below).

Blocks above THRESHOLD (an SHD-shaped layer's activations over all steps, 0.6 GB) are
still mapped afresh. With 4 KiB pages each costs one page fault per page at its first
touch and, since a time-major scan visits every step's row far apart, a TLB miss at
nearly every step. glibc (2.35 and later) backs such blocks by transparent huge pages
(2 MiB) when its tunable ``glibc.malloc.hugetlb=1`` is set, which it reads only at a
program's start: `restart_with_huge_pages` runs the program again with it, where the
kernel gives huge pages on request (transparent_hugepage ``[madvise]``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

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
    if _off(os.environ.get("SGTHEORY_MALLOPT")):
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


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
GLIBC_HUGETLB = (2, 35)  # the first glibc with the tunable


def _off(value: str | None) -> bool:
    """Whether a switch's value turns it off (0, false, off, no; unset is on)."""
    return (value or "1").strip().lower() in ("0", "false", "off", "no")


def _glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the C library if it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (ValueError, OSError, AttributeError):
        return None


def huge_pages_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with HUGE_PAGES_TUNABLE added to GLIBC_TUNABLES; None where it would
    change nothing: SGTHEORY_HUGEPAGES=0, not Linux with glibc >= 2.35, the kernel's
    transparent huge pages `never` or `always` (then every block has them already), or
    the tunable set already."""
    if _off(environ.get("SGTHEORY_HUGEPAGES")) or not sys.platform.startswith("linux"):
        return None
    version = _glibc_version()
    if version is None or version < GLIBC_HUGETLB:
        return None
    try:
        if "[madvise]" not in THP_MODE.read_text():
            return None
    except OSError:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    joined = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return {**environ, "GLIBC_TUNABLES": joined}


def restart_with_huge_pages() -> None:
    """Run this program again with `huge_pages_environment` (os.execve: same interpreter,
    arguments and process id), or return where that would change nothing. Call it first
    in a script's ``if __name__ == "__main__"`` block, before any work; child processes
    (sweep launchers) inherit the setting. SGTHEORY_HUGEPAGES=0 turns it off."""
    environment = huge_pages_environment(os.environ)
    if environment is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
