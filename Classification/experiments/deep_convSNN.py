"""Train a deep convolutional SNN with surrogate gradients (Randman by default, or SHD).

Run from this folder:
    python3 deep_convSNN.py --config-name=config                      # Randman, superspike
    python3 deep_convSNN.py --config-name=config method=stochasticsuperspike
    python3 deep_convSNN.py --config-name=config_sigm                 # sigmoid surrogates
    python3 deep_convSNN.py --config-name=config dataset=shd dataset.datadir=/path/to/shd
    python3 deep_convSNN.py --config-name=config -m seed=1,2,3        # sweep
A run writes results.json, checkpoint.pt, Plots/ and wandb/ into its Runs/ folder and resumes
from its checkpoint when the same command is run again. See ../README.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from convsnn.experiment import run_experiment
from convsnn.training import NonFiniteLoss
from sgtheory.errors import ConfigError
from sgtheory.runs import write_json_atomic

log = logging.getLogger("deep_convSNN")


@hydra.main(version_base="1.3", config_path="config_stork", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: run (or resume) one experiment in Hydra's output folder."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = run_experiment(cfg, run_dir)
    except (ConfigError, FileNotFoundError, NonFiniteLoss, ConnectionError) as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Record the failure and let Hydra mark this job failed: the sweep goes on with
            # the other runs (sys.exit would stop it). A run that failed after it started
            # has already written its own results.json with status "failed".
            if not (run_dir / "results.json").exists():
                failed = {
                    "status": "failed",
                    "error": f"{type(err).__name__}: {err}",
                    "config": OmegaConf.to_container(cfg, resolve=True),
                }
                write_json_atomic(run_dir / "results.json", failed)
            raise
        sys.exit(f"error: {err}")
    if results.get("status") == "completed":
        return float(results["test"]["test_acc"])
    return None


if __name__ == "__main__":
    main()
