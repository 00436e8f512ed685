"""A run folder held by one process: lock, status, results, checkpoint, resume, failure, wandb.

Both experiments run through this module, so that a run folder behaves the same in each::

    with RunFolder(run_dir) as folder:           # create, check writable, lock it
        ckpt = folder.resume(settings, ignore=("threads", "wandb"))  # None: a fresh start
        ...                                      # restore the experiment's state from ckpt
        wb = folder.start_wandb(mode, project, entity, config, name)  # finished on exit
        folder.write_results(results)            # status "running"
        for each chunk of epochs:
            folder.check_finite(named_tensors, where, hint)   # NonFiniteError if not
            folder.save(state, results)          # checkpoint + results.json: both or neither
        folder.complete(results)                 # status "completed"

Guarantees:
* One process per folder: an OS file lock (`.lock`, released when the process dies). A second
  run in the folder raises RunFolderError naming the folder and the holder's pid. A folder
  whose results still say "running" but whose lock is free belonged to a killed run: on
  taking the folder over its status becomes "interrupted" (`read_status` reports the same).
* A run folder holds only runs. A folder is taken only if it is absent, empty (Hydra's own
  `.hydra/` and log files aside) or marked as a run folder of this project by `.sgtheory-run`
  (written when a run first takes it) and holding nothing but a run's files (`cli.RUN_FILES`
  and the experiment's `run_files`); anything else is refused with RunFolderError naming the
  folder and its files. Temporary files of an interrupted save are removed by the next holder.
* Never two runs in one folder. `resume` compares the checkpoint's settings with this
  run's: equal (up to `ignore`) -> resume; different -> ConfigError listing each setting,
  both values and the exact `mv` command that moves the old run aside; files of an earlier
  run without a checkpoint (or `resume(..., fresh=True)`) are moved aside automatically into
  a sibling folder `<name>.old-<time>`. Hydra's `.hydra/` of the old run is restored from
  the checkpoint when a start is refused, and copied along when the run is moved aside.
* results.json always matches the checkpoint: `save` writes both via temporary files and
  renames them only when both are complete, so a full disk leaves the old pair in place.
  A process killed (SIGKILL) between the two renames leaves the new checkpoint beside the
  old results.json: each pair carries one `checkpoint_id`, and the checkpoint a copy of its
  results, from which the next holder restores results.json when the ids differ.
  On any exception inside `with`, results.json is rewritten from the last saved pair with
  status "failed" ("interrupted" for Ctrl-C or SIGTERM) and the error on one line; the
  exception then propagates. A run recorded as completed stays completed with its results:
  a failure after `complete` (figures, wandb) is logged, never recorded over them. Files
  keep the process's umask.
* Entry points report errors with `exit_on_error`: one line `error: <message>` on stderr
  and exit status 1 (`EXIT_ERROR`); messages start with `<setting>=<value>`.

Files: `results.json` (the experiment's dict plus `status`), `checkpoint.pt` (the
experiment's state plus `config` (the settings), `wandb_id`, `hydra` (texts of `.hydra/`)),
`.lock` (pid of the holder), `.sgtheory-run` (the marker: project, experiment, creation time).
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from sgruns.cli import (
    MARKER,
    RUN_FILES,
    foreign_entries,
    is_marked,
    mark,
    refuse_foreign,
    remove_temp_files,
)
from sgruns.errors import CheckpointError, RunFolderError, one_line
from sgruns.records import _damaged, load_checkpoint
from sgruns.wandb_run import init_wandb
from sgtheory.errors import ConfigError, NonFiniteError, first_nonfinite
from sgtheory.files import (
    atomic_write_many,
    json_writer,
    signals_deferred,
    torch_writer,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)
RESULTS = "results.json"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
HYDRA = ".hydra"
# belong to the current job, never moved aside: Hydra's own files and the sweep callback's
KEEP = (HYDRA, LOCK, "job_status.json", MARKER)
EXIT_ERROR = 1
STATUSES = ("running", "completed", "failed", "interrupted")
# checkpoint keys the folder adds to the experiment's state
PAIR = "checkpoint_id"  # in results.json and the checkpoint: which save wrote them (1, 2, ...)
RESERVED = ("config", "wandb_id", "hydra", "results", PAIR)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM); recorded as status "interrupted"."""


def exit_on_error(err: BaseException, multirun: bool = False) -> NoReturn:
    """Print `error: <message>` (one line) on stderr; exit with status 1.

    In a Hydra multirun, re-raise instead: Hydra marks the job failed and the sweep goes on.
    """
    text = one_line(err)
    if isinstance(err, KeyboardInterrupt):
        text += "; rerun the same command to resume from the last checkpoint"
    print(f"error: {text}", file=sys.stderr, flush=True)
    if multirun:
        try:
            err.reported = True  # type: ignore[attr-defined]  # cli.report: printed once
        except AttributeError:
            pass
        raise err
    sys.exit(EXIT_ERROR)


