"""The run folder: one holder, never two runs mixed, results matching the checkpoint."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sgruns import folder as runfolder
from sgruns.cli import MARKER, is_marked, mark
from sgruns.errors import CheckpointError, RunFolderError
from sgruns.folder import RunFolder, changed_settings, exit_on_error, read_status
from sgtheory.errors import ConfigError, NonFiniteError, first_nonfinite

SETTINGS = {"seed": 1, "lr": 0.01, "wandb": {"mode": "disabled"}, "threads": 1}


def _results(path):
    return json.loads((path / "results.json").read_text())


def _ckpt(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)


def _saved_run(path, epochs=2, settings=SETTINGS):
    """A folder holding a run that saved `epochs` epochs and was then left (status running)."""
    with RunFolder(path) as folder:
        assert folder.resume(settings) is None
        folder.write_results({"epochs_done": 0})
        for epoch in range(1, epochs + 1):
            folder.save(
                {"epoch": epoch, "w": torch.full((2,), float(epoch))}, {"epochs_done": epoch}
            )


def test_second_holder_is_refused_with_folder_and_pid(tmp_path):
    with RunFolder(tmp_path):
        with pytest.raises(RunFolderError) as err:
            RunFolder(tmp_path).acquire()
    message = str(err.value)
    assert message.startswith(f"hydra.run.dir={tmp_path} is in use")
    assert f"process {os.getpid()}" in message
    RunFolder(tmp_path).acquire().release()  # free again once released


def test_a_killed_holder_frees_the_folder_and_its_run_reads_interrupted(tmp_path):
    code = (
        "import sys, time\n"
        "from sgruns.folder import RunFolder\n"
        "f = RunFolder(sys.argv[1]).acquire()\n"
        "f.resume({'seed': 1})\n"
        "f.write_results({'epochs_done': 0})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert read_status(tmp_path) == "running"
        with pytest.raises(RunFolderError, match=f"process {proc.pid}"):
            RunFolder(tmp_path).acquire()
    finally:
        proc.kill()  # SIGKILL: no chance to record anything
        proc.wait()
    assert _results(tmp_path)["status"] == "running"  # as the killed process left it
    assert read_status(tmp_path) == "interrupted"  # readers see that no one holds it
    with RunFolder(tmp_path):  # taken over
        assert _results(tmp_path)["status"] == "interrupted"


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_holder(tmp_path, monkeypatch):
    """`save` renames the checkpoint, then results.json; a process killed in between leaves
    the new checkpoint beside the old results.json. The next holder restores results.json
    from the checkpoint's copy, so the two agree again (and resuming continues from there)."""
    folder = RunFolder(tmp_path).acquire()
    folder.resume(SETTINGS)
    folder.save({"epoch": 1}, {"epochs_done": 1})
    assert _results(tmp_path)["checkpoint_id"] == _ckpt(tmp_path)["checkpoint_id"] == 1
    renames = []

    def killed_after_the_first(src, dst):
        if renames:
            raise KeyboardInterrupt  # stands for the SIGKILL: nothing after it runs
        renames.append(dst)
        os.rename(src, dst)

    monkeypatch.setattr(
        runfolder.atomic_write_many.__globals__["os"], "replace", killed_after_the_first
    )
    with pytest.raises(KeyboardInterrupt):
        folder.save({"epoch": 2}, {"epochs_done": 2})
    monkeypatch.undo()
    os.close(folder._lock_fd)  # the process is gone: its lock with it, nothing recorded
    for tmp in tmp_path.glob("*.tmp*"):
        tmp.unlink()
    assert _results(tmp_path)["epochs_done"] == 1 and _ckpt(tmp_path)["epoch"] == 2
    with RunFolder(tmp_path) as again:
        results = _results(tmp_path)
        assert results["status"] == "interrupted"
        assert results["epochs_done"] == 2 and results["checkpoint_id"] == 2
        assert again.resume(SETTINGS)["epoch"] == 2
        again.save({"epoch": 3}, {"epochs_done": 3})
        assert _results(tmp_path)["checkpoint_id"] == _ckpt(tmp_path)["checkpoint_id"] == 3


