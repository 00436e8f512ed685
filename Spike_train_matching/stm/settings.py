"""Check a run's settings before any work: names, numbers, sizes, derived quantities, the
target image.

The entry point calls `precheck_argv` on the raw command line (every value of a sweep) and
`validate` on each composed config: types (a float is never taken for an integer), ranges,
the memory the run needs against the memory available (`stm.memory`), the quantities that
several settings make together (`stm.derived`) and the target. Each raises `ConfigError`
naming the setting, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgruns.errors import check_known, check_seed, check_threads
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.spikes import METHODS

from . import derived, memory
from .data import load_target
from .derived import get, ranked, shown
from .methods import VALID_ESCAPES, Params
from .model import eps_kernel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "config_experiments"


def choices(config_dir: Path, group: str) -> tuple[str, ...]:
    """The names of a config group: the stems of its yaml files."""
    return tuple(sorted(p.stem for p in (config_dir / group).glob("*.yaml")))


def precheck_argv(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject an unknown method/dataset on the command line, every value of a sweep
    (`-m method=a,b`) before its first job starts, and a pair without learning rates."""
    for arg in argv[1:]:
        match = re.fullmatch(r"\+{0,2}(method|dataset)=(.*)", arg)
        if not match:
            continue
        group, values = match.groups()
        for value in re.sub(r"^choice\((.*)\)$", r"\1", values).split(","):
            check_choice(group, value.strip(), choices(config_dir, group))
    chosen = {"method": "superspike", "dataset": "scene"}
    for arg in argv[1:]:
        match = re.fullmatch(r"\+{0,2}(method|dataset)=([\w-]+)", arg)
        if match:
            chosen[match.group(1)] = match.group(2)
    pair = f"{chosen['dataset']}_{chosen['method']}"
    if not (config_dir / "dataset_method" / f"{pair}.yaml").exists():
        raise ConfigError(
            f"dataset_method={pair!r} has no learning rates (config_experiments/dataset_method/"
            f"{pair}.yaml); add that file"
        )


def resolve_data_path(path: str, base: Path = CONFIG_DIR.parent) -> Path:
    """Relative paths: first against the directory the user ran from, then `base`."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    try:
        from hydra.utils import get_original_cwd

        first = Path(get_original_cwd()) / candidate
    except (ImportError, ValueError):
        first = Path.cwd() / candidate
    return first if first.exists() else base / candidate


# Settings by kind; dotted names reach into the groups.
POSITIVE_INTS = (
    "nb_epochs logging_freq fano_window method.nb_trials valid_nb_trials dataset.nb_inputs "
    "dataset.nb_hidden dataset.nb_outputs dataset.nb_steps dataset.batch_size"
).split()
POSITIVE_FLOATS = (
    "dt tau_mem tau_syn threshold eps0 beta_h beta_o delta_u_h delta_u_o p0 input_rate sigma_u "
    "out_prob"
).split()
BOOLS = (
    "reset_mode validate_with_other_method save_spk save_mem save_dw save_w resume progress "
    "method.sigm"
).split()
STRINGS = ("dataset.data_path", "device", "wandb.project")
OTHERS = (
    "seed threads max_chunks wandb.entity wandb.mode dataset_method.lr_h dataset_method.lr_o "
    "dataset.name method.name valid_escape"
).split()
KNOWN = (*POSITIVE_INTS, *POSITIVE_FLOATS, *BOOLS, *STRINGS, *OTHERS)  # every setting
WANDB_FORBIDDEN = "/\\#?%:"  # characters wandb refuses in a project name
# sizes that set the memory a run needs (stm.memory)
SIZES = (
    "dataset.batch_size method.nb_trials valid_nb_trials dataset.nb_hidden dataset.nb_outputs "
    "dataset.nb_inputs dataset.nb_steps logging_freq nb_epochs"
).split()


def check_int(name: str, value: Any) -> int:
    """`value` if it is a positive integer; a float (even 200.0) is refused like a string."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = ""
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value > 0:
            hint = f" (write {int(value)}, without a decimal point)"
        raise ConfigError(f"{name}={value!r} is not valid; it must be a positive integer{hint}")
    return value


def _check_types(cfg) -> None:
    """Every setting of the right type and range: one ConfigError naming the first bad one."""
    for name in POSITIVE_INTS:
        check_int(name, get(cfg, name))
    for name in POSITIVE_FLOATS:
        check_positive(name, get(cfg, name))
    for name in BOOLS:
        value = get(cfg, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is not valid; it must be true or false")
    for name in STRINGS:
        value = get(cfg, name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name}={value!r} is not valid; it must be a non-empty string")
    check_seed("seed", cfg.seed)
    check_threads("threads", cfg.threads)
    if cfg.max_chunks is not None:
        check_int("max_chunks", cfg.max_chunks)
    if cfg.wandb.entity is not None and not isinstance(cfg.wandb.entity, str):
        raise ConfigError(f"wandb.entity={cfg.wandb.entity!r} is not valid; a name or null")


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], tree)]


