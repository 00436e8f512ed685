"""`collect_sweep` on hand-made sweep folders: failed, running, missing, corrupt, mixed, empty.

The Experiments (what to read from each results.json) are defined by the experiments' own
collect.py scripts, loaded here from their files."""

from __future__ import annotations

import csv
import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

import sgruns.sweeps as sweeps
from sgruns.sweeps import CollectError, collect_sweep, main, n_jobs_for, stats

from .helpers import ROOT, load_collect_script, parse_summary

CLS = load_collect_script(ROOT / "Classification").EXPERIMENT
STM = load_collect_script(ROOT / "Spike_train_matching").EXPERIMENT


def _class_results(acc: float, status: str = "completed", lr: float = 0.01) -> dict:
    entry = {
        "method": "x",
        "test_loss": 1.0,
        "test_acc": acc,
        "test_rates": [3.0, 4.0],
        "same_rates": [3.0, 4.0],
        "fano": [0.5, 0.25],
    }
    return {
        "status": status,
        "config": {"seed": 1, "method": {"name": "superspike", "lr": lr}},
        "history": {"train_acc": [0.1, acc], "valid_acc": [0.2, acc]},
        "test": entry,
        "other": {**entry, "method": "stochasticsuperspike", "test_acc": acc / 2},
        "run_time_s": 2.0,
    }


def _run(
    root: Path,
    name: str,
    seed: int,
    results: dict | str | None,
    extra: tuple[str, ...] = (),
    method: str = "superspike",
    lr: float = 0.01,
) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    overrides = [f"seed={seed}", f"method={method}", *extra]
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nthreads: {seed}\nmethod:\n  name: {method}\n  lr: {lr}\n"
    )
    if isinstance(results, dict):
        (run / "results.json").write_text(json.dumps(results))
    elif isinstance(results, str):
        (run / "results.json").write_text(results)
    return run


def test_means_counts_and_problems_are_reported(tmp_path, capsys):
    accs = [0.5, 0.75, 0.875]
    for seed, acc in enumerate(accs, start=1):
        _run(tmp_path, f"ok{seed}", seed, _class_results(acc))
    _run(tmp_path, "failed", 4, {**_class_results(0.1, "failed"), "error": "NonFiniteLoss: nan"})
    running = _run(tmp_path, "running", 5, _class_results(0.1, "running"))
    _run(tmp_path, "missing", 6, None)
    _run(tmp_path, "corrupt", 7, '{"status": "compl')
    _run(tmp_path, "killed", 8, _class_results(0.1, "running"))  # says running, lock free
    with open(running / ".lock", "w") as lock:  # a live run holds its folder's lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        code = main(CLS, [str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "8 runs in 1 groups, 3 completed" in out
    for word in ("FAILED", "RUNNING", "MISSING", "CORRUPT", "NonFiniteLoss"):
        assert word in out
    rows = {
        r["run_dir"].split("/")[-1]: r
        for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))
    }
    assert {k: r["status"] for k, r in rows.items()} == {
        "ok1": "completed",
        "ok2": "completed",
        "ok3": "completed",
        "failed": "failed",
        "running": "running",
        "killed": "interrupted",
        "missing": "missing",
        "corrupt": "corrupt",
    }
    assert "unreadable" in rows["corrupt"]["error"]
    table = parse_summary(tmp_path / "out" / "summary.md")["superspike"]
    assert table["test_acc"][2] == 3
    np.testing.assert_allclose(
        table["test_acc"][:2], [np.mean(accs), np.std(accs, ddof=1)], rtol=1e-5
    )
    np.testing.assert_allclose(table["fano_l2"][:2], [0.25, 0.0], atol=1e-12)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Problems" in md and "MISSING" in md and "CORRUPT" in md
    assert (tmp_path / "out" / "accuracy.png").exists() and (tmp_path / "out" / "fano.png").exists()
    assert main(CLS, [str(tmp_path), "--strict", "--no-figures"]) == 1


def test_groups_split_by_overrides_and_mixed_configs_flagged(tmp_path):
    _run(tmp_path, "a1", 1, _class_results(0.5))
    _run(
        tmp_path, "a2", 2, _class_results(0.6, lr=0.02), lr=0.02
    )  # same overrides, different config
    _run(tmp_path, "b1", 1, _class_results(0.7), extra=("method.lr=0.1",))
    res = collect_sweep(tmp_path, CLS, figures=False)
    labels = {g.label: g for g in res["groups"]}
    assert set(labels) == {"superspike", "superspike [method.lr=0.1]"}
    assert labels["superspike"].mixed == ["method.lr"]  # threads differ too but do not count
    assert any(p.startswith("MIXED group superspike") for p in res["problems"])
    assert "differ in method.lr" in (tmp_path / "summary.md").read_text()


def test_not_started_jobs_from_multirun_yaml(tmp_path):
    _run(tmp_path, "s1", 1, _class_results(0.5))
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - seed=1,2\n    - method=superspike\n"
    )
    res = collect_sweep(tmp_path, CLS, figures=False)
    status = sorted((r.status, r.seed) for r in res["runs"])
    assert status == [("completed", 1), ("not started", 2)]
    assert res["groups"][0].label == "superspike"  # borrowed from its completed seed


