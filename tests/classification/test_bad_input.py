"""Bad settings stop with one clear message (naming the value and the choices) before work.

Faults of the run folder, data files and training are in test_reliability.py.
"""

from __future__ import annotations

import re

import pytest
from conftest import CONFIG_DIR, TINY, run_cli

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
    ("tau_mem=nan", "tau_mem=nan is not valid; it must be a finite number"),
    ("beta=inf", "beta=inf is not valid; it must be a finite number"),
    ("dataset.nu=-inf", "dataset.nu=-inf is not valid; it must be a finite number"),
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
    ("regularizer.upper_l2.dims=[5]", "regularizer.upper_l2.dims=[5] is not valid; give dims"),
    ("threads=100000", "threads=100000 is not valid: this process may run on"),
]
CASES += [
    # derived quantities named by the settings that give them
    ("dataset.nu=1e-300", "dataset.nu=1e-300, method.target_sigma_u=1.0 (with tau_mem=0.02"),
    ("method.target_sigma_u=1e300", "method.target_sigma_u=1e+300, dataset.nu=5.0 (with"),
    ("dataset.nu=1e300", "dataset.nu=1e+300, method.target_sigma_u=1.0 (with"),
    ("dataset.dt=1e-300", "dataset.dt=1e-300 is not valid with tau_mem=0.02: the decay per step"),
    ("dataset.dt=1e300", "dataset.dt=1e+300 is not valid with tau_mem=0.02 and tau_syn=0.01:"),
    ("tau_syn=1e300", "tau_syn=1e+300 is not valid with dataset.dt=0.002: the decay per step"),
    ("tau_mem=1e300", "tau_mem=1e+300 is not valid with dataset.dt=0.002: the decay per step"),
    ("tau_readout=1e300", "tau_readout=1e+300 is not valid with dataset.dt=0.002"),
    # seeds: an integer from 0 (both experiments); threads: 1 to the usable cores
    ("seed=-1", "seed=-1 is not valid; it must be an integer from 0 to 2**63 - 1"),
    ("dataset.seed=-1", "dataset.seed=-1 is not valid; it must be an integer from 0"),
    ("seed=9223372036854775808", "seed=9223372036854775808 is not valid; it must be an integer"),
    ("threads=0", "threads=0 is not valid; it must be a positive integer (at most"),
    ("threads=-2", "threads=-2 is not valid; it must be a positive integer"),
    # degenerate tasks: stop before training
    ("dataset.nb_classes=1", "dataset.nb_classes=1 is not valid; a classification needs at least"),
    ("dataset.nb_steps=1 fano.bin_dt=1", "dataset.nb_steps=1 is not valid: with 3 hidden layers"),
    ("dataset.nb_steps=11 fano.bin_dt=1", "the readout sees no input before step 12; use at"),
    (
        "connection_delay=false dataset.nb_steps=8 fano.bin_dt=1",
        "dataset.nb_steps=8 is not valid: with 3 hidden layers (connection_delay=false) the "
        "readout sees no input before step 9",
    ),
    # settings that failed only later, with a traceback
    ("regularizer.upper_l2.dims=[-1,-1]", "regularizer.upper_l2.dims=[-1, -1] is not valid"),
    ("regularizer.lower_l1.dims=[-2,-1,-2]", "regularizer.lower_l1.dims=[-2, -1, -2] is not"),
    ("dataset.name=shd", "dataset.name=shd does not match the dataset's settings (those of "),
    ("wandb.project=a/b", "wandb.project=a/b is not valid; give 1 to 128 characters without"),
    ("wandb.project=a:b", "wandb.project=a:b is not valid"),
    ("plotting.dpi=20000", "plotting.dpi=20000 is not valid; it must be at most 1000"),
    ("plotting.nb_samples=100000", "plotting.nb_samples=100000 is not valid; the snapshot"),
    # memory estimated before anything is allocated
    ("dataset.nb_units=1000000", "the run needs about 1.15e+05 GiB of host memory (data"),
    ("dataset.nb_filters=[100000,64,128]", "dataset.nb_filters=[100000, 64, 128], batch_size"),
    ("dataset.padding=[100000,0,0]", "dataset.padding=[100000, 0, 0], batch_size=400, dataset."),
    ("fano.repeats=100000000", "fano.repeats=100000000, dataset.nb_filters=[32, 64, 128], data"),
    (
        "dataset.recurrent_kernel=[3,3,3] alpha=0",
        "alpha=0 is not valid with recurrent layers: their feedforward weights",
    ),
    ("method.lr=1e300", "method.lr=1e+300 is not valid; it must be at most 3.4e+38 (float32)"),
    ("dataset.nb_samples=100000000", "dataset.nb_samples=100000000, dataset.nb_classes=15"),
    # the annealing schedule in closed form, however many epochs
    (
        "anneal=true anneal_step=-0.001 nb_epochs=1000000000",
        "anneal_step=-0.001 is not valid: beta would be",
    ),
    ("anneal=true anneal_step=1e308 anneal_interval=1 nb_epochs=9", "beta would be inf in epoch 2"),
]
SHD_CASES = [
    ("dataset.valid_fraction=1.0", "dataset.valid_fraction=1.0 is not valid; it must lie in"),
    ("dataset.name=randman", "dataset.name=randman does not match the dataset's settings"),
    ("dataset.seed=-3", "dataset.seed=-3 is not valid; it must be an integer from 0"),
    ("dataset.duration=1e300", "dataset.duration=1e+300 is not valid with dataset.dt=0.002"),
    ("dataset.max_samples=0", "dataset.max_samples=0 is not valid; it must be a positive integer"),
]
# wrong types and unknown names: refused by the structured config (convsnn.schema) while the
# command line is composed, one line naming the setting, the value typed and what it allows
TYPE_CASES = [
    ("regularizer.upper_l2.strength=abc", "regularizer.upper_l2.strength=abc is not valid; it"),
    ("fano.sample_index=abc", "fano.sample_index=abc is not valid; it must be an integer"),
    ("seed=abc", "seed=abc is not valid; it must be an integer"),
    ("batch_size=1.5", "batch_size=1.5 is not valid; it must be an integer"),
    ("seed=1.0", "seed=1.0 is not valid; it must be an integer"),
    ("nb_epochs=true", "nb_epochs=true is not valid; it must be an integer"),
    ("tau_mem=abc", "tau_mem=abc is not valid; it must be a number"),
    ("sigm=1", "sigm=1 is not valid; it must be true or false"),
    ("threads=abc", "threads=abc is not valid; it must be an integer or null"),
    ("tau_readout=abc", "tau_readout=abc is not valid; it must be a number or null"),
    ("wandb.entity=5", "wandb.entity=5 is not valid; it must be a string or null"),
    ("device=3", "device=3 is not valid; it must be a string"),
    ("dataset.split=abc", "dataset.split=abc is not valid; it must be a list of numbers"),
    ("dataset.nb_filters=5", "dataset.nb_filters=5 is not valid; it must be a list of integers"),
    ("dataset.split=[0.8,0.1,abc]", "dataset.split=[0.8,0.1,abc] is not valid; it must be a list"),
    ("regularizer.lower_l1.dims=abc", "regularizer.lower_l1.dims=abc is not valid; it must be a"),
    ("tau_mem=[1,2]", "tau_mem=[1,2] is not valid; it takes a single value (default 0.02), not a"),
    # settings that are not settings (Hydra's `+`/`++` add them; they would be ignored)
    ("+foo=1", "foo=1 is not a setting of this experiment"),
    ("++dataset.nb_sample=3", "dataset.nb_sample=3 is not a setting of this experiment; did you"),
    ("dataset.datadir=/x", "dataset.datadir=/x is not a setting of this experiment"),  # Randman
    ("-m seed=1,abc", "seed=abc is not valid (a value of the sweep seed=1,abc); it must be an"),
    ("dataset=shd dataset.valid_fraction=abc", "dataset.valid_fraction=abc is not valid; it must"),
    ("dataset=shd dataset.max_samples=abc", "dataset.max_samples=abc is not valid; it must be an"),
    ("dataset=shd dataset.allow_silent_samples=maybe", "dataset.allow_silent_samples=maybe is"),
    ("dataset=shd dataset.datadir=5", "dataset.datadir=5 is not valid; it must be a string or"),
    ("dataset=shd dataset.step_frac=0.5", "dataset.step_frac=0.5 is not a setting of this exp"),
]


