"""Datasets: Randman (generated locally from a seed) and Spiking Heidelberg Digits (SHD).

All rasters are shaped (samples, time steps, units); labels are int64.
"""

from __future__ import annotations

import torch

from sgtheory.data.randman import make_randman, split_dataset
from sgtheory.data.shd import (
    SHD_CLASSES,
    SHD_FILES,
    SHD_UNITS,
    SHD_URL,
    bin_spikes,
    fetch_shd,
    load_shd,
    read_shd_events,
    resolve_shd,
    split_validation,
    write_shd_like,
)


def same_set(x: torch.Tensor, index: int = 0, repeats: int = 400) -> torch.Tensor:
    """Sample `index` of x repeated `repeats` times, (repeats, T, U): one input for many trials.

    Used to measure trial-to-trial variability of stochastic networks. Returns a dense copy
    (not an expanded view), so it is safe to modify or move; sparse x is densified.
    """
    from sgtheory.errors import ConfigError, check_positive

    check_positive("same_set.repeats", repeats, integer=True)
    n = x.shape[0]
    if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
        raise ConfigError(f"same_set.index={index!r} is not valid; it must be in 0..{n - 1}")
    one = x.index_select(0, torch.tensor([index % n]))
    if one.is_sparse:
        one = one.to_dense()
    return one.repeat(int(repeats), *([1] * (x.dim() - 1)))


__all__ = [
    "SHD_CLASSES",
    "SHD_FILES",
    "SHD_UNITS",
    "SHD_URL",
    "bin_spikes",
    "fetch_shd",
    "load_shd",
    "make_randman",
    "read_shd_events",
    "resolve_shd",
    "same_set",
    "split_dataset",
    "split_validation",
    "write_shd_like",
]
