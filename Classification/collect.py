"""Collect a Classification sweep: summary.csv, summary.md and figures of mean and spread over
seeds.

Run from this folder or anywhere:  python3 collect.py experiments/Runs/<sweep folder> [--out DIR]
See docs/sweeps.md. What to read from a Classification results.json is defined here (the
`EXPERIMENT` below); finding, grouping and summarizing runs is done in sgruns.sweeps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from sgruns.sweeps import (
    Experiment,
    Group,
    curve_figure,
    finite,
    layer_bar_figure,
    main,
    nested_get,
)


def _class_metrics(res: dict) -> dict[str, Any]:
    """Scalars of a results.json: test and `other` accuracy and loss, final and best validation
    accuracy, firing rate and Fano factor per hidden layer under both methods, run time."""
    test, other, hist = res["test"], res.get("other") or {}, res.get("history") or {}
    out: dict[str, Any] = {
        "test_acc": test["test_acc"],
        "test_loss": test.get("test_loss"),
        "other_method": other.get("method"),
        "other_test_acc": other.get("test_acc"),
        "other_test_loss": other.get("test_loss"),
        "final_train_acc": (hist.get("train_acc") or [None])[-1],
        "final_valid_acc": (hist.get("valid_acc") or [None])[-1],
        "best_valid_acc": max((v for v in hist.get("valid_acc") or [] if finite(v)), default=None),
    }
    for name, entry in (("", test), ("other_", other)):
        for key, label in (("test_rates", "rate"), ("fano", "fano")):
            for i, v in enumerate(entry.get(key) or []):
                out[f"{name}{label}_l{i + 1}"] = v
    out["run_time_s"] = res.get("run_time_s")
    return out


def _class_hyper(cfg: dict) -> dict[str, Any]:
    """The learning rate, a column of summary.csv."""
    return {"lr": nested_get(cfg, "method", "lr")}


def _class_curves(path: Path, res: dict) -> dict[str, np.ndarray]:
    """Per-epoch accuracy and loss, training and validation (null entries as nan)."""
    hist = res.get("history") or {}
    return {
        k: np.asarray([np.nan if v is None else v for v in hist[k]], dtype=float)
        for k in ("train_acc", "valid_acc", "train_loss", "valid_loss")
        if hist.get(k)
    }


def _class_figures(groups: list[Group], out: Path) -> list[Path]:
    """accuracy.png (curves over epochs) and fano.png (per hidden layer, both methods)."""
    figs = [
        curve_figure(
            groups,
            out / "accuracy.png",
            [("train_acc", "training accuracy", None), ("valid_acc", "validation accuracy", None)],
            "Accuracy over epochs: mean ± std over seeds",
        ),
        layer_bar_figure(
            groups,
            out / "fano.png",
            [
                ("fano", "evaluated with the trained method"),
                ("other_fano", "evaluated with the other method"),
            ],
            "Fano factor",
            "Fano factor per hidden layer (test sample repeats)",
        ),
    ]
    return [f for f in figs if f is not None]


EXPERIMENT = Experiment(
    "Classification",
    _class_metrics,
    _class_hyper,
    _class_curves,
    _class_figures,
    ("test_acc", "other_test_acc", "final_valid_acc", "fano_l1", "other_fano_l1"),
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