def test_results_without_hydra_and_stm_status_json(tmp_path):
    run = tmp_path / "plain"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_class_results(0.5)))
    stm = tmp_path / "stm"
    (stm / ".hydra").mkdir(parents=True)
    (stm / "status.json").write_text(
        json.dumps({"status": "failed", "epoch": 3, "nb_epochs": 9, "error": "boom"})
    )
    res = collect_sweep(tmp_path, STM, figures=False)
    by_name = {r.path.name: r for r in res["runs"]}
    assert by_name["stm"].status == "failed" and "boom" in by_name["stm"].error
    # a Classification results.json is not a Spike_train_matching one: reported, not skipped
    assert (
        by_name["plain"].status == "corrupt" and "lacks expected fields" in by_name["plain"].error
    )


def test_clear_errors_for_empty_or_missing_folder(tmp_path, capsys):
    with pytest.raises(CollectError, match="no runs under"):
        collect_sweep(tmp_path, CLS)
    with pytest.raises(CollectError, match="does not exist"):
        collect_sweep(tmp_path / "nope", CLS)
    assert main(STM, [str(tmp_path)]) == 2
    assert "error: no runs under" in capsys.readouterr().err


def test_n_jobs_and_stats():
    assert n_jobs_for(1, cores=2) == 2
    assert n_jobs_for(2, cores=2) == 1
    assert n_jobs_for(3, cores=8) == 2
    assert n_jobs_for(4, cores=2) == 1
    with pytest.raises(ValueError, match="threads=1"):
        n_jobs_for(None, cores=2)
    assert sweeps.cpus_for(None, 4) == 4 and sweeps.cpus_for(2, 4) == 2
    m, s, n = stats([1.0, None, 3.0, float("nan")])
    assert (m, n) == (2.0, 2) and s == pytest.approx(np.sqrt(2))
    assert np.isnan(stats([1.0])[1]) and stats([])[2] == 0


def test_collect_needs_an_experiment_object(tmp_path):
    _run(tmp_path, "a1", 1, _class_results(0.5))
    with pytest.raises(TypeError, match="must be an Experiment"):
        collect_sweep(tmp_path, "classification")


def test_experiment_helpers_live_in_the_collect_scripts():
    """The library holds no experiment-specific code; the scripts' metrics read their results."""
    assert not hasattr(sweeps, "EXPERIMENTS") and not hasattr(sweeps, "_class_metrics")
    cls = load_collect_script(ROOT / "Classification")
    metrics = cls._class_metrics(_class_results(0.5))
    assert metrics["test_acc"] == 0.5 and metrics["other_test_acc"] == 0.25
    assert metrics["fano_l2"] == 0.25 and metrics["best_valid_acc"] == 0.5
    assert cls._class_hyper({"method": {"lr": 0.3}}) == {"lr": 0.3}
    stm = load_collect_script(ROOT / "Spike_train_matching")
    assert stm._stm_hyper({}) == {"lr_h": None, "lr_o": None}
    with pytest.raises(KeyError, match="losses.final"):
        stm._stm_metrics({})


def test_launcher_presets_name_the_sweep_callback():
    """Every preset's callback target resolves to the installed package's SweepCallback."""
    yaml = pytest.importorskip("yaml")
    from hydra.utils import get_class

    presets = [
        p
        for name in ("joblib_local", "slurm", "slurm_local")
        for p in ROOT.glob(f"*/experiments/*/hydra/launcher/{name}.yaml")
    ]
    assert len(presets) == 6
    for path in presets:
        target = yaml.safe_load(path.read_text())["hydra"]["callbacks"]["sgt_sweep"]["_target_"]
        assert get_class(target) is sweeps.SweepCallback, path


def test_no_package_attribute_shadows_a_submodule():
    """`sgruns.sweeps.<name>` is the submodule for every submodule name (no function hides one)."""
    import importlib
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(sweeps.__path__)]
    assert set(names) == {"figures", "folders", "launch", "summary"}
    for name in names:
        assert getattr(sweeps, name) is importlib.import_module(f"sgruns.sweeps.{name}"), name


def test_expand_overrides_is_the_product_of_the_sweeps():
    """Hand-worked: 2 seeds x range(0,3) x 1 fixed value = 6 jobs; a repeated key keeps its last
    value in its first place, as Hydra's basic sweeper does."""
    jobs = sweeps.expand_overrides(["seed=1,2", "x=range(0,3)", "lr=0.1", "seed=7,8"])
    assert len(jobs) == 6
    assert {tuple(j) for j in jobs} == {
        (f"seed={s}", f"x={x}", "lr=0.1") for s in (7, 8) for x in (0, 1, 2)
    }
    assert sweeps.expand_overrides(["method=choice(a,b)"]) == [["method=a"], ["method=b"]]
    with pytest.raises(ValueError, match="cannot expand"):
        sweeps.expand_overrides(["lr=interval(0,1)"])


def test_sweep_callback_records_a_failed_job(tmp_path):
    """The callback writes running, then failed with the job's exception, to job_status.json."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    callback = sweeps.SweepCallback()
    callback.on_job_start(config)
    assert json.loads((tmp_path / "job_status.json").read_text())["status"] == "running"
    job = JobReturn(status=JobStatus.FAILED)
    job.return_value = ValueError("method.lr=-1: must be > 0")
    callback.on_job_end(config, job)
    record = json.loads((tmp_path / "job_status.json").read_text())
    assert record["status"] == "failed" and record["wall_s"] >= 0
    assert record["error"] == "ValueError: method.lr=-1: must be > 0"
