"""Datasets of a config as batch sources: Randman (dense, generated) and SHD (events).

Every split is a `Split` whose `batch(idx)` returns inputs shaped (batch, time, 1, units),
the layout of the conv layers (one input channel), and int64 labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtheory.data import (
    bin_spikes,
    make_randman,
    read_shd_events,
    resolve_shd,
    same_set,
    split_dataset,
    split_validation,
)
from sgtheory.data.shd import check_shd_events
from sgtheory.errors import ConfigError, DataError, check_choice

log = logging.getLogger(__name__)

# How a split's loss and accuracy are averaged over its batches: "batch" gives every batch
# the same weight (the original's convention: the mean of per-batch values, so a partial last
# batch weighs as much as a full one), "sample" gives every sample the same weight.
METRIC_AVERAGES = ("batch", "sample")


def metric_average(cfg: Any) -> str:
    """The checked `dataset.metric_average` setting ("batch" where a config lacks it)."""
    value = cfg.dataset.get("metric_average", "batch")
    return check_choice("dataset.metric_average", value, METRIC_AVERAGES)


def mean_over_batches(values: Sequence[float], sizes: Sequence[int], average: str) -> float:
    """Mean of per-batch means `values` of batches of `sizes` samples, weighted as `average`.

    "batch": sum(values) / len(values); "sample": sum(values * sizes) / sum(sizes).
    """
    check_choice("dataset.metric_average", average, METRIC_AVERAGES)
    if len(values) != len(sizes) or not len(values):
        raise ValueError(f"{len(values)} batch values for {len(sizes)} batch sizes")
    if average == "batch":
        return float(sum(values) / len(values))
    return float(sum(v * n for v, n in zip(values, sizes)) / sum(sizes))


class Split:
    """A set of samples; `batch(idx)` gives (inputs (B, T, 1, U) float32, labels (B,))."""

    labels: torch.Tensor
    device: torch.device | str = "cpu"  # where `batch` puts its tensors
    average: str = "batch"  # how its loss and accuracy are averaged (METRIC_AVERAGES)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def batches(self, batch_size: int):
        """Consecutive batches in order (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))))


