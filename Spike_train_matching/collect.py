"""Collect a Spike train matching sweep: summary.csv, summary.md and figures of mean and spread
over seeds.

Run from this folder or anywhere:  python3 collect.py experiments/Runs/<sweep folder> [--out DIR]
See docs/sweeps.md. What to read from a Spike train matching run (results.json and the loss
histories in data/) is defined here (the `EXPERIMENT` below); finding, grouping and summarizing
runs is done in the sgruns.sweeps package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from sgruns.sweeps import Experiment, Group, curve_figure, main, nested_get


def _stm_metrics(res: dict) -> dict[str, Any]:
    final = nested_get(res, "losses", "final")
    if not isinstance(final, dict):
        raise KeyError("losses.final")
    last10 = nested_get(res, "losses", "mean_last_10") or {}
    out: dict[str, Any] = {
        "final_vRd": final["loss_hist_vRd"],
        "final_L2": final.get("loss_hist_L2"),
        "other_final_vRd": final.get("loss_hist_vRd_valid"),
        "other_final_L2": final.get("loss_hist_L2_valid"),
        "mean_last_10_vRd": last10.get("loss_hist_vRd"),
        "other_mean_last_10_vRd": last10.get("loss_hist_vRd_valid"),
    }
    for name, mode in (("", "train"), ("other_", "valid")):
        s = nested_get(res, "spike_stats", "final_epoch", mode) or {}
        for layer in ("hidden", "output"):
            out[f"{name}rate_{layer}_hz"] = s.get(f"rate_{layer}_hz")
            out[f"{name}fano_{layer}"] = s.get(f"fano_{layer}")
    out["run_time_s"] = nested_get(res, "timing", "run_time_s")
    return out


def _stm_hyper(cfg: dict) -> dict[str, Any]:
    return {
        "lr_h": nested_get(cfg, "dataset_method", "lr_h"),
        "lr_o": nested_get(cfg, "dataset_method", "lr_o"),
    }


def _stm_curves(path: Path, res: dict) -> dict[str, np.ndarray]:
    """Loss histories from the run's data/<name>_<epoch_end>.npy chunks, in epoch order."""
    out = {}
    for name in ("loss_hist_vRd", "loss_hist_L2", "loss_hist_vRd_valid", "loss_hist_L2_valid"):
        chunks = []
        for p in (path / "data").glob(f"{name}_*.npy"):
            end = p.stem[len(name) + 1 :]
            if end.isdigit():
                chunks.append((int(end), p))
        if chunks:
            out[name] = np.concatenate([np.load(p).ravel() for _, p in sorted(chunks)])
    return out


def _stm_figures(groups: list[Group], out: Path) -> list[Path]:
    fig = curve_figure(
        groups,
        out / "losses.png",
        [
            ("loss_hist_vRd", "van Rossum distance", "loss_hist_vRd_valid"),
            ("loss_hist_L2", "L2 distance", "loss_hist_L2_valid"),
        ],
        "Spike-train matching: mean ± std over seeds (dashed: evaluated with the other method)",
    )
    return [fig] if fig is not None else []


EXPERIMENT = Experiment(
    "Spike train matching",
    _stm_metrics,
    _stm_hyper,
    _stm_curves,
    _stm_figures,
    ("final_vRd", "final_L2", "other_final_vRd", "other_final_L2", "rate_hidden_hz"),
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
