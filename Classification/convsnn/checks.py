"""The value ranges of the Classification experiment's settings and the rules joining them.

Types and names are the structured config's (`convsnn.schema`): a config that reaches
`check` has every setting, each of its type. `check` is the one place where values are
judged, before any data is made or weights drawn; each refusal is one ConfigError that starts
`<setting>=<value>` and says what is allowed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sgruns.errors import check_seed, check_threads
from sgruns.records import resolve_device
from sgruns.wandb_run import WANDB_MODES
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.lif import RESETS
from sgtheory.losses import LOSS_TYPES
from sgtheory.optim import OPTIMIZERS
from sgtheory.spikes import METHODS
from sgtheory.stats import FANO_MODES

from .data import METRIC_AVERAGES
from .memory import check_memory
from .model import (
    LAYER_KEYS,
    PRECISIONS,
    beta_at,
    init_settings,
    init_stds,
    min_steps,
    network_shape,
)
from .training import REGULARIZER_TERMS as TERMS

DATASETS = ("randman", "shd")
POSITIVE = "tau_mem tau_syn threshold beta p0 delta_u method.lr method.target_sigma_u".split()
POSITIVE += ["dataset.dt", "dataset.nu", "tau_readout", "dataset.duration"]  # (null: allowed)
POSITIVE_INT = "batch_size nb_epochs epoch_chunk stop_after_epochs fano.bin_dt fano.repeats".split()
POSITIVE_INT += "plotting.nb_samples plotting.nb_trials plotting.dpi".split()
POSITIVE_INT += [f"dataset.{k}" for k in "nb_steps nb_units nb_classes nb_samples".split()]
POSITIVE_INT += ["dataset.nb_spikes", "dataset.dim_manifold", "dataset.max_samples"]
# a decay factor exp(-dt / tau) must differ from 1 in float32; tau_mem's and tau_syn's may
# not both be 0 in float64
MIN_DT_OVER_TAU, MAX_DT_OVER_TAU = 1e-6, 700.0
FLOAT32_MAX = 3.4028234663852886e38
MAX_DPI = 1000  # figures are a few inches wide: 1000 dpi is far beyond print quality
MAX_SNAPSHOT_SAMPLES = 20  # columns of the snapshot figure (2.6 inches each)
# wandb refuses project names with these characters (it would fail after the run started)
WANDB_FORBIDDEN = set("/\\#?%:")
# float32 weights must hold the initial values and their products with inputs and currents
INIT_STD_RANGE = (1e-30, 1e30)
DIMS = "give dims of the per-sample counts (channels, positions): -2 and/or -1, at most once each"
# setting: (test of its value, what is allowed); a setting this config lacks or sets to null
# (where null is allowed) is skipped
RANGES = {
    "p0": (lambda v: 0 < v <= 1, "it must lie in (0, 1]"),
    "alpha": (lambda v: 0 <= v <= 1, "it must lie in [0, 1]"),
    "dataset.nb_classes": (lambda v: v >= 2, "a classification needs at least 2 classes"),
    "dataset.valid_fraction": (lambda v: 0 < v < 1, "it must lie in (0, 1)"),
    "dataset.split": (
        lambda v: len(v) == 3 and min(v) > 0 and abs(sum(v) - 1) <= 1e-6,
        "give three positive fractions (train, valid, test) that sum to 1",
    ),
    "fano.repeats": (lambda v: v >= 2, "it must be >= 2"),
    "fano.sample_index": (lambda v: v >= 0, "it must be >= 0"),
    "method.lr": (lambda v: v <= FLOAT32_MAX, f"it must be at most {FLOAT32_MAX:.3g} (float32)"),
    "plotting.dpi": (lambda v: v <= MAX_DPI, f"it must be at most {MAX_DPI} (far beyond print)"),
    "plotting.nb_samples": (
        lambda v: v <= MAX_SNAPSHOT_SAMPLES,
        f"the snapshot shows one column per sample: at most {MAX_SNAPSHOT_SAMPLES}",
    ),
    **{f"regularizer.{term}.strength": (lambda v: v >= 0, "it must be >= 0") for term in TERMS},
    **{
        f"regularizer.{term}.dims": (lambda v: set(v) <= {-2, -1} and len(set(v)) == len(v), DIMS)
        for term in TERMS
    },
}


def _value(cfg: Any, key: str) -> Any:
    """Setting `key` (dotted) of `cfg`, or None where this config has no such setting."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) of every setting, list entries as `name[i]`."""
    if isinstance(node, Mapping):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{prefix[:-1]}[{i}].")]
    return [(prefix[:-1], node)]


