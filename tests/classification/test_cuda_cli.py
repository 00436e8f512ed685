"""End-to-end runs of deep_convSNN.py on a CUDA device (skipped where there is none).

The tiny Randman run of test_cli.py with device=cuda and wandb disabled (these runs must
not need wandb, which a GPU machine may lack).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, read_results, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ON_CUDA = [*TINY, "device=cuda", "wandb.mode=disabled"]


def test_end_to_end_on_cuda_writes_results_and_plots(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *ON_CUDA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(run_dir)
    assert res["status"] == "completed"
    assert res["epochs_done"] == 2
    assert res["config"]["device"] == "cuda"
    assert all(math.isfinite(v) for v in res["history"]["train_loss"])
    for phase in ("test", "other"):
        acc = res[phase]["test_acc"]
        assert math.isfinite(acc) and 0.0 <= acc <= 1.0
        assert len(res[phase]["fano"]) == 3
    assert res["test"]["fano"] == [0.0, 0.0, 0.0]  # deterministic: no trial-to-trial variability
    assert all(f > 0 for f in res["other"]["fano"])  # stochastic, drawn on the GPU
    pngs = list((run_dir / "Plots").glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert not (run_dir / "wandb").exists()
    assert (run_dir / "checkpoint.pt").exists()


def test_interrupted_cuda_run_resumes(tmp_path):
    """The checkpoint holds CUDA generator states; resuming restores them on the GPU."""
    common = [*ON_CUDA, "method=stochasticsuperspike", "plotting.enabled=false"]
    run_dir = tmp_path / "resumed"
    first = run_cli(run_dir, *common, "stop_after_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_results(run_dir)["status"] == "running"
    second = run_cli(run_dir, *common)
    assert second.returncode == 0, second.stderr[-3000:]
    res = read_results(run_dir)
    assert res["status"] == "completed" and res["epochs_done"] == 2
    assert len(res["history"]["train_loss"]) == 2
    assert math.isfinite(res["test"]["test_acc"])
