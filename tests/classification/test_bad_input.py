"""Bad settings stop with one clear message (naming the value and the choices) before work."""

from __future__ import annotations

import pytest
from conftest import TINY, read_results, run_cli

from sgtheory.errors import ConfigError

CASES = [
    ("method.name=foo", "method='foo' is not valid; choose one of: superspike"),
    ("method.other=bar", "method.other='bar' is not valid"),
    ("dataset.name=mnist", "dataset='mnist' is not valid; choose one of: randman, shd"),
    ("loss_type=mse", "loss_type='mse' is not valid; choose one of: mot_ce, sum_of_softmax"),
    ("optimizer=rmsprop", "optimizer='rmsprop' is not valid; choose one of: smorms3, adam, sgd"),
    ("tau_mem=-0.02", "tau_mem=-0.02 is not valid; it must be a positive finite number"),
    ("tau_syn=0", "tau_syn=0 is not valid"),
    ("dataset.dt=0", "dataset.dt=0 is not valid"),
    ("batch_size=0", "batch_size=0 is not valid; it must be a positive integer"),
    ("nb_epochs=-3", "nb_epochs=-3 is not valid; it must be a positive integer"),
    ("epoch_chunk=0", "epoch_chunk=0 is not valid"),
    ("dataset.kernel_size=[11,5]", "dataset.kernel_size has 2"),
    ("dataset.stride=[1,1,1,1]", "dataset.stride has 4"),
    ("dataset.kernel_size=[25,5,5]", "kernel_size=25 is larger than its input of length 20"),
    ("dataset.kernel_size=[11,5,9]", "kernel_size=9 is larger than its input of length 6"),
    ("fano.bin_dt=500", "fano.bin_dt=500 is not valid"),
    ("wandb.mode=cloud", "wandb.mode='cloud' is not valid; choose one of: offline, online"),
    ("device=tpu", "device='tpu' is not valid; choose one of: cpu, cuda"),
    ("precision=fp16", "precision='fp16' is not valid; choose one of: float32, bf16"),
]


@pytest.mark.parametrize("override,message", CASES)
def test_validate_names_value_and_choices(compose, override, message):
    from convsnn.settings import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(override))
    assert message in str(err.value)


def test_defaults_and_every_method_and_dataset_validate(compose):
    from convsnn.settings import validate

    geo = validate(compose())
    assert geo.lengths == (20, 10, 6, 2) and geo.nb_readout_inputs == 256
    for method in (
        "superspike",
        "stochasticsuperspike",
        "exponentialstochasticsuperspike",
        "realstochasticsuperspike",
        "multilayerspiker",
        "scaled_sigmoid",
    ):
        validate(compose(f"method={method}"))
    assert validate(compose("dataset=shd")).lengths == (700, 68, 21, 5)
    assert compose(config_name="config_sigm").sigm is True


def test_missing_shd_files(compose, tmp_path):
    from convsnn.data import shd_paths

    with pytest.raises(FileNotFoundError, match="lacks shd_train.h5, shd_test.h5"):
        shd_paths(compose("dataset=shd", f"dataset.datadir={tmp_path}"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("method=foo", "Could not find 'method/foo'"),
        ("dataset=foo", "Could not find 'dataset/foo'"),
    ],
)
def test_cli_unknown_group_option_lists_choices(tmp_path, override, message):
    proc = run_cli(tmp_path / "run", override)
    assert proc.returncode != 0
    assert message in proc.stderr and "Available options" in proc.stderr
    assert "stochasticsuperspike" in proc.stderr or "randman" in proc.stderr


def test_cli_bad_values_stop_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, "dataset.kernel_size=[11,5,9]", "wandb.mode=disabled")
    assert proc.returncode != 0
    assert "error: hidden layer 2 (dataset.kernel_size[2]): kernel_size=9" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()
    proc = run_cli(run_dir, "dataset=shd", f"dataset.datadir={tmp_path}", "wandb.mode=disabled")
    assert proc.returncode != 0 and "SHD not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()


def test_cli_nan_loss_stops_with_message(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *TINY, "optimizer=sgd", "method.lr=1e38", "wandb.mode=disabled")
    assert proc.returncode != 0
    assert "error: the training loss became" in proc.stderr and "method.lr=1e+38" in proc.stderr
    res = read_results(run_dir)
    assert res["status"] == "failed" and "training loss became" in res["error"]


def test_nan_loss_keeps_last_good_checkpoint(compose, tmp_path, monkeypatch):
    import torch

    from convsnn import experiment, training
    from convsnn.training import NonFiniteLoss

    cfg = compose(*TINY, "nb_epochs=3", "wandb.mode=disabled", "plotting.enabled=false")
    real = training.loss_fn
    calls = {"n": 0}

    def poisoned(loss_type):
        f = real(loss_type)

        def loss(out, y):
            calls["n"] += 1
            value = f(out, y)
            return value * float("nan") if calls["n"] > 3 else value  # batch 1 of epoch 2

        return loss

    monkeypatch.setattr(training, "loss_fn", poisoned)
    with pytest.raises(NonFiniteLoss, match="loss became nan in epoch 2, batch 1"):
        experiment.run_experiment(cfg, tmp_path)
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["last_checkpoint_epoch"] == 1
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def test_a_checkpoint_written_before_a_setting_existed_still_resumes(tmp_path):
    from convsnn.experiment import ADDED_KEYS, _check_resumable

    config = {"seed": 1, "precision": "float32", "threads": 2}
    older = {"seed": 1, "threads": 1}  # no `precision` yet: it means float32
    _check_resumable(older, config, tmp_path, 10, 5)
    assert ADDED_KEYS["precision"] == "float32"
    with pytest.raises(ConfigError, match="different settings \\(precision\\)"):
        _check_resumable(older, {**config, "precision": "bf16"}, tmp_path, 10, 5)
