"""Spike statistics: firing rates, Fano factors across trials, inter-spike intervals.

Shapes follow the library convention (batch, time, ...) with trials as an extra leading
dimension where needed: (trials, batch, time, ...).
"""

from __future__ import annotations

import numpy as np
import torch

from sgtheory.errors import check_choice, check_positive

FANO_MODES = ("sliding", "binned")


def firing_rate(spikes: torch.Tensor, dt: float) -> float:
    """Mean firing rate in Hz of spikes shaped (batch, time, ...): spikes per neuron per second."""
    check_positive("dt", dt)
    nb_steps = spikes.shape[1]
    return float(spikes.float().sum(dim=1).mean() / (nb_steps * dt))


def firing_rates_per_neuron(spikes: torch.Tensor, dt: float) -> torch.Tensor:
    """Rate in Hz of each neuron, averaged over the batch; spikes (batch, time, ...) -> (...)."""
    check_positive("dt", dt)
    return spikes.float().sum(dim=1).mean(dim=0) / (spikes.shape[1] * dt)


def window_counts(spikes: torch.Tensor, window: int, mode: str = "sliding") -> torch.Tensor:
    """Spike counts in windows of `window` steps along dim -2 of (..., time, neurons).

    'sliding': every window start (stride 1), giving time - window + 1 windows;
    'binned': non-overlapping bins, dropping a last partial bin.
    """
    check_positive("fano.bin_dt", window, integer=True)
    check_choice("fano.mode", mode, FANO_MODES)
    window = int(window)
    nb_steps = spikes.shape[-2]
    if window > nb_steps:
        raise ValueError(f"fano.bin_dt={window} is longer than the {nb_steps} time steps")
    csum = torch.nn.functional.pad(spikes.double().cumsum(dim=-2), (0, 0, 1, 0))
    step = 1 if mode == "sliding" else window
    starts = torch.arange(0, nb_steps - window + 1, step, device=spikes.device)
    return csum.index_select(-2, starts + window) - csum.index_select(-2, starts)


def fano_factor(
    spikes: torch.Tensor, window: int, mode: str = "sliding", trial_dim: int = 0
) -> float:
    """Fano factor across repeated trials of the same input.

    Spike counts in windows of `window` steps (see `window_counts`); for every neuron and
    window, the variance over trials (unbiased) divided by the mean; then the nan-mean over
    neurons and windows (windows where a neuron never fired give nan and are skipped).
    `spikes` is shaped (..., time, neurons) with trials along `trial_dim`. A deterministic
    network gives exactly 0. Returns nan if no neuron fired at all.
    """
    if spikes.shape[trial_dim] < 2:
        raise ValueError("fano_factor needs at least 2 trials along trial_dim")
    counts = window_counts(spikes, window, mode)
    mean = counts.mean(dim=trial_dim)
    var = counts.var(dim=trial_dim, unbiased=True)
    ratio = torch.where(mean > 0, var / mean.clamp_min(1e-300), torch.full_like(mean, float("nan")))
    return float(torch.nanmean(ratio)) if torch.isfinite(ratio).any() else float("nan")


def interspike_intervals(spikes: np.ndarray | torch.Tensor, dt: float) -> np.ndarray:
    """All inter-spike intervals (seconds) of spike trains shaped (..., time, neurons)."""
    arr = np.asarray(spikes.detach().cpu() if isinstance(spikes, torch.Tensor) else spikes)
    arr = np.moveaxis(arr, -2, -1).reshape(-1, arr.shape[-2])
    trains, times = np.nonzero(arr > 0)
    if times.size < 2:
        return np.zeros(0)
    same = trains[1:] == trains[:-1]
    return (np.diff(times)[same]) * dt


def cv_isi(spikes: np.ndarray | torch.Tensor, dt: float, min_spikes: int = 3) -> np.ndarray:
    """Coefficient of variation of the ISIs of each spike train with >= min_spikes spikes."""
    arr = np.asarray(spikes.detach().cpu() if isinstance(spikes, torch.Tensor) else spikes)
    arr = np.moveaxis(arr, -2, -1).reshape(-1, arr.shape[-2])
    cvs = []
    for train in arr:
        times = np.flatnonzero(train > 0)
        if times.size >= min_spikes:
            isi = np.diff(times) * dt
            cvs.append(isi.std() / isi.mean())
    return np.asarray(cvs)
