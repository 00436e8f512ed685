"""Validate a whole experiment config up front, before any data is made or weights trained."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import torch

from sgruns.errors import check_known, check_seed, check_threads
from sgruns.records import resolve_device
from sgruns.wandb_run import WANDB_MODES
from sgtheory.backends.threads import default_threads
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.layers import conv_output_length
from sgtheory.losses import LOSS_TYPES
from sgtheory.neurons import RESETS
from sgtheory.optim import OPTIMIZERS
from sgtheory.spikes import METHODS
from sgtheory.stats import FANO_MODES

DATASETS = ("randman", "shd")
# `precision`: the autocast dtype of convolutions and weight products (None: float32 throughout)
PRECISIONS = {"float32": None, "bf16": torch.bfloat16}
LAYER_KEYS = ("nb_filters", "kernel_size", "stride", "padding", "recurrent_kernel")
REGULARIZER_TERMS = {"upper_l2": ("upper", 2), "lower_l1": ("lower", 1), "lower_l2": ("lower", 2)}
# a decay factor exp(-dt / tau) must differ from 1 in float32; tau_mem's and tau_syn's may
# not both be 0 in float64
MIN_DT_OVER_TAU, MAX_DT_OVER_TAU = 1e-6, 700.0
FLOAT32_MAX = 3.4028234663852886e38
MAX_DPI = 1000  # figures are a few inches wide: 1000 dpi is far beyond print quality
MAX_SNAPSHOT_SAMPLES = 20  # columns of the snapshot figure (2.6 inches each)
# wandb refuses project names with these characters (it would fail after the run started)
WANDB_FORBIDDEN = set("/\\#?%:")


@dataclass(frozen=True)
class Geometry:
    """Input shape and per-layer sizes of the network a config describes."""

    nb_steps: int
    nb_units: int
    nb_classes: int
    lengths: tuple[int, ...]  # input length, then each hidden layer's output length
    nb_readout_inputs: int  # filters x positions of the last hidden layer


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _positive(cfg: Any, keys: list[str], integer: bool = False) -> None:
    for key in keys:
        check_positive(key, _get(cfg, key), integer=integer)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layer_lists(ds: Any) -> dict[str, list[int]]:
    """The per-layer lists of a dataset config, checked to have one entry per layer."""
    lists = {key: list(ds[key]) for key in LAYER_KEYS}
    layers = len(lists["nb_filters"])
    if not layers:
        raise ConfigError("dataset.nb_filters=[] is not valid: give one entry per hidden layer")
    for key, value in lists.items():
        if len(value) != layers:
            raise ConfigError(
                f"dataset.{key}={value} is not valid: it has {len(value)} entries, "
                f"dataset.nb_filters has {layers} (one entry per hidden layer)"
            )
    for key, values in lists.items():
        for i, value in enumerate(values):
            if not _is_int(value):
                raise ConfigError(f"dataset.{key}[{i}]={value!r} is not valid; it must be an int")
            if key in ("nb_filters", "kernel_size", "stride"):
                check_positive(f"dataset.{key}[{i}]", value, integer=True)
            elif value < 0:
                raise ConfigError(f"dataset.{key}[{i}]={value!r} is not valid; it must be >= 0")
            if key == "recurrent_kernel" and value and value % 2 != 1:
                raise ConfigError(
                    f"dataset.recurrent_kernel[{i}]={value!r} is not valid; use 0 (none) or an "
                    "odd kernel"
                )
    return lists


def geometry(cfg: Any) -> Geometry:
    """Sizes of every layer; a ConfigError if a kernel does not fit its input."""
    ds = cfg.dataset
    lists = layer_lists(ds)
    lengths = [int(ds.nb_units)]
    for i, (k, s, p) in enumerate(zip(lists["kernel_size"], lists["stride"], lists["padding"])):
        try:
            lengths.append(conv_output_length(lengths[-1], k, s, p))
        except ConfigError as err:
            raise ConfigError(
                f"dataset.kernel_size[{i}]={k} is not valid for hidden layer {i}: {err}"
            ) from None
    flat = lengths[-1] * lists["nb_filters"][-1]
    return Geometry(int(ds.nb_steps), int(ds.nb_units), int(ds.nb_classes), tuple(lengths), flat)


# The type of every setting ("?": null allowed; "*": any regularizer term). A wrong type
# (`seed=abc`) stops the run before anything else with one line naming setting and value.
TYPES = {
    **dict.fromkeys(
        ["seed", "batch_size", "nb_epochs", "epoch_chunk", "anneal_start", "anneal_interval"],
        "int",
    ),
    **dict.fromkeys(["threads", "stop_after_epochs", "dataset.max_samples"], "int?"),
    **dict.fromkeys(
        ["tau_mem", "tau_syn", "threshold", "beta", "p0", "delta_u", "alpha", "anneal_step"],
        "number",
    ),
    **dict.fromkeys(["tau_readout", "dataset.duration"], "number?"),
    **dict.fromkeys(
        ["sigm", "diff_reset", "connection_delay", "anneal", "progress", "plotting.enabled"],
        "bool",
    ),
    **dict.fromkeys(["device", "precision", "reset", "loss_type", "optimizer"], "str"),
    **dict.fromkeys(["method.name", "method.other", "regularizer.name"], "str"),
    **dict.fromkeys(["method.lr", "method.target_sigma_u"], "number"),
    **dict.fromkeys(["dataset.name", "fano.mode", "wandb.mode", "wandb.project"], "str"),
    "dataset.metric_average": "str",
    **dict.fromkeys(["dataset.datadir", "dataset.cache_dir", "wandb.entity"], "str?"),
    **dict.fromkeys(["dataset.download", "dataset.allow_silent_samples"], "bool"),
    **{
        f"dataset.{key}": "int"
        for key in ("nb_classes", "nb_units", "nb_steps", "nb_samples", "nb_spikes", "seed")
    },
    "dataset.dim_manifold": "int",
    **{f"dataset.{key}": "number" for key in ("dt", "step_frac", "alpha", "nu", "valid_fraction")},
    **{f"dataset.{key}": "list" for key in ("split", *LAYER_KEYS)},
    **dict.fromkeys(["fano.bin_dt", "fano.repeats", "fano.sample_index"], "int"),
    **dict.fromkeys(["plotting.nb_samples", "plotting.nb_trials", "plotting.dpi"], "int"),
    **dict.fromkeys(["regularizer.*.strength", "regularizer.*.threshold"], "number"),
    "regularizer.*.dims": "list?",
}
KINDS = {
    "int": ("an integer", lambda v: _is_int(v)),
    "number": ("a finite number", lambda v: _is_number(v) and math.isfinite(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "list": ("a list", lambda v: isinstance(v, list)),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_of(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "regularizer":
        return TYPES.get(f"regularizer.*.{parts[2]}")
    return TYPES.get(key)


def _find(cfg: Any, key: str) -> Any:
    """The setting `key` (dotted), or None where the config has no such setting."""
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], tree)]


def check_types(cfg: Any) -> None:
    """Every setting of a known name has its type (see TYPES), else a ConfigError."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    leaves = _leaves(tree)
    known = [key for key in TYPES if not key.startswith("regularizer.*.")]
    for term in REGULARIZER_TERMS:
        known += [k.replace("*", term) for k in TYPES if k.startswith("regularizer.*.")]
    check_known(leaves, known, "Classification/experiments/config_stork/")
    for key, value in leaves:
        kind = _type_of(key)
        if kind is None or (kind.endswith("?") and value is None):
            continue
        what, ok = KINDS[kind.rstrip("?")]
        if not ok(value):
            null = " or null" if kind.endswith("?") else ""
            raise ConfigError(f"{key}={value!r} is not valid; it must be {what}{null}")


