"""Loss, accuracy, firing rates and Fano factors of a network on a split or the "same" set."""

from __future__ import annotations

from typing import Any

import torch

from sgtheory.layers import SpikingNetwork
from sgtheory.losses import accuracy, loss_fn
from sgtheory.stats import fano_factor, firing_rate

from .data import Split, mean_over_batches


@torch.no_grad()
def evaluate(
    net: SpikingNetwork, split: Split, batch_size: int, loss_type: str, dt: float
) -> dict[str, Any]:
    """Loss, accuracy (averaged over batches as `split.average`) and per-layer firing rate
    (Hz, over samples) of a whole split."""
    lossf = loss_fn(loss_type)
    total, losses, accs, sizes = 0, [], [], []
    rates: list[float] = []
    for x, y in split.batches(batch_size):
        out, spikes = net(x)
        n = int(y.shape[0])
        losses.append(float(lossf(out, y)))
        accs.append(accuracy(out, y, loss_type))
        sizes.append(n)
        batch_rates = [firing_rate(s, dt) * n for s in spikes]
        rates = batch_rates if not rates else [a + b for a, b in zip(rates, batch_rates)]
        total += n
    return {
        "loss": mean_over_batches(losses, sizes, split.average),
        "acc": mean_over_batches(accs, sizes, split.average),
        "rates": [r / total for r in rates],
    }


@torch.no_grad()
def run_same(
    net: SpikingNetwork, same: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Readout and hidden spikes (uint8) of every trial of the "same" set."""
    outs, layers = [], []
    for start in range(0, same.shape[0], batch_size):
        out, spikes = net(same[start : start + batch_size])
        outs.append(out)
        layers.append([s.to(torch.uint8) for s in spikes])
    return torch.cat(outs), [torch.cat(parts) for parts in zip(*layers)]


def variability(
    spikes: list[torch.Tensor], dt: float, window: int, mode: str
) -> dict[str, list[float]]:
    """Per-layer firing rate (Hz) and Fano factor across trials of the "same" set.

    Each layer's spikes (trials, time, channels, positions) are flattened to neurons; a
    Fano factor is nan (null in JSON) when no neuron of the layer fired.
    """
    rates, fanos = [], []
    for s in spikes:
        rates.append(firing_rate(s, dt))
        flat = s.reshape(s.shape[0], s.shape[1], -1)
        fanos.append(fano_factor(flat, window, mode, trial_dim=0))
    return {"rates": rates, "fano": fanos}
