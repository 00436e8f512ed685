"""Figures of a run (PNG): rasters, two classes, trial variability, curves.

Figures are `matplotlib.figure.Figure` objects saved straight to PNG, without pyplot: nothing
here changes the matplotlib backend or pyplot's state of the process that imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure


def _raster(ax, spikes: torch.Tensor, dt: float, color: str = "k") -> None:
    """Spikes (time, ...) as dots: x = time (s), y = neuron."""
    flat = spikes.reshape(spikes.shape[0], -1).cpu().numpy()
    t, n = np.nonzero(flat > 0)
    ax.scatter(t * dt, n, s=1.5, c=color, marker="|", linewidths=0.6)
    ax.set_xlim(0, flat.shape[0] * dt)
    ax.set_ylim(-0.5, flat.shape[1] - 0.5)


def snapshot(
    path: Path,
    x: torch.Tensor,
    spikes: list[torch.Tensor],
    out: torch.Tensor,
    labels: torch.Tensor,
    dt: float,
    dpi: int,
    title: str,
) -> Path:
    """Input, every hidden layer and readout potentials (rows) for each sample (columns)."""
    nb_rows, nb_cols = len(spikes) + 2, x.shape[0]
    fig = Figure(figsize=(2.6 * nb_cols + 0.6, 1.5 * nb_rows))
    axes = fig.subplots(nb_rows, nb_cols, squeeze=False, sharex=True)
    pred = out.max(dim=1).values.argmax(dim=-1)
    time = np.arange(out.shape[1]) * dt
    for j in range(nb_cols):
        _raster(axes[0, j], x[j], dt)
        axes[0, j].set_title(f"label {int(labels[j])}, pred {int(pred[j])}", fontsize=8)
        for i, s in enumerate(spikes):
            _raster(axes[i + 1, j], s[j], dt, color=f"C{i}")
        axes[-1, j].plot(time, out[j].cpu().numpy(), lw=0.7)
        axes[-1, j].set_xlabel("time (s)")
    for i, name in enumerate(
        ["input", *[f"hidden {k + 1}" for k in range(len(spikes))], "readout"]
    ):
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def trial_rasters(
    path: Path,
    trials: dict[str, torch.Tensor],
    dt: float,
    dpi: int,
    title: str,
) -> Path:
    """One neuron's spikes (trials x time) under each method, side by side."""
    fig = Figure(figsize=(3.6 * len(trials), 2.8))
    axes = fig.subplots(1, len(trials), squeeze=False)
    for ax, (name, spikes) in zip(axes[0], trials.items()):
        arr = spikes.cpu().numpy()  # (trials, time)
        trial, t = np.nonzero(arr > 0)
        ax.scatter(t * dt, trial, s=2, c="k", marker="|")
        ax.set_xlim(0, arr.shape[1] * dt)
        ax.set_ylim(-0.5, arr.shape[0] - 0.5)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("trial")
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def training_curves(path: Path, history: dict[str, list[float]], dpi: int) -> Path:
    """Loss and accuracy per epoch, train and validation."""
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ["loss", "acc"]):
        ax.plot(epochs, history[f"train_{key}"], label="train")
        ax.plot(epochs, history[f"valid_{key}"], label="valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