@pytest.mark.parametrize(
    "override,message", CASES + [("dataset=shd " + o, m) for o, m in SHD_CASES]
)
def test_check_names_value_and_choices(compose, override, message):
    from convsnn.checks import check

    with pytest.raises(ConfigError) as err:
        check(compose(*override.split()))
    assert message in str(err.value)
    assert re.match(r"[\w.\[\]]+=\S", str(err.value)), "starts with <setting>=<value>"


@pytest.mark.parametrize("override,message", TYPE_CASES)
def test_the_schema_refuses_wrong_types_and_names_while_composing(refused, override, message):
    text = refused(*override.split())
    assert text.startswith(message), text
    assert "\n" not in text


def test_annealing_that_keeps_beta_positive_is_accepted(compose):
    from convsnn.checks import check
    from convsnn.model import beta_at

    cfg = compose("anneal=true", "anneal_step=-1.0", "nb_epochs=90")  # beta 10 -> 1 at epoch 90
    check(cfg)
    assert beta_at(cfg, 89) == 1.0


def test_every_setting_of_every_config_has_a_type(compose):
    """Each YAML file points at its schema node: every setting it holds is typed there."""
    from omegaconf import OmegaConf

    from convsnn.checks import _leaves
    from sgruns.cli import allowed, unknown_settings

    untyped = set()
    for overrides in ([], ["dataset=shd"], ["regularizer=lowerBound"]):
        cfg = compose(*overrides)
        assert unknown_settings(cfg) == []
        assert OmegaConf.get_type(cfg.dataset).__name__ in ("RandmanSchema", "SHDSchema")
        for key, _ in _leaves(cfg):
            key = key.split("[")[0]
            if allowed(cfg, key) is None:
                untyped.add(key)
    assert not untyped, f"settings without a type in convsnn.schema: {sorted(untyped)}"


