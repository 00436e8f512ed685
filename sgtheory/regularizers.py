"""Activity regularisers on spike counts per neuron (upper and lower bounds, L1 and L2).

With counts c = spikes summed over time (optionally averaged over `dims`), the penalty is
strength * mean(relu(c - threshold)^p) for an upper bound and
strength * mean(relu(threshold - c)^p) for a lower bound, p = 1 (L1) or 2 (L2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sgtheory.errors import check_choice

BOUNDS = ("upper", "lower")
ORDERS = (1, 2)


@dataclass(frozen=True)
class ActivityRegularizer:
    """Penalty on spike counts; `dims` are dims of the per-sample counts to average over.

    For spikes (batch, time, channels, length), counts are (batch, channels, length);
    dims=(-2, -1) averages over channels and positions (the population mean per sample).
    """

    bound: str
    order: int
    strength: float
    threshold: float
    dims: Sequence[int] | None = None

    def __post_init__(self):
        check_choice("regularizer bound", self.bound, BOUNDS)
        check_choice("regularizer order", self.order, ORDERS)

    def __call__(self, spikes: torch.Tensor) -> torch.Tensor:
        return self.on_counts(sum_over_time(spikes))

    def on_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """The penalty from counts already summed over time (batch, ...)."""
        if self.dims:
            counts = counts.mean(dim=tuple(self.dims))
        excess = counts - self.threshold if self.bound == "upper" else self.threshold - counts
        return self.strength * torch.relu(excess).pow(self.order).mean()


def total_penalty(
    regularizers: Sequence[ActivityRegularizer], spikes: list, counted: bool = False
) -> torch.Tensor:
    """Sum of every regulariser over every hidden layer's spikes; counted=True: the list
    holds each layer's counts (`SpikingNetwork(..., counts=True)`), the same penalty."""
    total = spikes[0].new_zeros(())
    for reg in regularizers:
        for s in spikes:
            total = total + (reg.on_counts(s) if counted else reg(s))
    return total


def sum_over_time(spikes: torch.Tensor) -> torch.Tensor:
    """spikes.sum(dim=1) for (batch, time, ...) spikes, summed in their storage order.

    The network's spikes are views of time-major storage, with channels last after
    convolutions; torch reduces such a permuted view about 5x slower than the same numbers
    laid out in order. Sums of 0/1 values are exact, so the order does not change them.
    """
    steps = spikes.movedim(1, 0)  # (time, batch, ...)
    if steps.dim() < 2:
        return spikes.sum(dim=1)
    inner = sorted(range(1, steps.dim()), key=lambda d: -steps.stride(d))
    ordered = steps.permute(0, *inner)
    if not ordered.is_contiguous():
        return spikes.sum(dim=1)
    back = sorted(range(len(inner)), key=lambda i: inner[i])  # inverse of `inner`
    return ordered.sum(dim=0).permute(*back)
