"""Memory a run needs at its configured sizes, and memory the machine has, before allocating.

The estimate adds to the process's own memory (the libraries, measured) what
`stm.training` holds at its peak: the frozen input and the target, the filter matrices,
the weights, one chunk of history arrays (`ChunkBuffer`), the loss lists of the whole run,
and the temporaries of one epoch (forward pass, learning rule and validation pass, each a
few float32 arrays of time x trials x batch x neurons). It is checked against measured
peaks in `tests/spike_train_matching/test_stm_reliability.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# float32 arrays of (time, trials, batch, hidden + output) alive at once during an epoch:
# the scan's input, spikes, membranes and draws of both layers, the learning rule's error,
# filtered error, surrogate and products, and the loss's differences
EPOCH_ARRAYS = 14
LATER_IMPORTS = 100 * 2**20  # what a run imports after its settings are checked (wandb, ...)
PER_EPOCH_BYTES = 6 * 40  # the loss and update lists (Python floats) of every epoch


def process_peak() -> int:
    """The peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def estimate(cfg: Any, base: int | None = None) -> tuple[int, dict[str, int]]:
    """(bytes, bytes per part) the run needs at its peak, from the settings and `base`, the
    memory of the process before its arrays (default: this process's peak so far, with the
    libraries a run imports later)."""
    ds = cfg.dataset
    t, b = int(ds.nb_steps), int(ds.batch_size)
    ni, nh, no = int(ds.nb_inputs), int(ds.nb_hidden), int(ds.nb_outputs)
    r = int(cfg.method.nb_trials)
    rv = int(cfg.valid_nb_trials) if cfg.validate_with_other_method else 0
    chunk = min(int(cfg.logging_freq), int(cfg.nb_epochs))
    neurons = nh + no
    per_epoch = 0
    if cfg.save_spk:
        per_epoch += (r + rv) * b * t * neurons
    if cfg.save_mem:
        per_epoch += 4 * r * b * t * neurons
    weights = 4 * (ni * nh + nh * no)
    per_epoch += weights * (int(bool(cfg.save_w)) + int(bool(cfg.save_dw)))
    parts = {
        "input and target": 9 * t * b * ni + 4 * t * b * no,
        "filter matrices": 3 * 8 * t * t,
        "weights and updates": 4 * weights,
        "history of one chunk": chunk * per_epoch,
        "loss lists": PER_EPOCH_BYTES * int(cfg.nb_epochs),
        "one epoch's arrays": EPOCH_ARRAYS * 4 * t * (r + rv) * b * neurons,
        "libraries": process_peak() + LATER_IMPORTS if base is None else base,
    }
    return sum(parts.values()), parts


def available() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, or less where a
    cgroup (container, SLURM job) limits the memory; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(max(int(limit) - int(used), 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def human(n: float) -> str:
    """Bytes as a short human-readable size (binary units, up to PiB)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = 0
    while abs(n) >= 1024 and power < len(units) - 1:
        n /= 1024
        power += 1
    return f"{n:.0f} B" if power == 0 else f"{n:.1f} {units[power]}"
