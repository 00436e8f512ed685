"""The types of every setting of the Classification experiment: a Hydra structured config.

Each YAML file of `experiments/config_stork/` names its schema node first in its defaults
list (`config.yaml`: `classification_schema`; `dataset/randman.yaml`: `randman_schema`, ...)
and holds the values; Hydra merges the values into the typed node, so a key the schema lacks
(`+foo=1`, a misspelt `dataset.nb_sample=3`) or a value of the wrong type (`seed=abc`,
`dataset.split=abc`) is refused while the command line is composed, before any work.
`sgruns.cli` turns that refusal into the one line `error: <setting>=<value> ...`.

Value ranges and rules joining several settings are checked by `convsnn.checks.check`.
Light to import (no torch): the entry script registers it before composing the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from sgruns.schema import WandbSchema, store

# A real-valued setting: an int or a float, kept as typed (`alpha=2` stays 2, so a message
# names the value the user typed), never a bool or a string.
Number = int | float


@dataclass
class DatasetSchema:
    """Settings every dataset has: sizes, time step, input rate and the conv layers."""

    name: str = MISSING
    nb_classes: int = MISSING
    nb_units: int = MISSING
    nb_steps: int = MISSING
    dt: Number = MISSING  # s
    seed: int = MISSING
    metric_average: str = MISSING  # batch | sample
    nu: Number = MISSING  # Hz, input rate assumed by the fluctuation-driven init
    # one entry per hidden layer
    nb_filters: list[int] = MISSING
    kernel_size: list[int] = MISSING
    stride: list[int] = MISSING
    padding: list[int] = MISSING
    recurrent_kernel: list[int] = MISSING  # 0 = no recurrent convolution


@dataclass
class RandmanSchema(DatasetSchema):
    """Randman (Zenke & Vogels 2021), generated from `seed`."""

    step_frac: Number = MISSING
    nb_samples: int = MISSING  # per class
    nb_spikes: int = MISSING  # per unit and sample
    alpha: Number = MISSING  # manifold smoothness
    dim_manifold: int = MISSING
    split: list[float] = MISSING  # train, valid, test fractions


@dataclass
class SHDSchema(DatasetSchema):
    """Spiking Heidelberg Digits: the official files, a seeded validation share."""

    datadir: str | None = MISSING
    download: bool = MISSING
    cache_dir: str | None = MISSING
    duration: Number | None = MISSING  # s
    valid_fraction: Number = MISSING
    max_samples: int | None = MISSING
    allow_silent_samples: bool = MISSING


@dataclass
class MethodSchema:
    """The spike method trained with, the one also evaluated, and its learning settings."""

    name: str = MISSING
    other: str = MISSING
    lr: Number = MISSING
    target_sigma_u: Number = MISSING


@dataclass
class RegularizerTermSchema:
    """One activity penalty on the hidden layers' spike counts (strength 0 = off)."""

    strength: Number = MISSING
    threshold: Number = MISSING
    dims: list[int] | None = MISSING


@dataclass
class RegularizerSchema:
    name: str = MISSING
    upper_l2: RegularizerTermSchema = field(default_factory=RegularizerTermSchema)
    lower_l1: RegularizerTermSchema = field(default_factory=RegularizerTermSchema)
    lower_l2: RegularizerTermSchema = field(default_factory=RegularizerTermSchema)


@dataclass
class FanoSchema:
    bin_dt: int = MISSING  # time steps
    mode: str = MISSING  # sliding | binned
    repeats: int = MISSING
    sample_index: int = MISSING


@dataclass
class PlottingSchema:
    enabled: bool = MISSING
    nb_samples: int = MISSING
    nb_trials: int = MISSING
    dpi: int = MISSING


@dataclass
class ClassificationSchema:
    """The whole config: the groups (chosen by name on the command line) and the settings."""

    dataset: Any = MISSING  # a RandmanSchema or an SHDSchema, by the group's option
    method: MethodSchema = field(default_factory=MethodSchema)
    regularizer: RegularizerSchema = field(default_factory=RegularizerSchema)
    fano: FanoSchema = field(default_factory=FanoSchema)
    plotting: PlottingSchema = field(default_factory=PlottingSchema)
    wandb: WandbSchema = field(default_factory=WandbSchema)

    seed: int = MISSING
    device: str = MISSING
    threads: int | None = MISSING
    precision: str = MISSING
    sigm: bool = MISSING
    tau_mem: Number = MISSING
    tau_syn: Number = MISSING
    tau_readout: Number | None = MISSING
    threshold: Number = MISSING
    reset: str = MISSING
    diff_reset: bool = MISSING
    beta: Number = MISSING
    p0: Number = MISSING
    delta_u: Number = MISSING
    connection_delay: bool = MISSING
    alpha: Number = MISSING
    loss_type: str = MISSING
    optimizer: str = MISSING
    batch_size: int = MISSING
    nb_epochs: int = MISSING
    epoch_chunk: int = MISSING
    anneal: bool = MISSING
    anneal_start: int = MISSING
    anneal_step: Number = MISSING
    anneal_interval: int = MISSING
    stop_after_epochs: int | None = MISSING
    progress: bool = MISSING


# (group, name, node): the names the YAML files' defaults lists point at
NODES: tuple[tuple[str | None, str, type], ...] = (
    (None, "classification_schema", ClassificationSchema),
    ("dataset", "randman_schema", RandmanSchema),
    ("dataset", "shd_schema", SHDSchema),
    ("method", "method_schema", MethodSchema),
    ("regularizer", "regularizer_schema", RegularizerSchema),
    ("fano", "fano_schema", FanoSchema),
    ("plotting", "plotting_schema", PlottingSchema),
    ("wandb", "wandb_schema", WandbSchema),
)


def register() -> None:
    """Store the schema nodes in Hydra's ConfigStore (before any config is composed)."""
    store(NODES)