def _check_choices(cfg: Any) -> None:
    check_choice("method", cfg.method.name, METHODS)
    check_choice("method.other", cfg.method.other, METHODS)
    check_choice("dataset", cfg.dataset.name, DATASETS)
    check_choice("loss_type", cfg.loss_type, LOSS_TYPES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("reset", cfg.reset, RESETS)
    check_choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    check_choice("fano.mode", cfg.fano.mode, FANO_MODES)
    check_choice("precision", cfg.precision, tuple(PRECISIONS))
    resolve_device(cfg.device)


def _check_numbers(cfg: Any) -> None:
    _positive(cfg, ["tau_mem", "tau_syn", "threshold", "beta", "p0", "delta_u", "method.lr"])
    _positive(cfg, ["method.target_sigma_u", "dataset.dt", "dataset.nu"])
    _positive(cfg, ["batch_size", "nb_epochs", "epoch_chunk"], integer=True)
    check_seed("seed", cfg.seed)
    check_seed("dataset.seed", cfg.dataset.seed)
    _positive(cfg, ["dataset.nb_steps", "dataset.nb_units", "dataset.nb_classes"], integer=True)
    _positive(cfg, ["fano.bin_dt", "fano.repeats", "plotting.nb_samples"], integer=True)
    _positive(cfg, ["plotting.nb_trials", "plotting.dpi"], integer=True)
    for key in ("tau_readout", "dataset.duration", "stop_after_epochs"):
        if _find(cfg, key) is not None:
            check_positive(key, _find(cfg, key), integer=key == "stop_after_epochs")
    check_threads("threads", cfg.threads)
    if cfg.dataset.nb_classes < 2:
        raise ConfigError(
            f"dataset.nb_classes={cfg.dataset.nb_classes} is not valid; a classification needs "
            "at least 2 classes (with one, every answer is right)"
        )
    if cfg.fano.repeats < 2:
        raise ConfigError(f"fano.repeats={cfg.fano.repeats!r} is not valid; it must be >= 2")
    if cfg.fano.bin_dt > cfg.dataset.nb_steps:
        raise ConfigError(
            f"fano.bin_dt={cfg.fano.bin_dt!r} is not valid; it must be at most "
            f"dataset.nb_steps={cfg.dataset.nb_steps}"
        )
    if cfg.fano.sample_index < 0:
        raise ConfigError(
            f"fano.sample_index={cfg.fano.sample_index} is not valid; it must be >= 0"
        )
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")
    if not 0 <= cfg.alpha <= 1:
        raise ConfigError(f"alpha={cfg.alpha!r} is not valid; it must lie in [0, 1]")
    if cfg.method.lr > FLOAT32_MAX:  # the optimisers keep it in float32 tensors
        raise ConfigError(
            f"method.lr={cfg.method.lr} is not valid; it must be at most {FLOAT32_MAX:.3g} "
            "(float32)"
        )
    _check_decays(cfg)
    if math.isclose(cfg.tau_mem, cfg.tau_syn):
        raise ConfigError(f"tau_mem={cfg.tau_mem} is not valid: it must differ from tau_syn")
    for term in REGULARIZER_TERMS:
        dims = cfg.regularizer[term].dims
        ok = dims is None or all(_is_int(d) and d in (-2, -1) for d in dims)
        if not ok or (dims is not None and len(set(dims)) != len(dims)):
            raise ConfigError(
                f"regularizer.{term}.dims={list(dims)!r} is not valid; give dims of the "
                "per-sample counts (channels, positions): a list of -2 and/or -1, each at "
                "most once, or null"
            )
        if cfg.regularizer[term].strength < 0:
            key = f"regularizer.{term}.strength"
            raise ConfigError(
                f"{key}={cfg.regularizer[term].strength!r} is not valid; it must be >= 0"
            )


def _check_decays(cfg: Any) -> None:
    """Each time constant's decay per step exp(-dt / tau) must be a usable number.

    A tau far above dt rounds the factor to 1 in float32 (nothing ever decays, and the
    initialisation divides by 1 - 1 = 0). A tau far below dt makes it 0, which the model
    takes (the state follows its input at once), unless both tau_mem and tau_syn do: then
    the PSP kernel has no shape left.
    """
    dt = float(cfg.dataset.dt)
    taus = [("tau_mem", cfg.tau_mem), ("tau_syn", cfg.tau_syn)]
    if cfg.tau_readout is not None:
        taus.append(("tau_readout", cfg.tau_readout))
    elif cfg.dataset.get("duration") is not None:  # the readout's default time constant
        taus.append(("dataset.duration", cfg.dataset.duration))
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


def min_steps(cfg: Any) -> int:
    """The fewest time steps at which the readout can see any input at all.

    Each hidden layer passes input on two steps later (synaptic current, then membrane),
    one more with `connection_delay`; the readout adds three.
    """
    per_layer = 2 + int(bool(cfg.connection_delay))
    return per_layer * len(cfg.dataset.nb_filters) + 3


def _check_steps(cfg: Any) -> None:
    need = min_steps(cfg)
    if cfg.dataset.nb_steps < need:
        raise ConfigError(
            f"dataset.nb_steps={cfg.dataset.nb_steps} is not valid: with "
            f"{len(cfg.dataset.nb_filters)} hidden layers (connection_delay="
            f"{str(bool(cfg.connection_delay)).lower()}) the readout sees no input before step "
            f"{need}; use at least {need} steps"
        )


def _check_names(cfg: Any) -> None:
    """The dataset's name matches its group's settings; wandb takes the project name."""
    ds = cfg.dataset
    group = "shd" if "datadir" in ds else "randman"
    if ds.name != group:
        raise ConfigError(
            f"dataset.name={ds.name} does not match the dataset's settings (those of "
            f"dataset={group}); to train on {ds.name}, choose its group: dataset={ds.name}"
        )
    bad = sorted(set(cfg.wandb.project) & WANDB_FORBIDDEN)
    if bad or not cfg.wandb.project or len(cfg.wandb.project) > 128:
        raise ConfigError(
            f"wandb.project={cfg.wandb.project} is not valid; give 1 to 128 characters "
            f"without any of {' '.join(sorted(WANDB_FORBIDDEN))}"
        )


def _check_plotting(cfg: Any) -> None:
    if cfg.plotting.dpi > MAX_DPI:
        raise ConfigError(
            f"plotting.dpi={cfg.plotting.dpi} is not valid; it must be at most {MAX_DPI} (a "
            f"figure of a few inches at that resolution is already far beyond print quality)"
        )
    if cfg.plotting.nb_samples > MAX_SNAPSHOT_SAMPLES:
        raise ConfigError(
            f"plotting.nb_samples={cfg.plotting.nb_samples} is not valid; the snapshot shows "
            f"one column per sample: at most {MAX_SNAPSHOT_SAMPLES}"
        )


def check_anneal(cfg: Any) -> None:
    """With annealing, beta must stay a positive finite number in every epoch of the run.

    beta changes by the same step each interval (see `model.beta_at`), so its extremes lie
    at the first epoch, the first annealed epoch and the last epoch; where it first leaves
    the positive numbers follows in closed form. No loop over the epochs.
    """
    if not cfg.anneal:
        return
    _positive(cfg, ["anneal_interval"], integer=True)
    if cfg.anneal_start < 0:
        raise ConfigError(f"anneal_start={cfg.anneal_start!r} is not valid; it must be >= 0")
    from .model import beta_at  # model imports this module

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
    bad = [e for e in sorted(set(candidates)) if not _good_beta(beta_at(cfg, e))]
    if bad:
        epoch = bad[0]
        raise ConfigError(
            f"anneal_step={cfg.anneal_step!r} is not valid: beta would be "
            f"{beta_at(cfg, epoch):g} in epoch {epoch + 1} of nb_epochs={cfg.nb_epochs} (beta="
            f"{cfg.beta}, anneal_start={cfg.anneal_start}, anneal_interval="
            f"{cfg.anneal_interval}); beta must stay a finite number > 0"
        )


def _good_beta(beta: float) -> bool:
    return math.isfinite(beta) and beta > 0


def _check_dataset(cfg: Any) -> None:
    from .data import metric_average

    metric_average(cfg)
    ds = cfg.dataset
    if ds.name == "randman":
        _positive(cfg, ["dataset.nb_samples", "dataset.nb_spikes", "dataset.dim_manifold"], True)
        split = list(ds.split)
        if (
            len(split) != 3
            or not all(_is_number(f) and f > 0 for f in split)
            or abs(sum(split) - 1) > 1e-6
        ):
            raise ConfigError(
                f"dataset.split={split!r} is not valid; give three positive fractions "
                "(train, valid, test) that sum to 1"
            )
        return
    if not 0 < ds.valid_fraction < 1:
        raise ConfigError(
            f"dataset.valid_fraction={ds.valid_fraction!r} is not valid; it must lie in (0, 1)"
        )
    if ds.max_samples is not None:
        check_positive("dataset.max_samples", ds.max_samples, integer=True)


def init_stds(cfg: Any) -> list[tuple[str, float]]:
    """(weight, standard deviation) of every fluctuation-driven initial weight (float64)."""
    from sgtheory.init import psp_eps_hat

    ds = cfg.dataset
    lists = layer_lists(ds)
    eps_hat = psp_eps_hat(cfg.tau_mem, cfg.tau_syn, float(ds.dt))
    sigma_u, nu, alpha = float(cfg.method.target_sigma_u), float(ds.nu), float(cfg.alpha)
    out, channels = [], 1
    for i, (filters, kernel) in enumerate(zip(lists["nb_filters"], lists["kernel_size"])):
        rec = lists["recurrent_kernel"][i]
        share = alpha if rec else 1.0
        fans = [(f"hidden.{i}.weight", channels * kernel, share)]
        if rec:
            fans.append((f"hidden.{i}.rec_weight", filters * rec, 1 - share))
        for name, fan_in, fraction in fans:
            if fraction == 0:
                out.append((name, 0.0))  # `alpha` gives these weights no share
                continue
            try:
                std = math.sqrt(fraction * sigma_u**2 / (fan_in * nu * eps_hat))
            except (OverflowError, ZeroDivisionError):
                std = math.inf
            out.append((name, std))
        channels = filters
    return out


# float32 weights must hold the initial values and their products with inputs and currents
INIT_STD_RANGE = (1e-30, 1e30)


def _check_init(cfg: Any) -> None:
    """The initial weights' scale, from the settings that set it, fits float32.

    sigma_w = sqrt(share sigma_u^2 / (fan_in nu eps_hat)): a target membrane std
    `method.target_sigma_u` far from an assumed input rate `dataset.nu` (or a PSP integral of
    tau_mem, tau_syn and dataset.dt near 0) gives weights that are inf or 0 in float32; the
    first training step would then fail as if the learning rate were to blame.
    """
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


def init_settings(cfg: Any) -> str:
    """The settings that set the initial weights, as `<setting>=<value>, ...`."""
    nu, sigma_u = float(cfg.dataset.nu), float(cfg.method.target_sigma_u)
    pair = [f"dataset.nu={cfg.dataset.nu}", f"method.target_sigma_u={cfg.method.target_sigma_u}"]
    if abs(math.log10(sigma_u)) > abs(math.log10(nu / 10)):  # the one furthest from usual first
        pair.reverse()
    return (
        f"{pair[0]}, {pair[1]} (with tau_mem={cfg.tau_mem}, tau_syn={cfg.tau_syn}, "
        f"dataset.dt={cfg.dataset.dt})"
    )


def validate(cfg: Any) -> Geometry:
    """Check every setting of `cfg`; return the network geometry or raise ConfigError.

    Types first (so later checks compare numbers with numbers), then choices, ranges, the
    annealing schedule (in closed form), the dataset's settings, the layer geometry, the
    initial weights' scale and the memory the run needs.
    """
    check_types(cfg)
    _check_choices(cfg)
    _check_names(cfg)
    _check_numbers(cfg)
    _check_plotting(cfg)
    check_anneal(cfg)
    _check_dataset(cfg)
    geo = geometry(cfg)
    _check_steps(cfg)
    _check_init(cfg)
    check_memory(cfg, geo)
    return geo


# float32 copies of every hidden neuron's state per batch sample and step that training
# keeps at once (currents, membranes, spikes, saved for the backward pass); measured peaks
# (README, "Speed") stay below this estimate
COPIES_PER_NEURON = 3
SHD_TRAIN_SAMPLES = 8156  # samples in SHD's official training file


def memory_needed(cfg: Any, geo: Geometry) -> dict[str, int]:
    """Bytes the run needs at its configured sizes, before any of it is allocated.

    "data": a Randman dataset held whole (float32 samples x steps x units); SHD is binned per
    batch (its events are the files' size). "network": one training batch's input and hidden
    states (`COPIES_PER_NEURON` float32 values per neuron and step) plus the weights and the
    optimiser's state; "same": the repeated trials of one sample kept for the Fano factors.
    """
    ds = cfg.dataset
    lists = layer_lists(ds)
    steps, units, batch = int(ds.nb_steps), int(ds.nb_units), int(cfg.batch_size)
    neurons = sum(f * n for f, n in zip(lists["nb_filters"], geo.lengths[1:]))
    data = 0
    if ds.name == "randman":
        data = 4 * int(ds.nb_classes) * int(ds.nb_samples) * steps * units
        batch = min(batch, int(ds.nb_classes) * int(ds.nb_samples))
    else:  # no batch is larger than the official training file (or dataset.max_samples)
        batch = min(batch, SHD_TRAIN_SAMPLES, int(ds.get("max_samples") or SHD_TRAIN_SAMPLES))
    params, channels = 0, 1
    for i, (filters, kernel) in enumerate(zip(lists["nb_filters"], lists["kernel_size"])):
        params += filters * channels * kernel + filters * filters * lists["recurrent_kernel"][i]
        channels = filters
    params += geo.nb_readout_inputs * geo.nb_classes
    network = 4 * batch * steps * (2 * units + COPIES_PER_NEURON * neurons) + 4 * 4 * params
    same = int(cfg.fano.repeats) * steps * (4 * units + neurons)
    return {"data": data, "network": network, "same": same}


def available_memory() -> int | None:
    """Bytes of memory this process can still get: MemAvailable, within a cgroup's limit."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        free = info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    for limit, used in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap = open(limit).read().strip()
            if cap != "max":
                free = min(free, int(cap) - int(open(used).read().strip()))
            break
        except (OSError, ValueError):
            continue
    return free


# ordinary sizes: the settings of a run that does not fit are named in order of how far they
# lie above these (the likeliest mistake first)
ORDINARY_SIZES = {
    "dataset.nb_units": 700,
    "dataset.nb_samples": 1000,
    "dataset.nb_classes": 20,
    "dataset.nb_steps": 350,
    "batch_size": 400,
    "dataset.nb_filters": 128,
    "dataset.padding": 10,
    "fano.repeats": 400,
}
SIZES_OF = {
    "data": ("dataset.nb_samples", "dataset.nb_classes", "dataset.nb_steps", "dataset.nb_units"),
    "network": (
        "batch_size",
        "dataset.nb_steps",
        "dataset.nb_units",
        "dataset.nb_filters",
        "dataset.padding",
    ),
    "same": ("fano.repeats", "dataset.nb_steps", "dataset.nb_units", "dataset.nb_filters"),
}


def _size_settings(cfg: Any, part: str) -> str:
    """The settings that size `part` of the memory, the furthest above ordinary first."""
    named = []
    for key in SIZES_OF[part]:
        value = _find(cfg, key)
        if value is None:
            continue
        size = (
            max(value) if isinstance(value, (list, tuple)) or hasattr(value, "__len__") else value
        )
        if key == "dataset.padding" and not size:
            continue
        shown = list(value) if hasattr(value, "__len__") else value
        named.append((size / ORDINARY_SIZES[key], f"{key}={shown}"))
    return ", ".join(text for _, text in sorted(named, key=lambda item: -item[0]))


def check_memory(cfg: Any, geo: Geometry, available: int | None = None) -> dict[str, int]:
    """ConfigError (with the estimate) if the run cannot fit in the memory available.

    On a CUDA device the network's part is compared with the device's free memory, the
    data with the host's.
    """
    need = memory_needed(cfg, geo)
    gib = 2.0**30
    sizes = _size_settings(cfg, max(need, key=need.get))
    parts = [("host", need["data"] + need["same"] + need["network"], available)]
    if str(cfg.device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
        parts = [
            ("host", need["data"] + need["same"], available),
            ("device", need["network"], free),
        ]
    if available is None and parts[0][2] is None:
        parts[0] = ("host", parts[0][1], available_memory())
    for where, total, free in parts:
        if free is not None and total > free:
            raise ConfigError(
                f"{sizes}: the run needs about {total / gib:.3g} GiB of {where} memory (data "
                f"{need['data'] / gib:.3g} GiB, network {need['network'] / gib:.3g} GiB per "
                f"batch, trials of the Fano sample {need['same'] / gib:.3g} GiB), "
                f"{free / gib:.3g} GiB is available; use smaller sizes"
            )
    return need


def nb_threads(setting: int | None) -> int:
    """The `threads` setting, or every core this process may use (its affinity mask)."""
    return default_threads(setting)