def _check_known(cfg) -> None:
    """No setting outside KNOWN (`+foo=1` or a misspelt `++` override would be ignored), and
    none of KNOWN missing (deleted on the command line with `~seed`)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    leaves = _leaves(tree)
    check_known(leaves, KNOWN, "experiments/config_experiments/config.yaml")
    present = {key for key, _ in leaves}
    for name in KNOWN:
        if name not in present:
            raise ConfigError(
                f"{name} is not set; it is a required setting (removed with ~{name} or from a "
                "config file?): give it a value; the defaults are in "
                "experiments/config_experiments/"
            )


def _check_ranges(cfg) -> None:
    """Relations between settings, and finite non-negative learning rates."""
    for name in ("lr_h", "lr_o"):
        value = cfg.dataset_method[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"dataset_method.{name}={value!r} is not valid; it must be a finite number >= 0"
            )
    if cfg.input_rate * cfg.dt > 1:
        raise ConfigError(
            f"input_rate={cfg.input_rate!r} is not valid with dt={cfg.dt!r}: input_rate * dt "
            f"= {cfg.input_rate * cfg.dt} must be a probability (<= 1)"
        )
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")
    if cfg.fano_window > cfg.dataset.nb_steps:
        raise ConfigError(
            f"fano_window={cfg.fano_window!r} is not valid; it must be at most "
            f"dataset.nb_steps={cfg.dataset.nb_steps} (steps per spike-count window)"
        )
    bad = sorted(set(WANDB_FORBIDDEN) & set(cfg.wandb.project))
    if bad:
        raise ConfigError(
            f"wandb.project={cfg.wandb.project!r} is not valid; a wandb project name may not "
            f"contain {' '.join(WANDB_FORBIDDEN)} (found {' '.join(bad)})"
        )
    if cfg.device != "cpu":
        raise ConfigError(f"device={cfg.device!r} is not valid; choose one of: cpu")


def _check_name(cfg, chosen: Mapping[str, Any] | None) -> None:
    """dataset.name labels the run; it must name the dataset whose data the run uses."""
    group = (chosen or {}).get("dataset")
    if group is not None and cfg.dataset.name != group:
        raise ConfigError(
            f"dataset.name={cfg.dataset.name!r} does not match the dataset chosen (dataset="
            f"{group}, whose image is {cfg.dataset.data_path}); the name only labels the run: "
            f"choose the dataset itself with dataset={cfg.dataset.name}"
        )


def _check_own_image(cfg, path: Path, config_dir: Path) -> None:
    """The image of another dataset's config (the scene's under dataset=oxford) is refused:
    the run would be recorded under a name that is not its data's."""
    from omegaconf import OmegaConf

    for other in choices(config_dir, "dataset"):
        theirs = OmegaConf.load(config_dir / "dataset" / f"{other}.yaml").get("data_path")
        if other == cfg.dataset.name or not isinstance(theirs, str):
            continue
        their_path = resolve_data_path(theirs, config_dir.parent)
        try:
            same = path.is_file() and their_path.is_file() and path.samefile(their_path)
        except OSError:
            same = False
        if same:
            raise ConfigError(
                f"dataset.data_path={cfg.dataset.data_path} is not valid with dataset="
                f"{cfg.dataset.name}: it is the image of dataset={other}; use dataset={other} "
                f"for it, or give {cfg.dataset.name}'s own image"
            )


def _check_memory(cfg, defaults: dict[str, Any]) -> None:
    """Refuse a run whose arrays cannot fit in the memory available (before allocating)."""
    need, parts = memory.estimate(cfg)
    have = memory.available()  # beyond what this process holds already
    if have is None or need - memory.process_peak() <= have:
        return
    first, *others = ranked(cfg, SIZES, defaults)
    big = ", ".join(
        f"{k} {memory.human(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    )
    raise ConfigError(
        f"{first}={get(cfg, first)!r} is not valid here: the run would need about "
        f"{memory.human(need)} of memory ({big}), more than the {memory.human(have)} available "
        f"on this machine; lower it or the other sizes ({shown(cfg, others)})"
    )


def _chosen(chosen: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The config groups chosen on the command line (Hydra's runtime choices if running)."""
    if chosen is not None:
        return chosen
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except (ImportError, ValueError):
        return None


def validate(
    cfg, config_dir: Path = CONFIG_DIR, chosen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check every setting and load the target; raise ConfigError before any work.

    `chosen`: the config groups picked ({"dataset": "scene", ...}; Hydra's own choices when
    run by Hydra). Returns the method's parameters (`stm.methods.Params`), the target raster
    and the shipped defaults (`stm.derived.shipped_defaults`, for naming settings later).
    """
    _check_known(cfg)
    check_choice("method", cfg.method.name, (*choices(config_dir, "method"), *METHODS))
    check_choice("dataset", cfg.dataset.name, choices(config_dir, "dataset"))
    chosen = _chosen(chosen)
    _check_name(cfg, chosen)
    _check_types(cfg)
    _check_ranges(cfg)
    check_choice("valid_escape", cfg.valid_escape, VALID_ESCAPES)
    check_choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    group = (chosen or {}).get("dataset", cfg.dataset.name)
    defaults = derived.shipped_defaults(config_dir, group, cfg.method.name)
    _check_memory(cfg, defaults)
    derived.check_decay(cfg, defaults)
    derived.check_init(cfg, defaults)
    eps = eps_kernel(cfg.dataset.nb_steps, cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.eps0)
    derived.check_kernel(cfg, defaults, eps)
    params = Params(cfg.beta_h, cfg.beta_o, cfg.p0, cfg.delta_u_h, cfg.delta_u_o)
    path = resolve_data_path(cfg.dataset.data_path, config_dir.parent)
    _check_own_image(cfg, path, config_dir)
    target = load_target(
        path,
        cfg.out_prob,
        cfg.dataset.nb_steps,
        cfg.dataset.nb_outputs,
        cfg.dataset.name,
    )
    # every float the network computes with (out_prob only compares pixels, in float64)
    derived.check_range(cfg, [n for n in POSITIVE_FLOATS if n != "out_prob"])
    return {"params": params, "target": target, "defaults": defaults}
