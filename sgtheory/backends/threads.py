"""Default number of CPU threads: the cores this process may run on.

`os.cpu_count()` counts every core of the machine; a job started under `taskset`, a
SLURM allocation or a container's CPU set may use fewer, and more threads than cores makes
OpenMP's spinning threads wait on each other (a step several times slower). torch's CPU
operations and the C kernels (`backends.native`, one worker per torch thread) both
follow `torch.set_num_threads`, so setting it once covers both.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's CPU affinity mask (all cores where there is no such mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def default_threads(setting: int | None = None) -> int:
    """`setting` if given, else `usable_cores()`; a ValueError for a setting below 1."""
    if setting is None:
        return usable_cores()
    if isinstance(setting, bool) or int(setting) != setting or setting < 1:
        raise ValueError(f"threads={setting!r} is not valid; give a whole number >= 1 or null")
    return int(setting)
