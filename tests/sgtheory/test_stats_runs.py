"""Spike statistics against binomial facts; run utilities (atomic JSON, devices, wandb)."""

import json
import math

import numpy as np
import pytest
import torch

from sgruns.records import resolve_device
from sgruns.wandb_run import init_wandb
from sgtheory.errors import ConfigError
from sgtheory.files import read_json, write_json_atomic
from sgtheory.stats import cv_isi, fano_factor, firing_rate, interspike_intervals, window_counts


def test_fano_factor_of_bernoulli_spikes_is_one_minus_p():
    p, trials = 0.1, 400
    gen = torch.Generator().manual_seed(0)
    spikes = (torch.rand(trials, 100, 50, generator=gen) < p).float()
    for mode in ("sliding", "binned"):
        assert abs(fano_factor(spikes, 10, mode) - (1 - p)) < 0.03


def test_fano_factor_deterministic_is_exactly_zero_and_windows_count_right():
    spikes = (torch.rand(1, 100, 20) < 0.2).float().expand(50, -1, -1)
    assert fano_factor(spikes, 5) == 0.0
    counts = window_counts(torch.ones(1, 10, 1), 4, "binned")
    assert counts.shape == (1, 2, 1) and torch.all(counts == 4)
    assert window_counts(torch.ones(1, 10, 1), 4, "sliding").shape == (1, 7, 1)
    with pytest.raises(ConfigError, match="fano.mode"):
        fano_factor(spikes, 5, "overlapping")


def test_firing_rate_and_isi():
    spikes = torch.zeros(2, 100, 3)
    spikes[:, ::10] = 1  # every 10 steps of 1 ms: 100 Hz
    assert math.isclose(firing_rate(spikes, 1e-3), 100.0)
    isi = interspike_intervals(spikes[0], 1e-3)
    np.testing.assert_allclose(isi, 0.01)
    assert isi.size == 3 * 9
    np.testing.assert_allclose(cv_isi(spikes[0], 1e-3), 0.0, atol=1e-12)


def test_json_is_written_atomically_and_nan_becomes_null(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json_atomic(path, {"a": torch.tensor([1.0, 2.0]), "b": float("nan"), "c": np.int64(3)})
    assert read_json(path) == {"a": [1.0, 2.0], "b": None, "c": 3}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp files left

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": Boom()})
    assert json.loads(path.read_text())["c"] == 3  # the old file survives a failed write


def test_device_and_wandb_settings(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")
    for bad in ("cpu:x", "cuda:x", "cpu:1", "cuda:-1", " cpu", 3):
        with pytest.raises(ConfigError, match="is not valid; choose one of: cpu, cuda"):
            resolve_device(bad)
    assert resolve_device("cpu:0").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available; use cpu"):
            resolve_device("cuda")
    else:
        with pytest.raises(ConfigError, match="this machine has"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ConfigError, match="offline"):
        init_wandb("sometimes", run_dir=tmp_path)
    run = init_wandb("offline", run_dir=tmp_path, config={"x": 1})
    run.log({"loss": 1.0})
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    init_wandb("disabled").log({"loss": 1.0})


def test_seed_and_threads_follow_one_rule_in_both_experiments():
    from sgruns.errors import check_seed, check_threads
    from sgtheory.backends.threads import usable_cores

    assert check_seed("seed", 0) == 0 and check_seed("dataset.seed", 2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.0, True, "1", None):
        with pytest.raises(ConfigError, match=rf"^dataset.seed={bad!r} is not valid; it must"):
            check_seed("dataset.seed", bad)
    cores = usable_cores()
    assert check_threads("threads", None) is None and check_threads("threads", cores) == cores
    for bad in (0, -1, cores + 1, 1.0, True, "2"):
        with pytest.raises(ConfigError, match=rf"^threads={bad!r} is not valid"):
            check_threads("threads", bad)


def test_wandb_that_cannot_start_is_a_config_error(tmp_path, monkeypatch):
    import wandb

    def refuse(**kwargs):
        raise RuntimeError("project name contains '/'")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(ConfigError, match=r"^wandb.mode=offline: wandb could not start \(proj"):
        init_wandb("offline", project="a/b", run_dir=tmp_path)
