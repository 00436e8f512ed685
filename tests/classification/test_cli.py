"""End-to-end runs of deep_convSNN.py: outputs, resume, SHD."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, read_results, run_cli

# keys that legitimately differ between an interrupted+resumed and an uninterrupted run
VOLATILE = ("run_time_s", "timing", "versions", "wandb_id", "run_dir")


def test_end_to_end_writes_results_plots_and_wandb(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(run_dir)
    assert res["status"] == "completed"
    assert res["epochs_done"] == 2
    assert len(res["history"]["train_loss"]) == 2 and len(res["history"]["valid_acc"]) == 2
    for phase in ("test", "other"):
        assert 0.0 <= res[phase]["test_acc"] <= 1.0
        assert len(res[phase]["fano"]) == 3 and len(res[phase]["test_rates"]) == 3
    assert res["test"]["method"] == "superspike"
    assert res["other"]["method"] == "stochasticsuperspike"
    assert res["test"]["fano"] == [0.0, 0.0, 0.0]  # deterministic: no trial-to-trial variability
    assert all(f > 0 for f in res["other"]["fano"])  # stochastic evaluation of the same weights
    assert [s["epoch"] for s in res["stats"]] == [0, 1, 2]
    assert res["test"]["epoch"] == res["other"]["epoch"] == 2  # after the 2 epochs
    assert res["config"]["method"]["name"] == "superspike"
    for name in ("snapshot", "two_classes", "trial_variability", "training_curves"):
        assert (run_dir / "Plots" / f"{name}.png").stat().st_size > 1000
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert (run_dir / "checkpoint.pt").exists()


def _strip(res: dict) -> dict:
    out = {k: v for k, v in res.items() if k not in VOLATILE}
    out["config"] = {k: v for k, v in res["config"].items() if k != "stop_after_epochs"}
    return out


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    common = [*TINY, "method=stochasticsuperspike", "wandb.mode=disabled", "plotting.enabled=false"]
    resumed = tmp_path / "resumed"
    first = run_cli(resumed, *common, "stop_after_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    partial = read_results(resumed)
    assert partial["status"] == "running" and partial["epochs_done"] == 1
    second = run_cli(resumed, *common)
    assert second.returncode == 0, second.stderr[-3000:]
    straight = tmp_path / "straight"
    proc = run_cli(straight, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_results(resumed), read_results(straight)
    assert a["status"] == b["status"] == "completed"
    assert _strip(a) == _strip(b)
    assert len(a["timing"]["epoch_s"]) == 2


def test_default_and_multirun_folders(tmp_path):
    common = [*TINY, "nb_epochs=1", "wandb.mode=disabled", "plotting.enabled=false"]
    proc = run_cli(None, *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    example = tmp_path / "Runs" / "stork_superspike" / "dataset=randman" / "Example"
    assert read_results(example)["status"] == "completed"
    proc = run_cli(None, "-m", *common, "seed=3", "method=stochasticsuperspike", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "Runs" / "stork_stochasticsuperspike" / "dataset=randman"
    (job,) = sweep.glob("*/seed=3+lr=0.01")
    assert read_results(job)["status"] == "completed"


@pytest.mark.slow
def test_small_shd_run_in_official_format(tmp_path):
    from sgtheory.data import write_shd_like

    rng = np.random.default_rng(0)
    datadir = tmp_path / "shd"
    for split, n in (("train", 40), ("test", 12)):
        times, units = [], []
        labels = np.arange(n) % 20
        for label in labels:
            k = 300
            t = np.sort(rng.uniform(0, 0.8, k))  # some spikes after 0.7 s are dropped
            u = (rng.integers(0, 35, k) + 35 * label) % 700  # class-dependent units
            times.append(t)
            units.append(u)
        write_shd_like(datadir / f"shd_{split}.h5", times, units, labels)
    run_dir = tmp_path / "run"
    proc = run_cli(
        run_dir,
        "dataset=shd",
        f"dataset.datadir={datadir}",
        "method=stochasticsuperspike",
        "nb_epochs=1",
        "batch_size=20",
        "fano.repeats=4",
        "plotting.nb_trials=4",
        "wandb.mode=disabled",
        "threads=1",
        "progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(run_dir)
    assert res["status"] == "completed"
    assert res["config"]["dataset"]["name"] == "shd"
    assert len(res["test"]["fano"]) == 3
    assert (run_dir / "Plots" / "snapshot.png").exists()


def test_bf16_precision_runs_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        run_dir, *TINY, "precision=bf16", "method=stochasticsuperspike", "wandb.mode=disabled"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(run_dir)
    assert res["status"] == "completed" and res["config"]["precision"] == "bf16"
    assert all(np.isfinite(res["history"]["train_loss"]))
    assert all(f > 0 for f in res["test"]["fano"])  # stochastic: variability survives bf16