def check_output_dirs(argv: Sequence[str]) -> None:
    """Before Hydra starts: RunFolderError if a `hydra.run.dir=` / `hydra.sweep.dir=` given on
    the command line (or, without one, the working directory) cannot hold a run folder.

    Hydra creates the folder before any code of the run is called, and reports a failure
    there as a traceback; this turns the common cases into one line.
    """
    dirs = [
        a.split("=", 1)
        for a in argv
        if a.split("=", 1)[0] in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in a
    ]
    for key, value in dirs or [("working directory", ".")]:
        path = Path(value).expanduser().absolute()
        ancestor = next(p for p in (path, *path.parents) if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            what = (
                f"{key}={value}" if key != "working directory" else f"the working directory {path}"
            )
            raise RunFolderError(
                f"{what} is not writable ({ancestor} is not a folder you can write to); "
                "choose a folder you can write to"
            )


def read_status(path: str | Path) -> str | None:
    """Status of the run in folder `path` (None: no results.json); "running" only while held."""
    try:
        status = json.loads((Path(path) / RESULTS).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    if status == "running" and not _lock_held(Path(path) / LOCK):
        return "interrupted"
    return status


def _lock_held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def changed_settings(
    old: dict, new: dict, ignore: Iterable[str] = (), defaults: dict | None = None
) -> list[tuple[str, Any, Any]]:
    """(setting, old value, new value) for every setting that differs, outside `ignore`.

    Nested dicts are compared by dotted keys; `ignore` names keys or key prefixes (`wandb`
    covers `wandb.mode`). `defaults` fills settings an older run did not have yet.
    """
    ignore = tuple(ignore)
    base = _flatten(defaults or {})
    a, b = {**base, **_flatten(old)}, {**base, **_flatten(new)}

    def kept(key: str) -> bool:
        return not any(key == i or key.startswith(i + ".") for i in ignore)

    keys = sorted(
        k for k in set(a) | set(b) if kept(k) and a.get(k, "<unset>") != b.get(k, "<unset>")
    )
    return [(k, a.get(k, "<unset>"), b.get(k, "<unset>")) for k in keys]


class RunFolder:
    """One run's folder, held by this process between `acquire` and `release` (or `with`)."""

    def __init__(self, path: str | Path, experiment: str = "run", run_files: Sequence[str] = ()):
        self.path = Path(path)
        self.experiment = experiment  # recorded in the marker
        self.run_files = tuple(run_files)  # names the experiment writes besides cli.RUN_FILES
        self.results_path = self.path / RESULTS
        self.checkpoint_path = self.path / CHECKPOINT
        self.settings: dict | None = None
        self.wandb_id: str | None = None
        self.moved_to: Path | None = None  # where an earlier run's files went, if moved
        self._lock_fd: int | None = None
        self._committed: dict | None = None  # results.json as last written with the checkpoint
        self._pair_id: int | None = None  # PAIR of the checkpoint on disk
        self._hydra: dict[str, str] = {}
        self._wandb: Any = None
        self._old_sigterm: Any = None

    # ------------------------------------------------------------------ holding the folder
    def acquire(self) -> RunFolder:
        """Create the folder, check that it is writable, take its lock; mark a killed run."""
        where = f"hydra.run.dir={self.path}"
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{where} is a file, not a folder; choose a folder")
        foreign = foreign_entries(self.path, self.run_files)
        if foreign:
            refuse_foreign(self.path, where, foreign)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe_fd, probe = tempfile.mkstemp(dir=self.path, prefix=".probe.")
            os.close(probe_fd)
            os.unlink(probe)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise RunFolderError(
                f"{where} is not writable ({err.strerror}); choose a folder you can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(
                f"{where} is in use by another run (process {holder}); wait for it to end, "
                "or use another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            if not is_marked(self.path):
                self._write(lambda: mark(self.path, self.experiment), MARKER)
            for path in remove_temp_files(self.path):
                log.info("removed %s, left by an interrupted save", path)
            self._hydra = self._read_hydra()
            self._mark_interrupted()
        except BaseException:
            self.release()
            raise
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def release(self) -> None:
        """Finish wandb, restore the SIGTERM handler and free the lock (idempotent)."""
        if self._wandb is not None:
            wb, self._wandb = self._wandb, None
            try:
                wb.finish()
            except Exception as err:  # never hide the run's own error behind wandb's
                log.warning("wandb.finish failed: %s", one_line(err))
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor frees the flock
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None and not (isinstance(exc, SystemExit) and not exc.code):
                self.fail(exc)
        finally:
            self.release()

    def _read_hydra(self) -> dict[str, str]:
        folder = self.path / HYDRA
        if not folder.is_dir():
            return {}
        return {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}

    def _mark_interrupted(self) -> None:
        try:
            results = json.loads(self.results_path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(results, dict) and results.get("status") == "running":
            results = self._results_of_newer_checkpoint(results) or results
            results.update(
                status="interrupted", error="the process running it ended without a word (killed?)"
            )
            self._write(lambda: write_json_atomic(self.results_path, results), RESULTS)
            log.info("%s: the run there was interrupted", self.path)

    def _results_of_newer_checkpoint(self, results: dict) -> dict | None:
        """The results saved with the checkpoint on disk if results.json is not its pair's
        (a process killed between the renames of `save`: the checkpoint goes first)."""
        try:
            ckpt = load_checkpoint(self.checkpoint_path)
        except CheckpointError:
            return None
        if not ckpt or ckpt.get(PAIR) in (None, results.get(PAIR)):
            return None
        saved = ckpt.get("results")
        if isinstance(saved, dict):
            log.info("%s: results.json restored from the newer checkpoint", self.path)
            return dict(saved)
        return None

    # ------------------------------------------------------------------ resume or start
    def resume(
        self,
        settings: dict,
        ignore: Iterable[str] = (),
        defaults: dict | None = None,
        fresh: bool = False,
    ) -> dict | None:
        """The checkpoint to resume from (None: start afresh); refuse changed settings.

        `settings`: this run's settings (a nested dict of plain values), stored in every
        checkpoint; `ignore`: settings that may change on resumption; `defaults`: values of
        settings that older checkpoints lack. `fresh=True` moves any earlier run aside.
        A damaged checkpoint raises CheckpointError.
        """
        self.settings = settings
        ckpt = None if fresh else load_checkpoint(self.checkpoint_path)
        if ckpt is not None and not isinstance(ckpt.get("config"), dict):
            raise CheckpointError(
                _damaged(self.checkpoint_path, "it holds no settings: not a checkpoint of a run")
            )
        if ckpt is None:
            if self._earlier_run_files():
                self.moved_to = self.move_aside()
            return None
        changed = changed_settings(ckpt.get("config", {}), settings, ignore, defaults)
        if changed:
            self._restore_hydra(ckpt.get("hydra") or {})
            raise ConfigError(self._refusal(changed))
        self.wandb_id = ckpt.get("wandb_id")
        self._pair_id = ckpt.get(PAIR)
        return ckpt

    def _refusal(self, changed: list[tuple[str, Any, Any]]) -> str:
        shown = "; ".join(
            f"{k}={new} differs from the run in this folder ({k}={old})"
            for k, old, new in changed[:4]
        )
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        folder = shlex.quote(str(self.path))
        return (
            f"{shown}{more}. hydra.run.dir={self.path} holds a checkpoint of that run: rerun "
            "with its settings to resume it, use another hydra.run.dir to keep both, or move "
            f"it aside to start afresh here: mv {folder} {shlex.quote(str(self._aside_path()))}"
        )

    def _earlier_run_files(self) -> list[Path]:
        """The earlier run's own files (the folder holds no others: see `acquire`)."""
        own = set(RUN_FILES) | set(self.run_files)
        return sorted(p for p in self.path.iterdir() if p.name in own and p.name not in KEEP)

    def _aside_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
        return target

    def move_aside(self) -> Path | None:
        """Move an earlier run's files into a sibling folder `<name>.old-<time>`; return it.

        Hydra's files of the current job and the lock stay; the earlier run's `.hydra/` (from
        its checkpoint, if readable) is written into the new folder. Log files, held open by
        the current job's logger, are copied there and emptied here.
        """
        files = self._earlier_run_files()
        if not files:
            return None
        try:
            ckpt = load_checkpoint(self.checkpoint_path)
        except RuntimeError:
            ckpt = None
        target = self._aside_path()
        target.mkdir()
        for path in files:
            shutil.move(str(path), str(target / path.name))
        for path in self.path.glob("*.log"):
            shutil.copy2(path, target / path.name)
            os.truncate(path, 0)  # the logger appends (O_APPEND): it goes on at the start
        for name, text in ((ckpt or {}).get("hydra") or {}).items():
            (target / HYDRA).mkdir(exist_ok=True)
            (target / HYDRA / name).write_text(text)
        shutil.copy2(self.path / MARKER, target / MARKER)  # a run folder of its own
        log.warning("moved the files of an earlier run in %s to %s", self.path, target)
        return target

    def _restore_hydra(self, texts: dict[str, str]) -> None:
        for name, text in texts.items():
            (self.path / HYDRA / name).write_text(text)

    def _keep_hydra(self) -> None:
        """Put back this run's `.hydra/` texts where another process's Hydra overwrote them.

        A second start in a held folder is refused by the lock only after its Hydra has
        written its own `.hydra/` there; the holder repairs it at every write.
        """
        for name, text in self._hydra.items():
            path = self.path / HYDRA / name
            try:
                if path.read_text() == text:
                    continue
            except OSError:
                pass
            self._write(lambda p=path, t=text: write_text_atomic(p, t), f"{HYDRA}/{name}")

    # ------------------------------------------------------------------ writing
    def write_files(self, action, name: str) -> None:
        """Run `action()`, which writes `name` in the folder; an OSError (full disk, lost
        permission) becomes one RunFolderError naming the folder and the file(s)."""
        self._write(action, name)

    def _write(self, action, name: str) -> None:
        """Run a write; an OSError (full disk, lost permission) becomes one RunFolderError."""
        try:
            action()
        except OSError as err:
            raise RunFolderError(
                f"hydra.run.dir={self.path}: cannot write {name} ({err.strerror or err}); the "
                "files there still hold the last checkpoint; fix this and rerun the same "
                "command to resume"
            ) from None

    def write_results(self, results: dict, status: str = "running") -> None:
        """Write results.json with `status`; it must describe the checkpoint on disk."""
        out = {**results, "status": status}
        if self._pair_id is not None:
            out[PAIR] = self._pair_id
        self._keep_hydra()
        with signals_deferred():  # a SIGTERM must see _committed as it is on disk
            self._write(lambda: write_json_atomic(self.results_path, out), RESULTS)
            self._committed = copy.deepcopy(out)  # the caller goes on appending to its lists

    def complete(self, results: dict) -> None:
        """Write the final results with status "completed"."""
        self.write_results(results, "completed")

    def save(self, state: dict, results: dict) -> None:
        """Write the checkpoint (`state` + settings) and results.json: both or neither."""
        bad = sorted(set(RESERVED) & set(state))
        if bad:
            raise ValueError(f"checkpoint state may not use the keys {bad} (the folder's own)")
        pair = (self._pair_id or 0) + 1  # pairs counted over the run, resumptions too
        out = {**results, "status": "running", PAIR: pair}
        ckpt = {**state, "config": self.settings, "wandb_id": self.wandb_id, "hydra": self._hydra}
        ckpt.update({"results": out, PAIR: pair})
        self._keep_hydra()
        with signals_deferred():  # a SIGTERM must see _committed as it is on disk
            self._save_pair(ckpt, out)
            self._committed = copy.deepcopy(out)
            self._pair_id = pair

    def _save_pair(self, ckpt: dict, out: dict) -> None:
        # the checkpoint is renamed first: a kill between the renames leaves it the newer
        self._write(
            lambda: atomic_write_many(
                [
                    (self.checkpoint_path, torch_writer(ckpt)),
                    (self.results_path, json_writer(out)),
                ]
            ),
            f"{CHECKPOINT} and {RESULTS}",
        )

    def fail(self, err: BaseException) -> None:
        """Record `err` in results.json (the last saved results, status failed/interrupted).

        Nothing is written if this run wrote no results yet (a refused start leaves an
        earlier run's files as they were) or if it already completed (its results stay). A
        write error here is logged, not raised.
        """
        if self._committed is None:
            return
        if self._committed.get("status") == "completed":
            log.error("after the run completed: %s (its results are kept)", one_line(err))
            return
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        known = isinstance(err, (ValueError, RuntimeError, OSError, KeyboardInterrupt))
        message = one_line(err) if known else f"{type(err).__name__}: {one_line(err)}"
        out = {**self._committed, "status": status, "error": message}
        try:
            write_json_atomic(self.results_path, out)
        except OSError as write_err:
            log.error("could not record the failure in %s: %s", self.results_path, write_err)

    # ------------------------------------------------------------------ checks and logging
    @staticmethod
    def check_finite(named: Sequence[tuple[str, torch.Tensor]], where: str, hint: str) -> None:
        """Raise NonFiniteError naming the first non-finite tensor of `named`.

        `where` says when (e.g. "in epoch 3, batch 2"); `hint` starts with the setting to
        change (e.g. "method.lr=1e+30: lower it"), so the message reads `<setting>=<value>`.
        """
        name = first_nonfinite(named)
        if name is not None:
            raise NonFiniteError(f"{hint}: {name} became NaN or infinite {where}")

    def start_wandb(
        self, mode: str, project: str, entity: str | None, config: dict, name: str
    ) -> Any:
        """Start (or resume) this run's wandb run in the folder; offline unless told."""
        self._wandb = init_wandb(
            mode=mode,
            project=project,
            entity=entity,
            run_dir=self.path,
            config=config,
            name=name,
            resume_id=self.wandb_id,
        )
        self.wandb_id = getattr(self._wandb, "id", None)
        return self._wandb


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")
