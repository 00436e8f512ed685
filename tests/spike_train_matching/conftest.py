"""Shared fixtures: a tiny target image and short CLI runs of both methods; the config as
Hydra composes it (the schema registered as the entry script does)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from stm.schema import register

REPO = Path(__file__).resolve().parents[2]
STM = REPO / "Spike_train_matching"
EXPERIMENTS = STM / "experiments"
ANALYSIS = STM / "analysis"

TINY = {"nb_inputs": 20, "nb_hidden": 15, "nb_outputs": 12, "nb_steps": 30}


def write_png(path: Path, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A random grayscale PNG of rows x cols; returns the pixel values as read back."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    img = rng.random((rows, cols))
    plt.imsave(path, img, cmap="gray", vmin=0.0, vmax=1.0)
    return plt.imread(path)[..., 0]


def tiny_overrides(png: Path, **extra) -> list[str]:
    """Command-line overrides for a tiny, fast network on `png`."""
    args = [f"dataset.{k}={v}" for k, v in TINY.items()]
    args += [f"dataset.data_path={png}", "wandb.mode=disabled", "progress=false"]
    args += [f"{k}={v}" for k, v in extra.items()]
    return args


def run_cli(run_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the experiment script as a user would, with Hydra's run dir set to `run_dir`."""
    cmd = [
        sys.executable,
        "run_image_task_1hid.py",
        "--config-name=config",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, cwd=EXPERIMENTS, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def compose(*overrides: str):
    """The run's config as Hydra composes it from the command line's overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(str(EXPERIMENTS / "config_experiments"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def refusal(*args: str) -> str:
    """The message with which the command line `args` is refused before Hydra starts (the
    run folder set to one that is never made)."""
    from sgruns.cli import prepare
    from sgtheory.errors import ConfigError

    register()
    never = Path(tempfile.gettempdir()) / "stm-run-never-made"
    with pytest.raises(ConfigError) as info:
        prepare([*args, f"hydra.run.dir={never}"], EXPERIMENTS / "config_experiments")
    assert not never.exists()
    return str(info.value)


@pytest.fixture(scope="session")
def tiny_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "tiny.png"
    write_png(path, TINY["nb_outputs"], TINY["nb_steps"])
    return path


@pytest.fixture(scope="session")
def short_runs(tmp_path_factory, tiny_png) -> dict[str, Path]:
    """Short runs of both default methods (7 epochs, chunks of 3) with every history saved."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for method in ("superspike", "stochasticsuperspike"):
        run_dir = root / method
        extra = dict(nb_epochs=7, logging_freq=3, save_mem="true", save_w="true", save_dw="true")
        if method != "superspike":
            extra.update({"method.nb_trials": 3, "valid_nb_trials": 2})
        run_cli(run_dir, f"method={method}", *tiny_overrides(tiny_png, **extra))
        runs[method] = run_dir
    return runs
