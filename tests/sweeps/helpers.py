"""Shared helpers of the sweep tests: tiny-run overrides, running a sweep, reading summary.md."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
STM_DIR = ROOT / "Spike_train_matching" / "experiments"
CLS_DIR = ROOT / "Classification" / "experiments"
SUBDIR = "hydra.sweep.subdir=${method.name}_${seed}"


def load_collect_script(experiment_dir: Path) -> ModuleType:
    """The module of `<experiment_dir>/collect.py` (e.g. ROOT / "Classification"), imported from
    its file under a name of its own, so its `EXPERIMENT` and helpers can be tested directly."""
    path = experiment_dir / "collect.py"
    name = f"_collect_{experiment_dir.name.lower()}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stm_target(path: Path, rows: int = 12, cols: int = 30) -> Path:
    """A small random target image (rows = outputs, columns = time steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    img = np.random.default_rng(0).random((rows, cols))
    mpimg.imsave(path, img, cmap="gray")
    return path


def stm_tiny(target: Path) -> list[str]:
    """Overrides of a Spike_train_matching run that takes a fraction of a second."""
    return [
        "nb_epochs=6",
        "logging_freq=3",
        "wandb.mode=disabled",
        "progress=false",
        "threads=1",
        "dataset.nb_inputs=12",
        "dataset.nb_hidden=12",
        "dataset.nb_outputs=12",
        "dataset.nb_steps=30",
        f"dataset.data_path={target}",
        "method.nb_trials=3",
    ]


CLS_TINY = [
    "nb_epochs=2",
    "epoch_chunk=1",
    "wandb.mode=disabled",
    "progress=false",
    "threads=1",
    "dataset.nb_samples=12",
    "dataset.nb_filters=[3,3]",
    "dataset.kernel_size=[5,5]",
    "dataset.stride=[1,1]",
    "dataset.padding=[0,0]",
    "dataset.recurrent_kernel=[0,0]",
    "fano.repeats=6",
    "batch_size=60",
    "plotting.enabled=false",
]


def run_sweep(
    script_dir: Path,
    script: str,
    sweep_dir: Path,
    args: list[str],
    timeout: float = 240,
    subdir: str = SUBDIR,
) -> subprocess.CompletedProcess:
    """Run `script -m args` with its sweep folder at `sweep_dir`; return the finished process.

    The subdir names runs by method and seed: the scripts' default subdirs name them by seed and
    learning rate only, so two methods with the same rate would share a folder."""
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    cmd = [sys.executable, script, "-m", f"hydra.sweep.dir={sweep_dir}", subdir, *args]
    return subprocess.run(
        cmd, cwd=script_dir, env=env, capture_output=True, text=True, timeout=timeout
    )


def parse_summary(path: Path) -> dict[str, dict[str, tuple[float, float, int]]]:
    """summary.md -> {group label: {metric: (mean, std, n)}} from the per-group tables."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    label = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            label = line[3:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if label and len(cells) == 4 and cells[0] not in ("metric", "---"):
            mean, std, n = cells[1:]
            out.setdefault(label, {})[cells[0]] = (
                float("nan") if mean == "n/a" else float(mean),
                float("nan") if std == "n/a" else float(std),
                int(n),
            )
    return out


def results_by_method(sweep_dir: Path) -> dict[str, list[dict]]:
    """Every results.json under `sweep_dir`, grouped by config method name."""
    out: dict[str, list[dict]] = {}
    for p in sorted(sweep_dir.rglob("results.json")):
        res = json.loads(p.read_text())
        out.setdefault(res["config"]["method"]["name"], []).append(res)
    return out


def check_stats(table: dict[str, tuple[float, float, int]], metric: str, values: list) -> None:
    """The summary's (mean, std, n) of `metric` equals the one recomputed from `values`."""
    xs = [float(v) for v in values if v is not None]
    mean, std, n = table[metric]
    assert n == len(xs)
    np.testing.assert_allclose(mean, np.mean(xs), rtol=1e-5, atol=1e-9)
    if len(xs) > 1:
        np.testing.assert_allclose(std, np.std(xs, ddof=1), rtol=1e-5, atol=1e-9)
