"""Bad settings stop with one clear message (naming the value and the choices) before work.

Faults of the run folder, data files and training are in test_reliability.py.
"""

from __future__ import annotations

import re

import pytest
from conftest import TINY, run_cli

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
    ("dataset.kernel_size=[11,5]", "dataset.kernel_size=[11, 5] is not valid: it has 2 entries"),
    ("dataset.stride=[1,1,1,1]", "dataset.stride=[1, 1, 1, 1] is not valid: it has 4 entries"),
    ("dataset.nb_filters=[]", "dataset.nb_filters=[] is not valid: give one entry per hidden"),
    ("dataset.kernel_size=[25,5,5]", "kernel_size=25 is larger than its input of length 20"),
    ("dataset.kernel_size=[11,5,9]", "kernel_size=9 is larger than its input of length 6"),
    ("fano.bin_dt=500", "fano.bin_dt=500 is not valid"),
    ("wandb.mode=cloud", "wandb.mode='cloud' is not valid; choose one of: offline, online"),
    ("device=tpu", "device='tpu' is not valid; choose one of: cpu, cuda"),
    ("precision=fp16", "precision='fp16' is not valid; choose one of: float32, bf16"),
    ("device=cpu:x", "device='cpu:x' is not valid; choose one of: cpu, cuda, cuda:<index>"),
    ("device=cuda:x", "device='cuda:x' is not valid"),
    ("tau_mem=0.01", "tau_mem=0.01 is not valid: it must differ from tau_syn"),
    ("fano.sample_index=-1", "fano.sample_index=-1 is not valid; it must be >= 0"),
    ("p0=1.5", "p0=1.5 is not valid; it must lie in (0, 1]"),
    ("alpha=2", "alpha=2 is not valid; it must lie in [0, 1]"),
    ("fano.repeats=1", "fano.repeats=1 is not valid; it must be >= 2"),
    # wrong types: one line naming setting and value, never a comparison's TypeError
    ("regularizer.upper_l2.strength=abc", "regularizer.upper_l2.strength='abc' is not valid; it"),
    ("fano.sample_index=abc", "fano.sample_index='abc' is not valid; it must be an integer"),
    ("seed=abc", "seed='abc' is not valid; it must be an integer"),
    ("batch_size=1.5", "batch_size=1.5 is not valid; it must be an integer"),
    ("nb_epochs=true", "nb_epochs=True is not valid; it must be an integer"),
    ("tau_mem=abc", "tau_mem='abc' is not valid; it must be a finite number"),
    ("tau_mem=nan", "tau_mem=nan is not valid; it must be a finite number"),
    ("beta=inf", "beta=inf is not valid; it must be a finite number"),
    ("sigm=1", "sigm=1 is not valid; it must be true or false"),
    ("threads=abc", "threads='abc' is not valid; it must be an integer or null"),
    ("tau_readout=abc", "tau_readout='abc' is not valid; it must be a finite number or null"),
    ("wandb.entity=5", "wandb.entity=5 is not valid; it must be a string or null"),
    ("device=3", "device=3 is not valid; it must be a string"),
    ("dataset.split=abc", "dataset.split='abc' is not valid; it must be a list"),
    ("dataset.nb_filters=5", "dataset.nb_filters=5 is not valid; it must be a list"),
    ("dataset.split=[0.8,0.1,abc]", "dataset.split=[0.8, 0.1, 'abc'] is not valid"),
    ("regularizer.lower_l1.dims=abc", "regularizer.lower_l1.dims='abc' is not valid; it must be"),
    ("regularizer.upper_l2.strength=-1", "regularizer.upper_l2.strength=-1 is not valid"),
    # annealing: checked for every epoch before training, not when training gets there
    (
        "anneal=true anneal_step=-5.0 anneal_interval=10 nb_epochs=30",
        "anneal_step=-5.0 is not valid: beta would be 0 in epoch 11 of nb_epochs=30",
    ),
    ("anneal=true anneal_step=-1.0 nb_epochs=200", "beta would be 0 in epoch 91 of nb_epochs=200"),
    ("anneal=true anneal_interval=0", "anneal_interval=0 is not valid"),
    ("anneal=true anneal_start=-1", "anneal_start=-1 is not valid; it must be >= 0"),
]
CASES += [
    # settings that are not settings (Hydra's `+`/`++` add them; they would be ignored)
    ("+foo=1", "foo=1 is not a setting of this experiment"),
    ("++dataset.nb_sample=3", "dataset.nb_sample=3 is not a setting of this experiment; did you"),
    ("regularizer.upper_l2.dims=[5]", "regularizer.upper_l2.dims=[5] is not valid; give dims"),
    ("threads=100000", "threads=100000 is not valid: this process may run on"),
]
SHD_CASES = [
    ("dataset.valid_fraction=abc", "dataset.valid_fraction='abc' is not valid; it must be a"),
    ("dataset.valid_fraction=1.0", "dataset.valid_fraction=1.0 is not valid; it must lie in"),
    ("dataset.max_samples=abc", "dataset.max_samples='abc' is not valid; it must be an integer"),
    ("dataset.allow_silent_samples=maybe", "dataset.allow_silent_samples='maybe' is not valid"),
    ("dataset.datadir=5", "dataset.datadir=5 is not valid; it must be a string or null"),
]