def _refuse(setting: str, value: Any, why: str) -> None:
    raise ConfigError(f"{setting}={value!r} is not valid; {why}")


def check(cfg: Any) -> None:
    """Every value of `cfg` in its range and the settings consistent; else ConfigError.

    Numbers finite; choices; counts, sizes and time constants positive; fractions and
    probabilities in their intervals; the dataset's name matching its group; one entry per
    hidden layer in each per-layer list; each kernel fitting its input; enough time steps for
    the readout to see the input; decays per step that float32 can represent; the
    annealing schedule keeping beta positive (in closed form); the initial weights' scale;
    the memory the run needs.
    """
    _check_values(cfg)
    _check_decays(cfg)
    if math.isclose(cfg.tau_mem, cfg.tau_syn):
        raise ConfigError(f"tau_mem={cfg.tau_mem} is not valid: it must differ from tau_syn")
    _check_anneal(cfg)
    _check_network(cfg)


def _check_values(cfg: Any) -> None:
    """Numbers finite, choices among the known, names consistent, values in their ranges."""
    ds = cfg.dataset
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            _refuse(key, value, "it must be a finite number")
    # choices
    check_choice("method", cfg.method.name, METHODS)
    check_choice("method.other", cfg.method.other, METHODS)
    check_choice("dataset", ds.name, DATASETS)
    check_choice("loss_type", cfg.loss_type, LOSS_TYPES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("reset", cfg.reset, RESETS)
    check_choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    check_choice("fano.mode", cfg.fano.mode, FANO_MODES)
    check_choice("precision", cfg.precision, tuple(PRECISIONS))
    check_choice("dataset.metric_average", ds.metric_average, METRIC_AVERAGES)
    resolve_device(cfg.device)
    group = "shd" if hasattr(ds, "datadir") else "randman"
    if ds.name != group:
        raise ConfigError(
            f"dataset.name={ds.name} does not match the dataset's settings (those of "
            f"dataset={group}); to train on {ds.name}, choose its group: dataset={ds.name}"
        )
    project = cfg.wandb.project
    if set(project) & WANDB_FORBIDDEN or not project or len(project) > 128:
        raise ConfigError(
            f"wandb.project={project} is not valid; give 1 to 128 characters without any "
            f"of {' '.join(sorted(WANDB_FORBIDDEN))}"
        )
    for keys, integer in ((POSITIVE, False), (POSITIVE_INT, True)):
        for key in keys:
            if _value(cfg, key) is not None:
                check_positive(key, _value(cfg, key), integer=integer)
    check_seed("seed", cfg.seed)
    check_seed("dataset.seed", ds.seed)
    check_threads("threads", cfg.threads)
    for key, (ok, why) in RANGES.items():
        value = _value(cfg, key)
        value = list(value) if isinstance(value, Sequence) else value
        if value is not None and not ok(value):
            _refuse(key, value, why)
    if cfg.fano.bin_dt > ds.nb_steps:
        _refuse(
            "fano.bin_dt", cfg.fano.bin_dt, f"it must be at most dataset.nb_steps={ds.nb_steps}"
        )
    if cfg.anneal:
        check_positive("anneal_interval", cfg.anneal_interval, integer=True)
        if cfg.anneal_start < 0:
            _refuse("anneal_start", cfg.anneal_start, "it must be >= 0")


def _check_network(cfg: Any) -> None:
    """One entry per hidden layer in each per-layer list, kernels that fit their input, enough
    steps for the readout to see the input, initial weights float32 holds, memory enough."""
    ds = cfg.dataset
    lists = {key: list(ds[key]) for key in LAYER_KEYS}
    layers = len(lists["nb_filters"])
    if not layers:
        raise ConfigError("dataset.nb_filters=[] is not valid: give one entry per hidden layer")
    for key, values in lists.items():
        if len(values) != layers:
            raise ConfigError(
                f"dataset.{key}={values} is not valid: it has {len(values)} entries, "
                f"dataset.nb_filters has {layers} (one entry per hidden layer)"
            )
        for i, value in enumerate(values):
            if key in ("nb_filters", "kernel_size", "stride"):
                check_positive(f"dataset.{key}[{i}]", value, integer=True)
            elif value < 0:
                _refuse(f"dataset.{key}[{i}]", value, "it must be >= 0")
            elif key == "recurrent_kernel" and value and value % 2 != 1:
                _refuse(f"dataset.{key}[{i}]", value, "use 0 (none) or an odd kernel")
    shape = network_shape(cfg)
    need = min_steps(cfg)
    if ds.nb_steps < need:
        raise ConfigError(
            f"dataset.nb_steps={ds.nb_steps} is not valid: with {layers} hidden layers "
            f"(connection_delay={str(bool(cfg.connection_delay)).lower()}) the readout sees no "
            f"input before step {need}; use at least {need} steps"
        )
    low, high = INIT_STD_RANGE
    for name, std in init_stds(cfg):
        if std == 0 and name.endswith(".rec_weight"):
            continue  # alpha=1: no recurrent input at the start (allowed)
        if std == 0 and cfg.alpha == 0:
            raise ConfigError(
                f"alpha={cfg.alpha} is not valid with recurrent layers: their feedforward "
                f"weights ({name}) would all be 0, so no input ever reaches them; use alpha "
                "in (0, 1]"
            )
        if not (math.isfinite(std) and low <= std <= high):
            raise ConfigError(
                f"{init_settings(cfg)}: they give the initial weights {name} a standard "
                f"deviation of {std:.3g}, outside [{low:g}, {high:g}]; bring dataset.nu (the "
                "input rate the initialisation assumes, Hz) and method.target_sigma_u to "
                "ordinary values"
            )
    check_memory(cfg, shape)


def _check_decays(cfg: Any) -> None:
    """Each time constant's decay per step exp(-dt / tau) must be a usable number.

    A tau far above dt rounds the factor to 1 in float32 (nothing ever decays, and the
    initialisation divides by 1 - 1 = 0). A tau far below dt makes it 0, which the model
    takes (the state follows its input at once), unless both tau_mem and tau_syn do: then
    the PSP kernel has no shape left.
    """
    dt = float(cfg.dataset.dt)
    taus = [("tau_mem", cfg.tau_mem), ("tau_syn", cfg.tau_syn)]
    duration = getattr(cfg.dataset, "duration", None)
    if cfg.tau_readout is not None:
        taus.append(("tau_readout", cfg.tau_readout))
    elif duration is not None:  # the readout's default time constant
        taus.append(("dataset.duration", duration))
    for key, tau in taus:
        if dt / float(tau) >= MIN_DT_OVER_TAU:
            continue
        named, other = f"{key}={tau}", f"dataset.dt={cfg.dataset.dt}"
        if abs(math.log10(dt)) > abs(math.log10(float(tau))):  # the odder value first
            named, other = other, named
        raise ConfigError(
            f"{named} is not valid with {other}: the decay per step exp(-dataset.dt/{key}) "
            f"would be 1 in float32 (nothing ever decays); dataset.dt/{key} must be at least "
            f"{MIN_DT_OVER_TAU:g}"
        )
    if min(dt / float(cfg.tau_mem), dt / float(cfg.tau_syn)) > MAX_DT_OVER_TAU:
        raise ConfigError(
            f"dataset.dt={cfg.dataset.dt} is not valid with tau_mem={cfg.tau_mem} and "
            f"tau_syn={cfg.tau_syn}: both decays per step would be 0 (no PSP shape left); "
            f"use a dataset.dt below {MAX_DT_OVER_TAU:g} x the larger time constant"
        )


def _check_anneal(cfg: Any) -> None:
    """With annealing, beta must stay a positive finite number in every epoch of the run.

    beta changes by the same step each interval (see `model.beta_at`), so its extremes lie
    at the first epoch, the first annealed epoch and the last epoch; where it first leaves
    the positive numbers follows in closed form. No loop over the epochs.
    """
    if not cfg.anneal:
        return
    epochs, start, interval = int(cfg.nb_epochs), int(cfg.anneal_start), int(cfg.anneal_interval)
    step, beta0 = float(cfg.anneal_step), float(cfg.beta)
    candidates = [0, min(start, epochs - 1), epochs - 1]
    if step and start < epochs:
        # beta0 + step k leaves (0, inf) from k = ceil(beta0 / -step) on (step < 0), or from
        # k = ceil((max float - beta0) / step) on (step > 0)
        bound = beta0 / -step if step < 0 else (sys.float_info.max - beta0) / step
        k = math.ceil(bound)
        for kk in (k - 1, k, k + 1):  # the division may round either way
            if kk >= 1:
                candidates.append(min(start + (kk - 1) * interval, epochs - 1))
    bad = [e for e in sorted(set(candidates)) if not 0 < beta_at(cfg, e) < math.inf]
    if bad:
        epoch = bad[0]
        raise ConfigError(
            f"anneal_step={cfg.anneal_step!r} is not valid: beta would be "
            f"{beta_at(cfg, epoch):g} in epoch {epoch + 1} of nb_epochs={cfg.nb_epochs} (beta="
            f"{cfg.beta}, anneal_start={cfg.anneal_start}, anneal_interval="
            f"{cfg.anneal_interval}); beta must stay a finite number > 0"
        )
