"""Theory study: exact gradients of the expected loss against SG, stochastic AD, REINFORCE.

Run from this folder:  python3 run_theory.py [overrides], e.g. `beta=10 nb_samples=5000`.
Writes results.json (every number) and Plots/*.png into the Hydra run folder
(Runs/<date>/<time> unless hydra.run.dir=... is given). See README.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import matplotlib
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sgtheory.errors import ConfigError
from sgtheory.runs import versions
from sgtheory.theory.figures import write_outputs
from sgtheory.theory.study import StudySettings, run_study

matplotlib.use("Agg")


def run(cfg: DictConfig) -> Path:
    """Settings from the config, the whole study, outputs into the run folder."""
    values = OmegaConf.to_container(cfg, resolve=True)
    settings = StudySettings(**values).validate()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    record = run_study(settings)
    record["total_time_s"] = time.perf_counter() - start
    record["versions"] = versions()
    write_outputs(record, run_dir / "results.json", run_dir / "Plots")
    print(f"wrote {run_dir / 'results.json'} and {run_dir / 'Plots'}")
    return run_dir


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as exc:
        print(f"ConfigError: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