def test_resume_with_the_same_settings_and_refusal_of_changed_ones(tmp_path):
    _saved_run(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=2\n")  # Hydra's, for the new run
    with RunFolder(tmp_path) as folder:
        ckpt = folder.resume(
            {**SETTINGS, "threads": 4, "wandb": {"mode": "x"}}, ("threads", "wandb")
        )
        assert ckpt["epoch"] == 2 and torch.equal(ckpt["w"], torch.full((2,), 2.0))
    with RunFolder(tmp_path) as folder:
        with pytest.raises(ConfigError) as err:
            folder.resume({**SETTINGS, "seed": 2, "lr": 0.5}, ("threads",))
    message = str(err.value)
    assert message.startswith("lr=0.5 differs from the run in this folder (lr=0.01); seed=2")
    assert f"mv {tmp_path} {tmp_path}.old-" in message
    assert "resume=false" not in message and "delete" not in message
    assert _results(tmp_path) == {
        "epochs_done": 2,
        "status": "interrupted",
        "checkpoint_id": 2,
        "error": _results(tmp_path)["error"],
    }
    assert _ckpt(tmp_path)["epoch"] == 2  # the old run is untouched


def test_refusal_restores_the_old_runs_hydra_files(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    _saved_run(tmp_path)
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=2\n")  # Hydra, second command
    with RunFolder(tmp_path) as folder, pytest.raises(ConfigError):
        folder.resume({**SETTINGS, "seed": 2})
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"


def test_an_earlier_run_without_checkpoint_is_moved_aside(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mark(run, "test")
    (run / "results.json").write_text('{"status": "failed"}')
    (run / "data").mkdir()
    (run / "data" / "x_1.npy").write_bytes(b"old")
    (run / "main.log").write_text("log")
    with RunFolder(run) as folder:
        assert folder.resume(SETTINGS) is None
        aside = folder.moved_to
    assert aside.parent == tmp_path and aside.name.startswith("run.old-")
    assert sorted(p.name for p in run.iterdir()) == [".lock", MARKER, "main.log"]
    assert (aside / "data" / "x_1.npy").read_bytes() == b"old"
    assert is_marked(aside)  # a run folder of its own: it can be resumed or moved again
    assert (aside / "main.log").read_text() == "log" and (run / "main.log").read_text() == ""
    assert json.loads((aside / "results.json").read_text()) == {"status": "failed"}


def test_fresh_start_moves_a_finished_run_aside_with_its_hydra_files(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    _saved_run(run)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\nresume: false\n")
    with RunFolder(run) as folder:
        assert folder.resume(SETTINGS, fresh=True) is None
        aside = folder.moved_to
    assert not (run / "checkpoint.pt").exists() and not (run / "results.json").exists()
    assert _ckpt(aside)["epoch"] == 2 and _results(aside)["epochs_done"] == 2
    assert (aside / ".hydra" / "config.yaml").read_text() == "seed: 1\n"
    assert (run / ".hydra" / "config.yaml").read_text() == "seed: 1\nresume: false\n"


def test_a_full_disk_keeps_checkpoint_and_results_in_agreement(tmp_path, monkeypatch):
    _saved_run(tmp_path, epochs=1)
    real_save = torch.save

    def full(obj, fh, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(RunFolderError) as err:
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            folder.write_results({"epochs_done": 1})
            monkeypatch.setattr(torch, "save", full)
            folder.save({"epoch": 2}, {"epochs_done": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert str(err.value).startswith(f"hydra.run.dir={tmp_path}: cannot write checkpoint.pt")
    assert "No space left on device" in str(err.value)
    res = _results(tmp_path)
    assert res["status"] == "failed" and res["epochs_done"] == _ckpt(tmp_path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock",
        MARKER,
        "checkpoint.pt",
        "results.json",
    ]


def test_every_write_failing_leaves_the_last_pair(tmp_path, monkeypatch):
    _saved_run(tmp_path, epochs=1)
    before = (tmp_path / "results.json").read_text()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunFolderError, match="No space left"):
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            folder.write_results({"epochs_done": 1})
            monkeypatch.setattr(os, "fsync", no_space)
            folder.save({"epoch": 2}, {"epochs_done": 2})
    assert json.loads(before)["epochs_done"] == _ckpt(tmp_path)["epoch"] == 1
    assert _results(tmp_path)["epochs_done"] == 1


def test_failure_records_the_saved_state_and_interrupt_reads_interrupted(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            folder.write_results({"epochs_done": 0})
            folder.save({"epoch": 1}, {"epochs_done": 1})
            _ = 1 / 0
    res = _results(tmp_path)
    assert res == {
        "epochs_done": 1,
        "checkpoint_id": 1,
        "status": "failed",
        "error": "ZeroDivisionError: division by zero",
    }
    with pytest.raises(runfolder.Interrupted):
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            folder.write_results({"epochs_done": 1})
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert _results(tmp_path)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )


def test_a_refused_start_writes_nothing(tmp_path):
    _saved_run(tmp_path)
    RunFolder(tmp_path).acquire().release()  # marks the left-over run interrupted
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ConfigError):
        with RunFolder(tmp_path) as folder:
            folder.resume({**SETTINGS, "seed": 7})
    assert (tmp_path / "results.json").read_text() == before


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_keep_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        _saved_run(tmp_path, epochs=1)
    finally:
        os.umask(old)
    for name in ("results.json", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(RunFolderError, match=f"hydra.run.dir={afile / 'run'} is not writable"):
        RunFolder(afile / "run").acquire()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runfolder.tempfile, "mkstemp", denied)
    with pytest.raises(RunFolderError, match="is not writable \\(Permission denied\\)"):
        RunFolder(tmp_path / "ro").acquire()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint"])
def test_damaged_checkpoint_names_file_and_how_to_start_afresh(tmp_path, content):
    _saved_run(tmp_path, epochs=1)
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with RunFolder(tmp_path) as folder, pytest.raises(CheckpointError) as err:
        folder.resume(SETTINGS)
    message = str(err.value)
    assert message.startswith(f"checkpoint={tmp_path / 'checkpoint.pt'} cannot be read")
    assert f"mv {tmp_path} {tmp_path}.old" in message and "\n" not in message


def test_truncated_real_checkpoint(tmp_path):
    _saved_run(tmp_path, epochs=1)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with RunFolder(tmp_path) as folder, pytest.raises(CheckpointError, match="cannot be read"):
        folder.resume(SETTINGS)


def test_exit_on_error_prints_one_line_and_exits_1(capsys):
    with pytest.raises(SystemExit) as exit_:
        exit_on_error(ConfigError("seed='abc' is not valid;\n it must be an integer"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: seed='abc' is not valid; it must be an integer\n"
    with pytest.raises(ConfigError):
        exit_on_error(ConfigError("x=1 bad"), multirun=True)


def test_changed_settings_by_dotted_keys_with_ignore_and_defaults():
    old = {"a": 1, "w": {"mode": "offline"}, "n": {"x": 1, "y": 2}}
    new = {"a": 1, "w": {"mode": "disabled"}, "n": {"x": 1, "y": 3}, "p": "float32"}
    assert changed_settings(old, new, ("w",), {"p": "float32"}) == [("n.y", 2, 3)]
    assert changed_settings(old, new, ()) == [
        ("n.y", 2, 3),
        ("p", "<unset>", "float32"),
        ("w.mode", "offline", "disabled"),
    ]


def test_first_nonfinite_and_check_finite():
    good = [("w", torch.ones(3)), ("idx", torch.ones(2, dtype=torch.long)), ("g", None)]
    assert first_nonfinite(good) is None
    huge = torch.full((1000,), 3e38)  # finite, but a float32 sum would overflow to inf
    assert first_nonfinite([("huge", huge), ("neg", -huge)]) is None
    opposite = torch.tensor([float("inf"), -float("inf")])  # sums to NaN: still caught
    assert first_nonfinite([("w", torch.ones(2)), ("o", opposite)]) == "o"
    bad = [*good, ("w2", torch.tensor([1.0, float("nan")])), ("w3", torch.tensor([float("inf")]))]
    assert first_nonfinite(bad) == "w2"
    assert (
        first_nonfinite([("h", torch.tensor([1e30, -float("inf")], dtype=torch.bfloat16))]) == "h"
    )
    with pytest.raises(NonFiniteError, match="^method.lr=1e\\+30: lower it: w2 became NaN"):
        RunFolder.check_finite(bad, "in epoch 1", "method.lr=1e+30: lower it")


def test_save_refuses_reserved_keys_and_wandb_offline_in_the_folder(tmp_path):
    with RunFolder(tmp_path) as folder:
        folder.resume(SETTINGS)
        with pytest.raises(ValueError, match="config"):
            folder.save({"config": 1}, {})
        run = folder.start_wandb("offline", "p", None, {"x": 1}, "name")
        run.log({"loss": 1.0})
        assert folder.wandb_id
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_the_failure_record_is_the_saved_state_even_if_the_caller_mutates_its_lists(tmp_path):
    history = []
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            history.append(1.0)
            folder.save({"epoch": 1}, {"epochs_done": 1, "history": history})
            history.append(2.0)  # epoch 2 done in memory, never saved
            raise RuntimeError("boom")
    assert _results(tmp_path) == {
        "epochs_done": 1,
        "history": [1.0],
        "checkpoint_id": 1,
        "status": "failed",
        "error": "boom",
    }


def test_output_dirs_on_the_command_line_are_checked_before_hydra(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    runfolder.check_output_dirs([f"hydra.run.dir={tmp_path / 'new' / 'run'}", "seed=1"])
    runfolder.check_output_dirs(["hydra.run.dir=Runs/${now:%H}"])  # interpolations: Hydra's
    with pytest.raises(RunFolderError, match=f"^hydra.run.dir={blocker / 'run'} is not writable"):
        runfolder.check_output_dirs([f"hydra.run.dir={blocker / 'run'}"])
    with pytest.raises(RunFolderError, match="^hydra.sweep.dir="):
        runfolder.check_output_dirs([f"hydra.sweep.dir={blocker}"])


# ------------------------------------------------------------------ whose folder


@pytest.mark.parametrize(
    "files",
    [
        {"notes.txt": "mine"},  # a user's folder
        {"results.json": "{}", "checkpoint.pt": "x"},  # looks like a run, but not marked
        {"deep_convSNN.py": "code", "config_stork/config.yaml": "a: 1"},  # the source folder
    ],
)
def test_a_folder_with_other_files_is_refused_and_left_as_it_was(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(RunFolderError) as err:
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS, fresh=True)
    message = str(err.value)
    assert message.startswith(f"hydra.run.dir={tmp_path} holds files that are not a run")
    assert sorted(files)[0].split("/")[0] in message and "\n" not in message
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.old-*"))


def test_a_run_folder_with_a_users_file_is_refused_too(tmp_path):
    _saved_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"\(notes.txt\)"):
        RunFolder(tmp_path).acquire()
    assert _ckpt(tmp_path)["epoch"] == 2 and (tmp_path / "notes.txt").read_text() == "mine"


def test_an_empty_folder_or_one_with_only_hydras_files_is_taken_and_marked(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "job.log").write_text("")
    assert not is_marked(tmp_path)
    with RunFolder(tmp_path, experiment="test"):
        pass
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker["project"] == "surrogate-gradient-theory" and marker["experiment"] == "test"
    empty = tmp_path / "new" / "run"
    with RunFolder(empty):
        assert is_marked(empty)


def test_temporary_files_of_an_interrupted_save_are_removed_by_the_next_holder(tmp_path):
    _saved_run(tmp_path)
    (tmp_path / "data").mkdir()
    left = [
        tmp_path / ".checkpoint.pt.k2j_x9ab.tmp",
        tmp_path / ".results.json.0aq3z1mm.tmp",
        tmp_path / "data" / ".x_1.npy.pq81_z0a.tmp",
    ]
    for path in left:
        path.write_bytes(b"half")
    kept = tmp_path / "data" / "x_1.npy"
    kept.write_bytes(b"whole")
    with RunFolder(tmp_path) as folder:
        assert folder.resume(SETTINGS)["epoch"] == 2
    assert not any(p.exists() for p in left) and kept.read_bytes() == b"whole"


def test_a_completed_run_stays_completed_whatever_fails_after(tmp_path):
    with pytest.raises(MemoryError):
        with RunFolder(tmp_path) as folder:
            folder.resume(SETTINGS)
            folder.save({"epoch": 1}, {"epochs_done": 1})
            folder.complete({"epochs_done": 1, "test": {"acc": 0.5}, "other": {"acc": 0.4}})
            raise MemoryError("drawing a figure")  # e.g. plotting after the results
    res = _results(tmp_path)
    assert res["status"] == "completed" and res["test"] == {"acc": 0.5}
    assert res["other"] == {"acc": 0.4} and "error" not in res


# ------------------------------------------------------------------ the command line


@pytest.fixture
def config_dir(tmp_path):
    """A small Hydra config folder: a group `method` (a, b) and a few settings."""
    folder = tmp_path / "conf"
    (folder / "method").mkdir(parents=True)
    (folder / "method" / "a.yaml").write_text("name: a\nlr: 0.1\n")
    (folder / "method" / "b.yaml").write_text("name: b\nlr: 0.2\n")
    (folder / "config.yaml").write_text(
        "defaults:\n  - method: a\n  - _self_\nseed: 1\nnb_epochs: 2\nlimit: null\n"
        "hydra:\n  run:\n    dir: runs/${method.name}\n"
    )
    return folder


@pytest.mark.parametrize(
    "args,message",
    [
        (["foo=1"], "foo=1 is not a setting of this experiment; the settings"),
        (["nb_epoch=3"], "nb_epoch=3 is not a setting of this experiment; did you mean nb_epochs?"),
        (["seed={a:1}"], "seed={a:1} is not valid; it takes a single value (default 1), not a"),
        (
            ["seed=[1,2]"],
            "seed=[1,2] is not valid; it takes a single value (default 1), not a list",
        ),
        (["method.name=[1]"], "method.name=[1] is not valid; it takes a single value"),
        (["method=5"], "method=5 is not valid; choose one of: a, b"),
        (["method=c"], "method=c is not valid; choose one of: a, b"),
        (["-m", "method=a,c"], "method=a,c is not valid; choose one of: a, b"),
        (["--config-name=nonexistent"], "--config-name=nonexistent is not valid; choose one of"),
        (["-cn", "nope"], "--config-name=nope is not valid; choose one of: config"),
        (["method=a,b"], "method=a,b gives several values; add -m to run one job per value"),
        (["seed=1,2"], "seed=1,2 gives several values; add -m"),
        (["--foo"], "--foo is not an option of this command"),
        (["seed"], "seed is not a setting; give settings as <setting>=<value>"),
        (["seed=[1"], "seed=[1 cannot be read as a setting"),
        (["hydra.run.dir="], "hydra.run.dir= is not valid; give a folder for the run"),
        (["hydra.run.dir=~/run"], "hydra.run.dir=~/run is not valid: Hydra takes it as a"),
        (["--config-dir=/nonexistent/conf"], "--config-dir=/nonexistent/conf is not valid: no"),
        (["~seed"], "~seed is not valid: it removes a setting the experiment needs"),
        (["~method"], "~method is not valid: it removes a setting the experiment needs"),
        (["~limit"], "~limit is not valid: it removes a setting the experiment needs"),
    ],
)
def test_the_command_line_is_checked_before_hydra(config_dir, tmp_path, args, message):
    from sgruns.cli import prepare

    given = args[-1].startswith("hydra.run.dir=")
    run_dir = [] if given else [f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError) as err:
        prepare([*args, *run_dir], config_dir)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_run_folders_on_the_command_line(config_dir, tmp_path, monkeypatch):
    from sgruns.cli import prepare, quote_paths

    assert prepare(["seed=2", "method=b"], config_dir) == ["seed=2", "method=b"]  # runs/b
    (config_dir / "hydra" / "launcher").mkdir(parents=True)
    (config_dir / "hydra" / "launcher" / "mine.yaml").write_text("n: 1\n")
    assert prepare(["hydra/launcher=basic"], config_dir) == ["hydra/launcher=basic"]  # Hydra's
    odd = tmp_path / "a b, é's & (1)!"
    args = prepare([f"hydra.run.dir={odd}"], config_dir)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides(args)
    assert parsed.value() == str(odd)  # quoted, so Hydra reads the path typed
    typed = ["a/é", "x\\'y", "z\\", "b, c"]
    args = quote_paths([f"dataset.datadir={t}" for t in typed] + ["wandb.project=é"])
    values = [o.value() for o in OverridesParser.create().parse_overrides(args)]
    assert values == [*typed, "é"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match=f"hydra.run.dir={mine} holds files that are not"):
        prepare([f"hydra.run.dir={mine}"], config_dir)
    monkeypatch.chdir(mine)
    with pytest.raises(RunFolderError, match=rf"hydra.run.dir=\. \({mine}\) holds files"):
        prepare(["hydra.run.dir=."], config_dir)
    with pytest.raises(RunFolderError, match=f"hydra.sweep.dir={mine} holds files"):
        prepare(["-m", "seed=1,2", f"hydra.sweep.dir={mine}"], config_dir)
    assert (mine / "notes.txt").read_text() == "x" and len(list(mine.iterdir())) == 1

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RunFolderError, match="the disk holding .* is full"):
        prepare([f"hydra.run.dir={tmp_path / 'new'}"], config_dir)


def test_run_cli_reports_anything_escaping_as_one_line_and_exit_1(config_dir, capsys):
    from sgruns.cli import run_cli

    def interrupted_in_the_imports():
        raise KeyboardInterrupt

    def hydra_fails():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/.hydra/config.yaml")

    for app, message in [
        (interrupted_in_the_imports, "error: stopped by Ctrl-C before the run started"),
        (hydra_fails, "error: /x/.hydra/config.yaml: the disk is full"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            run_cli(app, config_dir, argv=["seed=3"])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: None, config_dir, argv=["foo=1"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("error: foo=1 is not a setting")
