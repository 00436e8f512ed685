"""One run, start to end: validate, load data, build, train (resumable), evaluate, plot, record."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from sgruns.errors import CheckpointError, RunFolderError, one_line
from sgruns.folder import RunFolder
from sgruns.records import resolve_device, versions
from sgtheory.backends.allocator import retain_freed_memory
from sgtheory.backends.threads import default_threads
from sgtheory.errors import ConfigError, NonFiniteError
from sgtheory.files import read_json
from sgtheory.optim import make_optimizer

from . import checkpoint, plots
from .checks import check
from .data import Data, load_data, shd_paths
from .metrics import evaluate, run_same, variability
from .model import NetworkShape, beta_at, build_network, init_settings, network_shape, spike_fns
from .seeds import generator, layer_generators
from .training import regularizers, train_epoch

log = logging.getLogger(__name__)
PLOTS = "Plots"
# settings that may change between an interrupted run and its resumption
RESUMABLE_KEYS = (
    "wandb",
    "threads",
    "device",
    "progress",
    "stop_after_epochs",
    "plotting",
    "nb_epochs",
)
# settings added after checkpoints may have been written: absent means this value
# (connection_delay: checkpoints from before it existed hold the undelayed model)
ADDED_KEYS = {
    "precision": "float32",
    "connection_delay": False,
    "dataset": {"allow_silent_samples": False},  # (SHD only; Randman configs lack it anyway)
}
HISTORY_KEYS = ("train_loss", "train_acc", "train_reg", "valid_loss", "valid_acc", "beta")


class TrainingRun:
    """Everything one training run holds: config, data, network, optimiser, generators,
    records; its methods are the run's phases (train, test, figures)."""

    def __init__(
        self, cfg: Any, folder: RunFolder, shape: NetworkShape, shd: dict[str, Path] | None
    ):
        self.cfg, self.folder, self.run_dir, self.shape = cfg, folder, folder.path, shape
        torch.set_num_threads(default_threads(cfg.threads))
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            retain_freed_memory()  # big activations without page faults: 2x faster steps
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.versions = versions()  # of the code this process runs: taken at its start
        self.nb_layers = len(cfg.dataset.nb_filters)
        self.dt = float(cfg.dataset.dt)
        dev = str(self.device)
        self.gens = {
            "train_spikes": layer_generators(cfg.seed, "train_spikes", self.nb_layers, device=dev),
            "shuffle": [generator(cfg.seed, "shuffle")],
        }
        fns = spike_fns(cfg, cfg.method.name, self.gens["train_spikes"])
        self.net = build_network(cfg, self.shape, fns, generator(cfg.seed, "init")).to(self.device)
        self.optimizer = make_optimizer(cfg.optimizer, self.net.parameters(), cfg.method.lr)
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.stats: list[dict[str, Any]] = []
        self.epoch_times: list[float] = []
        self.warnings: list[dict[str, Any]] = []  # a silent layer or readout, once each
        self.elapsed = 0.0
        self.epoch = self.saved_epoch = 0
        self.resume()
        self.data: Data = load_data(cfg, shd).to(self.device)
        self.regs = regularizers(cfg)
        self.wb = None
        self.results: dict[str, Any] = {}

    def resume(self) -> None:
        """Continue from the folder's checkpoint if it holds this run (see RunFolder.resume)."""
        ckpt = self.folder.resume(self.config, RESUMABLE_KEYS, ADDED_KEYS)
        if ckpt is None:
            return
        path = self.folder.checkpoint_path
        checkpoint.restore(ckpt, path, self.net, self.optimizer, self.gens)
        try:
            self.epoch, self.history, self.stats = ckpt["epoch"], ckpt["history"], ckpt["stats"]
            self.epoch_times, self.elapsed = ckpt["epoch_times"], ckpt["elapsed"]
            self.warnings = list(ckpt.get("warnings", []))
        except KeyError as err:
            raise CheckpointError(
                f"checkpoint={path} lacks {err}; to start afresh, move the run aside: "
                f"mv {self.run_dir} {self.run_dir}.old"
            ) from None
        if self.epoch > int(self.cfg.nb_epochs):
            raise ConfigError(
                f"nb_epochs={self.cfg.nb_epochs} is not valid here; the checkpoint in "
                f"{self.run_dir} already has {self.epoch} epochs"
            )
        self.saved_epoch = self.epoch
        log.info("resuming %s after epoch %d", self.run_dir, self.epoch)

    def completed_results(self) -> dict[str, Any] | None:
        """results.json of this run if it already completed every epoch asked for, else None.

        Rerunning a completed run's command changes nothing: its results (test, other) are
        neither recomputed nor put at risk by a failure of the rerun.
        """
        if not self.epoch or self.epoch != int(self.cfg.nb_epochs):
            return None
        try:
            recorded = read_json(self.folder.results_path)
        except (OSError, ValueError):
            return None  # damaged: the rerun recomputes the results from the checkpoint
        complete = isinstance(recorded, dict) and recorded.get("status") == "completed"
        if complete and recorded.get("epochs_done") == self.epoch and "test" in recorded:
            return recorded
        return None

    # ------------------------------------------------------------------ helpers
    def set_method(self, method: str, purpose: str, *keys: int, beta: float | None = None) -> None:
        """Hidden layers draw spikes with `method` from fresh generators (purpose, *keys)."""
        gens = layer_generators(
            self.cfg.seed, purpose, self.nb_layers, *keys, device=str(self.device)
        )
        self.net.set_spike_fns(spike_fns(self.cfg, method, gens, beta))

    def set_training_fns(self, beta: float) -> None:
        self.net.set_spike_fns(
            spike_fns(self.cfg, self.cfg.method.name, self.gens["train_spikes"], beta)
        )

    def phase(
        self, method: str, purpose: str, key: int, beta: float, epoch: int | None = None
    ) -> dict[str, Any]:
        """Test loss/accuracy/rates and "same"-set rates/Fano factors under `method`.

        Spikes come from the generators (purpose, key); the entry records `epoch` (default
        `key`), the number of training epochs done.
        """
        self.set_method(method, purpose, key, beta=beta)
        test = evaluate(
            self.net, self.data.test, int(self.cfg.batch_size), self.cfg.loss_type, self.dt
        )
        out, same = run_same(self.net, self.data.same, int(self.cfg.batch_size))
        var = variability(same, self.dt, int(self.cfg.fano.bin_dt), self.cfg.fano.mode)
        self._last_same = (out, same)
        return {
            "method": method,
            "epoch": key if epoch is None else epoch,
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "test_rates": test["rates"],
            "same_rates": var["rates"],
            "fano": var["fano"],
        }

    def record(self, status: str = "running", **extra: Any) -> dict[str, Any]:
        """results.json's content now: the epochs done, their history and statistics."""
        self.results.update(
            status=status,
            config=self.config,
            run_dir=str(self.run_dir),
            epochs_done=self.epoch,
            history=self.history,
            stats=self.stats,
            run_time_s=self.elapsed,
            timing={"epoch_s": self.epoch_times},
            versions=self.versions,
            wandb_id=self.folder.wandb_id,
            warnings=self.warnings,
            **extra,
        )
        if self.data.files is not None:
            self.results["data_files"] = self.data.files
        return self.results

    def save(self) -> None:
        """Checkpoint and results.json of the epochs done, written together."""
        extra = {
            "history": self.history,
            "stats": self.stats,
            "epoch_times": self.epoch_times,
            "elapsed": self.elapsed,
            "warnings": self.warnings,
        }
        state = checkpoint.state(self.epoch, self.net, self.optimizer, self.gens, extra)
        self.folder.save(state, self.record())
        self.saved_epoch = self.epoch

    def log_stats(self, entry: dict[str, Any], prefix: str) -> None:
        metrics = {
            f"{prefix}/test_loss": entry["test_loss"],
            f"{prefix}/test_acc": entry["test_acc"],
        }
        for i in range(self.nb_layers):
            metrics[f"{prefix}/test_rate_l{i + 1}"] = entry["test_rates"][i]
            metrics[f"{prefix}/same_rate_l{i + 1}"] = entry["same_rates"][i]
            metrics[f"{prefix}/fano_l{i + 1}"] = entry["fano"][i]
        self.wb.log(metrics, step=entry["epoch"])

    # ------------------------------------------------------------------ phases
    def train(self) -> bool:
        """Train to nb_epochs (or stop_after_epochs); True if training is complete."""
        cfg = self.cfg
        nb_epochs, chunk = int(cfg.nb_epochs), int(cfg.epoch_chunk)
        if self.epoch == 0 and not self.stats:
            entry = {"phase": "before", **self.phase(cfg.method.name, "eval", 0, beta_at(cfg, 0))}
            check_metrics(entry, "before training", init_settings(cfg))
            self.stats.append(entry)
            self.log_stats(entry, "stats")
        batches = -(-len(self.data.train) // int(cfg.batch_size))
        bars = (
            tqdm(total=nb_epochs, initial=self.epoch, desc="epochs", disable=not cfg.progress),
            tqdm(total=batches, desc="batches", leave=False, disable=not cfg.progress),
        )
        try:
            while self.epoch < nb_epochs:
                row = self.train_epoch(bars[1])
                bars[0].update(1)
                bars[0].set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "valid_acc")})
                stop = cfg.stop_after_epochs is not None and self.epoch >= cfg.stop_after_epochs
                if self.epoch % chunk == 0 or self.epoch == nb_epochs or stop:
                    self.save()
                if stop and self.epoch < nb_epochs:
                    log.info("stopped after epoch %d (stop_after_epochs)", self.epoch)
                    return False
        finally:
            for bar in bars:
                bar.close()
        return True

    def train_epoch(self, bar: tqdm) -> dict[str, float]:
        """One training epoch, validation, and every `epoch_chunk` the statistics."""
        cfg, epoch, method = self.cfg, self.epoch, self.cfg.method.name
        start = time.perf_counter()
        beta = beta_at(cfg, epoch)
        self.set_training_fns(beta)
        bar.reset()
        train = train_epoch(
            self.net,
            self.optimizer,
            self.data.train,
            cfg,
            self.gens["shuffle"][0],
            self.regs,
            epoch,
            bar,
        )
        self.set_method(method, "eval", epoch + 1, beta=beta)
        valid = evaluate(self.net, self.data.valid, int(cfg.batch_size), cfg.loss_type, self.dt)
        row = {
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "train_reg": train["reg"],
            "valid_loss": valid["loss"],
            "valid_acc": valid["acc"],
            "beta": beta,
        }
        hint = f"method.lr={cfg.method.lr} (optimizer={cfg.optimizer})"
        check_metrics(row, f"in epoch {epoch + 1}", hint)
        self.check_silence(train["spikes"], train["possible"], train["readout_spread"], epoch + 1)
        for key, value in row.items():
            self.history[key].append(value)
        self.epoch = epoch + 1
        if self.epoch % int(cfg.epoch_chunk) == 0 or self.epoch == int(cfg.nb_epochs):
            entry = {"phase": "training", **self.phase(method, "eval", self.epoch, beta)}
            check_metrics(entry, f"after epoch {self.epoch}", hint)
            self.stats.append(entry)
            self.log_stats(entry, "stats")
        seconds = time.perf_counter() - start
        self.epoch_times.append(seconds)
        self.elapsed += seconds
        self.wb.log({**row, "epoch_time_s": seconds}, step=self.epoch)
        return row

    def check_silence(
        self, spikes: list[float], possible: list[float], readout_spread: float, epoch: int
    ) -> None:
        """Flag (in results.json and one warning line, once per layer) hidden layers that
        emitted no spike or spiked at every step, and a readout that gave every sample the
        same output, over a whole training epoch: nothing is learnt through them."""
        cfg = self.cfg
        cause = (
            f"threshold={cfg.threshold}, p0={cfg.p0}, beta={cfg.beta}, "
            f"method.target_sigma_u={cfg.method.target_sigma_u}, dataset.nu={cfg.dataset.nu}"
        )
        seen = {where for w in self.warnings for where in w["silent"]}
        layers = [i + 1 for i, count in enumerate(spikes) if count == 0]
        layers = [i for i in layers if f"hidden layer {i}" not in seen]
        found = [f"hidden layer {i}" for i in layers]
        parts = []
        if layers:
            names = ", ".join(map(str, layers))
            parts.append(f"hidden layer{'s' if len(layers) > 1 else ''} {names} emitted no spike")
        full = [i + 1 for i, (n, m) in enumerate(zip(spikes, possible)) if n and n == m]
        full = [i for i in full if f"hidden layer {i}" not in seen]
        if full:
            found += [f"hidden layer {i}" for i in full]
            names = ", ".join(map(str, full))
            parts.append(f"hidden layer{'s' if len(full) > 1 else ''} {names} spiked at every step")
        if readout_spread == 0 and "readout" not in seen:
            found.append("readout")
            parts.append("the readout gave every sample the same output")
        if not found:
            return
        text = (
            f"{' and '.join(parts)} in training epoch {epoch}: nothing is learnt there; "
            f"check {cause}"
        )
        self.warnings.append({"epoch": epoch, "silent": found, "warning": text})
        log.warning("%s", text)

    def final(self) -> None:
        """Test under the trained method and under `method.other`; results; then figures.

        The results are recorded (status completed) before any figure is drawn: a figure
        that fails (memory, a full disk) is reported in a warning and in results.json's
        `figures_error`, and the run stays completed with its results.
        """
        cfg = self.cfg
        beta = beta_at(cfg, int(cfg.nb_epochs) - 1)
        hint = f"method.lr={cfg.method.lr} (optimizer={cfg.optimizer})"
        trained = self.phase(cfg.method.name, "test", 0, beta, epoch=self.epoch)
        out_t, same_t = self._last_same
        other = self.phase(cfg.method.other, "other", 0, beta, epoch=self.epoch)
        out_o, same_o = self._last_same
        check_metrics(trained, "in the test", hint)
        check_metrics(other, f"in the test under method.other={cfg.method.other}", hint)
        self.results.update(test=trained, other=other)
        self.folder.complete(self.record("completed", figures=[]))
        try:
            figures = self.figures(
                beta, {cfg.method.name: same_t, f"{cfg.method.other} (other)": same_o}
            )
            paths = [str(p.relative_to(self.run_dir)) for p in figures]
            self.folder.complete(self.record("completed", figures=paths))
        except Exception as err:  # MemoryError, a full disk (RunFolderError), matplotlib's
            figures = []
            text = f"plotting: the figures could not be drawn ({one_line(err)})"
            log.warning("%s; the results are recorded in results.json", text)
            try:
                self.folder.complete(self.record("completed", figures_error=text))
            except RunFolderError:
                pass  # the completed results written before stay
        try:
            self.log_stats(trained, "test")
            self.log_stats(other, "other")
            if figures and getattr(self.wb, "id", None):  # a real wandb run (not disabled)
                import wandb

                images = {p.stem: wandb.Image(str(p)) for p in figures}
                self.wb.log(images, step=int(cfg.nb_epochs))
        except Exception as err:  # wandb's own failures: the run has completed
            log.warning("wandb: logging the test results failed (%s)", one_line(err))
        log.info(
            "test acc %.4f (%s), %.4f (%s); Fano per layer %s / %s",
            trained["test_acc"],
            cfg.method.name,
            other["test_acc"],
            cfg.method.other,
            trained["fano"],
            other["fano"],
        )

    def figures(self, beta: float, same: dict[str, list[torch.Tensor]]) -> list[Path]:
        cfg = self.cfg
        if not cfg.plotting.enabled:
            return []
        folder = self.run_dir / PLOTS
        folder.mkdir(parents=True, exist_ok=True)
        dpi, dt = int(cfg.plotting.dpi), self.dt
        labels = self.data.test.labels
        n = min(int(cfg.plotting.nb_samples), len(labels))
        self.set_method(cfg.method.name, "test", 1, beta=beta)

        def snapshot(indices: torch.Tensor, name: str, title: str) -> Path:
            with torch.no_grad():
                x, y = self.data.test.batch(indices)
                out, spikes = self.net(x)
            return plots.snapshot(
                folder / name,
                x.cpu(),
                [s.cpu() for s in spikes],
                out.cpu(),
                y.cpu(),
                dt,
                dpi,
                f"{cfg.method.name}: {title}",
            )

        paths = [snapshot(torch.arange(n), "snapshot.png", "test samples")]
        differ = (labels != int(labels[0])).nonzero()
        if len(differ):  # two samples of different classes side by side
            indices = torch.tensor([0, int(differ[0])])
            paths.append(snapshot(indices, "two_classes.png", "two classes"))
        layer0 = {k: v[0].reshape(v[0].shape[0], v[0].shape[1], -1) for k, v in same.items()}
        first_method = next(iter(layer0.values()))
        neuron = int(first_method.float().sum(dim=(0, 1)).argmax())
        trials = min(int(cfg.plotting.nb_trials), first_method.shape[0])
        paths.append(
            plots.trial_rasters(
                folder / "trial_variability.png",
                {k: v[:trials, :, neuron].cpu() for k, v in layer0.items()},
                dt,
                dpi,
                f"hidden layer 1, neuron {neuron}: repeated trials of one test sample",
            )
        )
        paths.append(plots.training_curves(folder / "training_curves.png", self.history, dpi))
        return paths

    def start_wandb(self) -> None:
        cfg = self.cfg
        self.wb = self.folder.start_wandb(
            mode=cfg.wandb.mode,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            config=self.config,
            name=f"stork_{cfg.method.name}_{cfg.dataset.name}_seed{cfg.seed}",
        )