@pytest.mark.parametrize(
    "override,message", CASES + [("dataset=shd " + o, m) for o, m in SHD_CASES]
)
def test_validate_names_value_and_choices(compose, override, message):
    from convsnn.settings import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(*override.split()))
    assert message in str(err.value)
    assert re.match(r"[\w.\[\]]+=\S", str(err.value)), "starts with <setting>=<value>"


def test_annealing_that_keeps_beta_positive_is_accepted(compose):
    from convsnn.model import beta_at
    from convsnn.settings import validate

    cfg = compose("anneal=true", "anneal_step=-1.0", "nb_epochs=90")  # beta 10 -> 1 at epoch 90
    validate(cfg)
    assert beta_at(cfg, 89) == 1.0


def test_every_setting_of_every_config_has_a_type(compose):
    from omegaconf import OmegaConf

    from convsnn.settings import _leaves, _type_of

    untyped = set()
    for overrides in ([], ["dataset=shd"], ["regularizer=lowerBound"]):
        cfg = compose(*overrides)
        for key, _ in _leaves(OmegaConf.to_container(cfg, resolve=True)):
            if _type_of(key) is None:
                untyped.add(key)
    assert not untyped, f"settings without an entry in convsnn.settings.TYPES: {sorted(untyped)}"


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


def test_fano_sample_beyond_the_test_set(compose):
    from convsnn.data import load_data

    with pytest.raises(ConfigError, match="^fano.sample_index=500 is not valid; the test set has"):
        load_data(compose(*TINY, "fano.sample_index=500"))


def test_missing_shd_files(compose, tmp_path):
    from convsnn.data import shd_paths

    with pytest.raises(FileNotFoundError, match="lacks shd_train.h5, shd_test.h5"):
        shd_paths(compose("dataset=shd", f"dataset.datadir={tmp_path}"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("method=foo", "error: method=foo is not valid; choose one of: exponentialstochastic"),
        ("dataset=foo", "error: dataset=foo is not valid; choose one of: randman, shd\n"),
    ],
)
def test_cli_unknown_group_option_lists_choices(tmp_path, override, message):
    proc = run_cli(tmp_path / "run", override)
    assert proc.returncode == 1 and proc.stderr.startswith(message)
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_cli_bad_values_stop_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, "dataset.kernel_size=[11,5,9]", "wandb.mode=disabled")
    assert proc.returncode != 0
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: dataset.kernel_size[2]=9 is not valid for hidden layer 2")
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()
    proc = run_cli(run_dir, "dataset=shd", f"dataset.datadir={tmp_path}", "wandb.mode=disabled")
    assert proc.returncode == 1 and "SHD not found" in proc.stderr
    assert proc.stderr.startswith(f"error: dataset.datadir='{tmp_path}' lacks shd_train.h5")
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()


def test_a_checkpoint_written_before_a_setting_existed_still_resumes():
    from convsnn.experiment import ADDED_KEYS, RESUMABLE_KEYS
    from sgtheory.runfolder import changed_settings

    config = {"seed": 1, "precision": "float32", "threads": 2, "connection_delay": False}
    older = {"seed": 1, "threads": 1}  # no `precision` nor `connection_delay` yet
    assert changed_settings(older, config, RESUMABLE_KEYS, ADDED_KEYS) == []
    assert ADDED_KEYS["precision"] == "float32"
    changed = changed_settings(older, {**config, "precision": "bf16"}, RESUMABLE_KEYS, ADDED_KEYS)
    assert changed == [("precision", "float32", "bf16")]
    shd_old = {"dataset": {"name": "shd"}}  # before allow_silent_samples existed
    shd_new = {"dataset": {"name": "shd", "allow_silent_samples": False}}
    assert changed_settings(shd_old, shd_new, RESUMABLE_KEYS, ADDED_KEYS) == []
