"""Helpers for the Classification experiment tests: run the CLI, compose configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "Classification" / "experiments"
CONFIG_DIR = EXPERIMENTS / "config_stork"

# A tiny Randman run: 15 classes x 12 samples, 2 epochs, small batches, few trials.
TINY = [
    "dataset.nb_samples=12",
    "batch_size=60",
    "nb_epochs=2",
    "epoch_chunk=1",
    "fano.repeats=8",
    "plotting.nb_trials=8",
    "threads=1",
    "progress=false",
]


def run_cli(
    run_dir: Path | None, *overrides: str, cwd: Path = EXPERIMENTS, timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run deep_convSNN.py with `overrides` (in `run_dir` unless None) from `cwd`."""
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, str(EXPERIMENTS / "deep_convSNN.py"), "--config-name=config"]
    cmd += list(overrides)
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_results(run_dir: Path) -> dict:
    with open(run_dir / "results.json") as fh:
        return json.load(fh)


@pytest.fixture
def compose():
    """compose(*overrides) -> the experiment config, as Hydra would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from convsnn.schema import register

    register()

    def make(*overrides: str, config_name: str = "config"):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))

    return make


@pytest.fixture
def refused(tmp_path):
    """refused(*args) -> the message of the ConfigError the command line `args` stops with
    before any work (as deep_convSNN.py reads it: schema registered, Hydra's composition)."""
    from convsnn.schema import register
    from sgruns.cli import prepare
    from sgtheory.errors import ConfigError

    register()

    def message(*args: str) -> str:
        with pytest.raises(ConfigError) as err:
            prepare([*args, f"hydra.run.dir={tmp_path / 'run'}"], CONFIG_DIR)
        assert not (tmp_path / "run").exists()
        return str(err.value)

    return message