def test_defaults_and_every_method_and_dataset_validate(compose):
    from convsnn.checks import check
    from convsnn.model import network_shape

    check(compose())
    shape = network_shape(compose())
    assert shape.lengths == (20, 10, 6, 2) and shape.nb_readout_inputs == 256
    for method in (
        "superspike",
        "stochasticsuperspike",
        "exponentialstochasticsuperspike",
        "realstochasticsuperspike",
        "multilayerspiker",
        "scaled_sigmoid",
    ):
        check(compose(f"method={method}"))
    check(compose("dataset=shd"))
    assert network_shape(compose("dataset=shd")).lengths == (700, 68, 21, 5)
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
    from sgruns.folder import changed_settings

    config = {"seed": 1, "precision": "float32", "threads": 2, "connection_delay": False}
    older = {"seed": 1, "threads": 1}  # no `precision` nor `connection_delay` yet
    assert changed_settings(older, config, RESUMABLE_KEYS, ADDED_KEYS) == []
    assert ADDED_KEYS["precision"] == "float32"
    changed = changed_settings(older, {**config, "precision": "bf16"}, RESUMABLE_KEYS, ADDED_KEYS)
    assert changed == [("precision", "float32", "bf16")]
    shd_old = {"dataset": {"name": "shd"}}  # before allow_silent_samples existed
    shd_new = {"dataset": {"name": "shd", "allow_silent_samples": False}}
    assert changed_settings(shd_old, shd_new, RESUMABLE_KEYS, ADDED_KEYS) == []


def test_seed_zero_and_a_long_annealing_schedule_are_accepted_at_once(compose):
    import time

    from convsnn.checks import check

    check(compose("seed=0", "dataset.seed=0"))
    check(compose("tau_syn=1e-6"))  # a synaptic decay of 0 per step: the model takes it
    check(compose("dataset.recurrent_kernel=[3,3,3]", "alpha=1"))  # no recurrent share
    start = time.perf_counter()
    check(compose("anneal=true", "nb_epochs=1000000000"))  # closed form: no loop
    assert time.perf_counter() - start < 2.0


def test_the_first_failing_annealed_epoch_is_found_exactly(compose):
    from convsnn.checks import check
    from convsnn.model import beta_at

    for step in ("-0.7", "-0.1", "-3.3333333333333335", "7e307"):
        overrides = ["anneal=true", "anneal_start=7", "anneal_interval=3", f"anneal_step={step}"]
        cfg = compose(*overrides, "nb_epochs=1000")
        beta = [beta_at(cfg, e) for e in range(1000)]
        first = next(e for e in range(1000) if not 0 < beta[e] < float("inf"))  # brute force
        with pytest.raises(ConfigError, match=f"in epoch {first + 1} of nb_epochs=1000"):
            check(cfg)
        check(compose(*overrides, f"nb_epochs={first}"))  # one epoch fewer: fine