def check_metrics(values: dict[str, Any], where: str, hint: str) -> None:
    """NonFiniteError naming the first recorded number of `values` that is NaN or infinite.

    Losses, accuracies, beta and firing rates must be finite; a Fano factor is NaN (null in
    results.json) exactly when its layer did not fire in any trial, and only then.
    """
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [(None, value)]
        else:
            continue
        for i, number in items:
            if not isinstance(number, (int, float)) or math.isfinite(number):
                continue
            if key == "fano" and math.isnan(number) and values["same_rates"][i] == 0:
                continue  # no spike in any trial: no Fano factor
            name = key if i is None else f"{key}[{i}]"
            raise NonFiniteError(f"{hint}: {name} became {number} {where}")


def run_experiment(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) the experiment of `cfg` in `run_dir`; return the results dict.

    Bad settings (ConfigError), missing or bad data (FileNotFoundError, DataError), a folder
    in use (RunFolderError) or a damaged checkpoint (CheckpointError) stop before training.
    A failure during training (NonFiniteError, a full disk, ...) is recorded in results.json
    (status failed; results and checkpoint of the last saved epoch) and then raised.
    """
    check(cfg)
    shape = network_shape(cfg)
    shd = shd_paths(cfg) if cfg.dataset.name == "shd" else None  # missing files: fail now
    with RunFolder(run_dir, experiment="classification") as folder:
        run = TrainingRun(cfg, folder, shape, shd)
        done = run.completed_results()
        if done is not None:  # a rerun of a completed run: its record stays as it is
            log.info("%s holds this run, completed; nothing to do", run.run_dir)
            return done
        run.start_wandb()
        folder.write_results(run.record())
        try:
            if run.train():
                run.final()
        except NonFiniteError as err:
            kept = f"checkpoint of epoch {run.saved_epoch}" if run.saved_epoch else "no checkpoint"
            advice = (
                "lower method.lr or change the optimizer"
                if str(err).startswith("method.lr=")
                else "change those settings"
            )
            raise NonFiniteError(
                f"{err}; {advice}, in another hydra.run.dir: this one keeps the run's last "
                f"good state ({kept})"
            ) from None
    return run.results