class DenseSplit(Split):
    """Samples held as a dense raster (N, T, U)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.labels = x, y

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x.index_select(0, idx).unsqueeze(2).float()
        return x.to(self.device), self.labels.index_select(0, idx).to(self.device)


class EventSplit(Split):
    """Samples held as spike events, binned per batch (SHD: a dense raster would take ~8 GB)."""

    def __init__(
        self,
        times: Sequence[np.ndarray],
        units: Sequence[np.ndarray],
        labels: torch.Tensor,
        nb_steps: int,
        dt: float,
        nb_units: int,
    ):
        self.times, self.units, self.labels = list(times), list(units), labels
        self.nb_steps, self.dt, self.nb_units = nb_steps, dt, nb_units

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = idx.tolist()
        x = bin_spikes(
            [self.times[i] for i in rows],
            [self.units[i] for i in rows],
            self.nb_steps,
            self.dt,
            self.nb_units,
        )
        return x.unsqueeze(2).to(self.device), self.labels.index_select(0, idx).to(self.device)


@dataclass
class Data:
    """train / valid / test splits and the "same" set (one test sample repeated)."""

    train: Split
    valid: Split
    test: Split
    same: torch.Tensor  # (repeats, T, 1, U)
    same_label: int
    files: dict[str, dict[str, int]] | None = None  # per SHD file: samples, spikes, dropped

    def to(self, device: torch.device | str) -> Data:
        """Make every split yield batches on `device`."""
        for split in (self.train, self.valid, self.test):
            split.device = device
        self.same = self.same.to(device)
        return self

    def averaged(self, average: str) -> Data:
        """Make every split report loss and accuracy averaged as `average` (METRIC_AVERAGES)."""
        check_choice("dataset.metric_average", average, METRIC_AVERAGES)
        for split in (self.train, self.valid, self.test):
            split.average = average
        return self


def _same(test: Split, cfg: Any) -> tuple[torch.Tensor, int]:
    index = int(cfg.fano.sample_index)
    if not 0 <= index < len(test):
        raise ConfigError(
            f"fano.sample_index={index} is not valid; the test set has {len(test)} samples"
        )
    x, y = test.batch(torch.tensor([index]))
    return same_set(x, 0, int(cfg.fano.repeats)), int(y[0])


def load_randman(cfg: Any) -> Data:
    """Generate Randman from `dataset.seed` (shuffled once) and cut it into consecutive blocks."""
    ds = cfg.dataset
    x, y = make_randman(
        nb_classes=ds.nb_classes,
        nb_units=ds.nb_units,
        nb_steps=ds.nb_steps,
        step_frac=ds.step_frac,
        nb_samples=ds.nb_samples,
        nb_spikes=ds.nb_spikes,
        alpha=ds.alpha,
        dim_manifold=ds.dim_manifold,
        seed=ds.seed,
        progress=bool(cfg.get("progress", True)),
    )
    parts = split_dataset(x, y, tuple(ds.split))
    splits = {k: DenseSplit(*v) for k, v in parts.items()}
    _check_sizes(splits, cfg, "dataset.nb_samples", cfg.dataset.nb_samples)
    same, label = _same(splits["test"], cfg)
    return Data(splits["train"], splits["valid"], splits["test"], same, label)


def _check_sizes(splits: dict[str, Split], cfg: Any, setting: str, value: Any) -> None:
    """ConfigError if a split is empty (the epoch's averages would divide by zero)."""
    empty = [name for name, split in splits.items() if len(split) == 0]
    if empty:
        sizes = ", ".join(f"{name} {len(split)}" for name, split in splits.items())
        raise ConfigError(
            f"{setting}={value!r} is not valid: it leaves the {' and '.join(empty)} set(s) "
            f"empty ({sizes} samples); use more samples or other split fractions"
        )


def _read(path: Path, cfg: Any) -> tuple[list, list, torch.Tensor, dict[str, int]]:
    """Read one SHD file, checked whole against the settings; keep `dataset.max_samples`."""
    ds = cfg.dataset
    try:
        times, units, labels = read_shd_events(path)
        report = check_shd_events(
            path,
            times,
            units,
            labels,
            int(ds.nb_units),
            int(ds.nb_classes),
            int(ds.nb_steps),
            float(ds.dt),
            bool(ds.get("allow_silent_samples", False)),
        )
    except DataError as err:
        raise DataError(f"dataset.datadir={ds.datadir}: {err}") from None
    if report["spikes_beyond_duration"]:
        log.warning(
            "%s: %d of %d spikes (in %d samples) lie at or after %g s, beyond the input, and "
            "are dropped",
            path,
            report["spikes_beyond_duration"],
            report["spikes"],
            report["samples_with_spikes_beyond_duration"],
            int(ds.nb_steps) * float(ds.dt),
        )
    n = ds.max_samples
    if n is not None:
        times, units, labels = times[:n], units[:n], labels[:n]
    return times, units, torch.from_numpy(np.asarray(labels, dtype=np.int64)), report


def shd_paths(cfg: Any) -> dict[str, Path]:
    """The SHD files (found in dataset.datadir or downloaded); raises FileNotFoundError."""
    ds = cfg.dataset
    return resolve_shd(ds.datadir, download=bool(ds.download), cache_dir=ds.cache_dir)


def load_shd_splits(cfg: Any, paths: dict[str, Path]) -> Data:
    """Official train file minus a seeded validation share; the official test file."""
    ds = cfg.dataset
    make = {"nb_steps": int(ds.nb_steps), "dt": float(ds.dt), "nb_units": int(ds.nb_units)}
    times, units, labels, report = _read(paths["train"], cfg)
    t_times, t_units, t_labels, t_report = _read(paths["test"], cfg)
    index = torch.arange(len(labels))
    parts = split_validation(index, labels, float(ds.valid_fraction), seed=int(ds.seed))
    train_idx, valid_idx = parts["train"][0].tolist(), parts["valid"][0].tolist()

    def subset(rows: list[int]) -> EventSplit:
        return EventSplit(
            [times[i] for i in rows],
            [units[i] for i in rows],
            labels[torch.tensor(rows, dtype=torch.long)],
            **make,
        )

    test = EventSplit(t_times, t_units, t_labels, **make)
    splits = {"train": subset(train_idx), "valid": subset(valid_idx), "test": test}
    setting, value = "dataset.valid_fraction", ds.valid_fraction
    if ds.max_samples is not None:
        setting, value = "dataset.max_samples", ds.max_samples
    _check_sizes(splits, cfg, setting, value)
    same, label = _same(test, cfg)
    files = {"train": report, "test": t_report}
    return Data(splits["train"], splits["valid"], test, same, label, files)


def load_data(cfg: Any, shd: dict[str, Path] | None = None) -> Data:
    """The config's dataset (SHD files from `shd_paths` if already resolved)."""
    average = metric_average(cfg)
    if cfg.dataset.name == "randman":
        return load_randman(cfg).averaged(average)
    return load_shd_splits(cfg, shd if shd is not None else shd_paths(cfg)).averaged(average)
