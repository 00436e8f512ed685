"""Read spike-train-matching run folders and compute what the notebooks plot.

A run folder holds data/<kind>_<e>.npy chunks (e = epochs completed at the end of the
chunk) and results.json (with the run's status); see ../README.md. Spike histories are opened
memory-mapped and reduced chunk by chunk, so a full 1500-epoch run never sits in memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from sgtheory.spikes import method_pair
from sgtheory.stats import (
    cv_isi,
    fano_factor,
    firing_rates_per_neuron,
    interspike_intervals,
)

LAYER_NAMES = {"h": "hidden", "o": "output"}


def results(run_dir: str | Path) -> dict:
    """The run's results.json (config, losses, rates, timing)."""
    return json.loads((Path(run_dir) / "results.json").read_text())


def config(run_dir: str | Path) -> dict:
    """The run's resolved configuration."""
    return results(run_dir)["config"]


def stochastic(run_dir: str | Path) -> bool:
    """Whether the run trained a stochastic network (its method's escape noise is not a step).

    Runs of earlier versions stored `method.stochastic`; newer ones name the method and its
    `sigm` variant of `sgtheory.spikes.METHODS`.
    """
    method = config(run_dir)["method"]
    if "stochastic" in method:
        return bool(method["stochastic"])
    return method_pair(method["name"], bool(method["sigm"]))[0] != "step"


def chunk_files(run_dir: str | Path, kind: str) -> list[tuple[int, Path]]:
    """(epoch_end, path) of every chunk of `kind` (e.g. 'spk_hist_h'), in epoch order."""
    pattern = re.compile(rf"^{re.escape(kind)}_(\d+)\.npy$")
    found = []
    for path in (Path(run_dir) / "data").iterdir():
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise FileNotFoundError(f"no {kind}_<epoch>.npy files in {Path(run_dir) / 'data'}")
    return sorted(found)


def history(run_dir: str | Path, kind: str) -> np.ndarray:
    """All chunks of a small history (losses, mean updates) concatenated over epochs."""
    return np.concatenate([np.load(path) for _, path in chunk_files(run_dir, kind)])


def spikes_at(run_dir: str | Path, kind: str, epoch: int) -> np.ndarray:
    """Spikes (trials, batch, steps, neurons) of one epoch (negative counts from the end)."""
    chunks = chunk_files(run_dir, kind)
    total = chunks[-1][0]
    epoch = epoch % total
    start = 0
    for end, path in chunks:
        arr = np.load(path, mmap_mode="r")
        start = end - arr.shape[0]
        if start <= epoch < end:
            return np.array(arr[epoch - start])
    raise IndexError(f"epoch {epoch} not found in {kind}")


def inputs_and_target(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Frozen input and target rasters, each (batch, steps, neurons)."""
    data = Path(run_dir) / "data"
    return np.load(data / "x_data.npy"), np.load(data / "z_data.npy")


def rate_over_epochs(run_dir: str | Path, kind: str, dt: float) -> np.ndarray:
    """Mean population firing rate (Hz) of each epoch, from spike chunks of `kind`."""
    out = []
    for _, path in chunk_files(run_dir, kind):
        arr = np.load(path, mmap_mode="r")
        for start in range(0, arr.shape[0], 50):  # bounded memory
            block = np.asarray(arr[start : start + 50], dtype=np.float32)
            out.append(block.mean(axis=(1, 2, 3, 4)) / dt)
    return np.concatenate(out)


def fano_over_epochs(
    run_dir: str | Path, kind: str, window: int, every: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, Fano factor across trials) every `every` epochs; nan with a single trial."""
    epochs, values = [], []
    for end, path in chunk_files(run_dir, kind):
        arr = np.load(path, mmap_mode="r")
        start = end - arr.shape[0]
        for e in range(start, end):
            if e % every:
                continue
            spk = torch.from_numpy(np.asarray(arr[e - start], dtype=np.float32))
            epochs.append(e)
            values.append(fano_factor(spk, window) if spk.shape[0] > 1 else np.nan)
    return np.asarray(epochs), np.asarray(values, dtype=float)


def isi_stats(spikes: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """ISIs (s), CV of ISIs per train and firing rate (Hz) per neuron of (trials, b, T, N)."""
    flat = spikes.reshape((-1,) + spikes.shape[-2:])  # (trials * batch, T, N)
    return {
        "isi": interspike_intervals(flat, dt),
        "cv": cv_isi(flat, dt),
        "rates": firing_rates_per_neuron(torch.from_numpy(flat.astype(np.float32)), dt).numpy(),
    }


def raster(ax, spikes: np.ndarray, dt: float, title: str = "", **kwargs) -> None:
    """Draw a raster of spikes (steps, neurons) with time in ms on the x axis."""
    t, n = np.nonzero(spikes)
    ax.scatter(
        t * dt * 1e3,
        n,
        s=kwargs.pop("s", 0.6),
        c=kwargs.pop("c", "k"),
        marker="|",
        linewidths=0.6,
        **kwargs,
    )
    ax.set_xlim(0, spikes.shape[0] * dt * 1e3)
    ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    if title:
        ax.set_title(title, fontsize=9)


def save_figure(fig, plot_dir: str | Path, name: str) -> Path:
    """Save `fig` as plot_dir/name.png (and .pdf), creating the folder; returns the PNG path."""
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_dir / f"{name}.pdf", bbox_inches="tight")
    path = plot_dir / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