@pytest.mark.parametrize("delay,layers", [(True, 3), (False, 2)])
def test_min_steps_is_where_the_readout_first_depends_on_the_input(compose, delay, layers):
    """At min_steps steps the readout's output depends on the input (a nonzero surrogate
    gradient), at one step fewer it cannot (every path is longer than the sample)."""
    import torch

    from convsnn.model import build_network, min_steps, network_shape, spike_fns
    from convsnn.seeds import generator, layer_generators

    lists = {"nb_filters": [2] * layers, "kernel_size": [3] * layers, "padding": [1] * layers}
    base = [f"dataset.{k}={v}" for k, v in lists.items()]
    base += [f"dataset.stride={[1] * layers}", f"dataset.recurrent_kernel={[0] * layers}"]
    base += [f"connection_delay={delay}", "fano.bin_dt=1"]
    need = min_steps(compose(*base))
    for steps, depends in ((need, True), (need - 1, False)):
        cfg = compose(*base, f"dataset.nb_steps={steps}")
        fns = spike_fns(cfg, "superspike", layer_generators(1, "train_spikes", layers))
        net = build_network(cfg, network_shape(cfg), fns, generator(1, "init"))
        x = torch.ones(1, steps, 1, 20, requires_grad=True)
        net(x)[0].sum().backward()
        assert bool(x.grad.abs().sum() > 0) == depends


def test_the_data_estimate_is_the_size_of_the_generated_data(compose):
    from convsnn.data import load_data
    from convsnn.memory import memory_needed
    from convsnn.model import network_shape

    cfg = compose(*TINY)
    data = load_data(cfg)
    held = sum(s.x.numel() * s.x.element_size() for s in (data.train, data.valid, data.test))
    assert memory_needed(cfg, network_shape(cfg))["data"] == held


def test_a_run_that_does_not_fit_is_refused_with_the_estimate(compose):
    from convsnn.memory import check_memory
    from convsnn.model import network_shape

    cfg = compose()
    need = check_memory(cfg, network_shape(cfg), available=2**40)  # fits in 1 TiB
    total = sum(need.values())
    with pytest.raises(ConfigError, match=r"needs about 0\.\d+ GiB of host memory"):
        check_memory(cfg, network_shape(cfg), available=total - 1)


def test_initial_weight_scales_are_those_of_the_built_network(compose):
    """init_stds (checked before anything is built) gives the std the weights are drawn with."""
    import torch

    from convsnn.model import build_network, init_stds, network_shape, spike_fns
    from convsnn.seeds import generator, layer_generators

    cfg = compose("dataset=shd")  # recurrent layers: both kinds of weight
    fns = spike_fns(cfg, "superspike", layer_generators(1, "train_spikes", 3))
    net = build_network(cfg, network_shape(cfg), fns, generator(1, "init"))
    weights = dict(net.named_parameters())
    for name, std in init_stds(cfg):
        w = weights[name].detach().double().flatten()
        n = w.numel()
        # sample std of n normal draws: relative standard error 1 / sqrt(2 n); 5 sigma
        assert abs(float(w.std()) / std - 1) < 5 / (2 * n) ** 0.5, name
    assert torch.isfinite(torch.tensor([s for _, s in init_stds(cfg)])).all()


@pytest.mark.parametrize(
    "file,line,typed,message",
    [
        ("config.yaml", "seed: 1", "seed: abc", "seed=abc (in config.yaml) is not valid; it must "),
        ("plotting/default.yaml", "dpi: 110", "dpi: [1]", "plotting.dpi=[1] (in plotting/default"),
        (
            "config.yaml",
            "progress: true",
            "progress: true\nfoo: 1",
            "foo=1 (in config.yaml) is not a",
        ),
    ],
)
def test_a_config_file_with_a_wrong_type_or_an_unknown_key_is_refused(
    tmp_path, file, line, typed, message
):
    """The schema types the YAML files too: a value edited into a file is refused as one typed
    on the command line, naming the file."""
    import shutil

    from convsnn.schema import register
    from sgruns.cli import prepare

    register()
    folder = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, folder)
    path = folder / file
    assert line in path.read_text()
    path.write_text(path.read_text().replace(line, typed, 1))
    with pytest.raises(ConfigError) as err:
        prepare([f"hydra.run.dir={tmp_path / 'run'}"], folder)
    assert str(err.value).startswith(message), str(err.value)
    assert not (tmp_path / "run").exists()
