"""The types of every setting of the spike-train-matching experiment: a Hydra structured config.

Each YAML file of `experiments/config_experiments/` names its schema node first in its
defaults list (`config.yaml`: `stm_schema`; `dataset/scene.yaml`: `stm_dataset_schema`, ...)
and holds the values; Hydra merges the values into the typed node, so a key the schema lacks
(`+foo=1`, a misspelt `dataset.nb_hiden=3`) or a value of the wrong type (`seed=abc`,
`nb_epochs=2.5`, `method.sigm=maybe`) is refused while the command line is composed, before
any work. `sgruns.cli` turns that refusal into the one line `error: <setting>=<value> ...`.

Value ranges and rules joining several settings are checked by `stm.checks.check`.
Light to import (no torch): the entry script registers it before composing the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from sgruns.schema import WandbSchema, store

# A real-valued setting: an int or a float, kept as typed (`tau_syn=0` stays 0, so a message
# names the value the user typed), never a bool or a string.
Number = int | float


@dataclass
class DatasetSchema:
    """The target image and the network's sizes (`dataset/*.yaml`)."""

    name: str = MISSING  # labels the run; must be the group's option
    nb_inputs: int = MISSING
    nb_hidden: int = MISSING
    nb_outputs: int = MISSING  # rows of the target image
    nb_steps: int = MISSING  # columns of the target image
    batch_size: int = MISSING
    data_path: str = MISSING  # the target image


@dataclass
class MethodSchema:
    """The spike method (`method/*.yaml`): a name of `sgtheory.spikes.METHODS`."""

    name: str = MISSING
    sigm: bool = MISSING  # sigmoid (true) or the method's other escape noise / surrogate
    nb_trials: int = MISSING  # trials per epoch (1 for a deterministic network)


@dataclass
class DatasetMethodSchema:
    """The learning rates of one dataset and method (`dataset_method/<dataset>_<method>.yaml`)."""

    lr_h: Number = MISSING
    lr_o: Number = MISSING


@dataclass
class STMSchema:
    """The whole config: the groups (chosen by name on the command line) and the settings."""

    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    method: MethodSchema = field(default_factory=MethodSchema)
    dataset_method: DatasetMethodSchema = field(default_factory=DatasetMethodSchema)
    wandb: WandbSchema = field(default_factory=WandbSchema)

    seed: int = MISSING
    device: str = MISSING
    threads: int | None = MISSING
    dt: Number = MISSING  # s
    nb_epochs: int = MISSING
    logging_freq: int = MISSING
    tau_mem: Number = MISSING  # s
    tau_syn: Number = MISSING  # s
    threshold: Number = MISSING
    eps0: Number = MISSING
    beta_h: Number = MISSING
    beta_o: Number = MISSING
    delta_u_h: Number = MISSING
    delta_u_o: Number = MISSING
    p0: Number = MISSING
    valid_escape: str = MISSING  # sigmoid | exponential | superspike
    input_rate: Number = MISSING  # Hz
    out_prob: Number = MISSING
    sigma_u: Number = MISSING
    reset_mode: bool = MISSING
    validate_with_other_method: bool = MISSING
    valid_nb_trials: int = MISSING
    fano_window: int = MISSING  # steps
    save_spk: bool = MISSING
    save_mem: bool = MISSING
    save_dw: bool = MISSING
    save_w: bool = MISSING
    resume: bool = MISSING
    max_chunks: int | None = MISSING
    progress: bool = MISSING


# (group, name, node): the names the YAML files' defaults lists point at; prefixed with the
# experiment, since Hydra's ConfigStore is one per process
NODES: tuple[tuple[str | None, str, type], ...] = (
    (None, "stm_schema", STMSchema),
    ("dataset", "stm_dataset_schema", DatasetSchema),
    ("method", "stm_method_schema", MethodSchema),
    ("dataset_method", "stm_dataset_method_schema", DatasetMethodSchema),
)


def register() -> None:
    """Store the schema nodes in Hydra's ConfigStore (before any config is composed)."""
    store(NODES)
