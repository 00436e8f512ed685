"""Training loop of one spike-train-matching run: epochs, chunks of history files, results.

The run folder (status, checkpoint, resume, refusal of changed settings, failure records,
wandb) is the core library's `sgruns.folder.RunFolder`; this module keeps only what
is the experiment's own: the set-up, the epoch, the histories and the summary.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgruns.errors import CheckpointError
from sgruns.folder import RunFolder, read_status
from sgruns.records import versions
from sgtheory.backends.threads import default_threads
from sgtheory.errors import ConfigError, NonFiniteError
from sgtheory.files import read_json, save_npy_atomic
from sgtheory.random import make_generator
from sgtheory.stats import fano_factor, firing_rate

from . import derived, learning, model
from .data import init_weights, poisson_input
from .methods import Mode, Params, make_modes

# settings that may change when a run is resumed (run control, not the result);
# checkpoints may name the thread count num_threads, the same setting's other name
RUN_CONTROL = ("max_chunks", "wandb", "resume", "threads", "num_threads", "progress", "nb_epochs")
LAYERS = ("hidden", "output")


@dataclass
class Setup:
    """Everything fixed for the whole run: network, frozen input, target, spike operations."""

    net: model.Net
    x: torch.Tensor  # (T, batch, N_in) 0/1 floats
    xbar_i: torch.Tensor  # input filtered by the membrane kernel
    z: torch.Tensor  # (T, batch, N_out) target
    train: Mode
    valid: Mode
    generator: torch.Generator
    hint: str = "dataset_method.lr_h dataset_method.lr_o: lower the learning rates"


@dataclass
class State:
    """What changes from epoch to epoch and goes into the checkpoint."""

    epoch: int
    w_ih: torch.Tensor
    w_ho: torch.Tensor
    hist: dict[str, list[float]] = field(default_factory=dict)
    first: dict | None = None  # spike statistics of the first epoch
    last: dict | None = None  # spike statistics of the last epoch trained
    timing: dict | None = None  # the timing record of the session that trained last
    elapsed: float = 0.0  # seconds spent in earlier sessions
    silent: dict[str, dict] = field(default_factory=dict)  # layer -> epochs without a spike
    saturated: dict[str, dict] = field(default_factory=dict)  # layer -> epochs all spikes
    unchanged: dict[str, dict] = field(default_factory=dict)  # "weights" -> epochs no update
    warned: bool = False  # a silent or saturated layer was reported in this process


def make_setup(cfg, params: Params, target: np.ndarray) -> tuple[Setup, State]:
    """Draw the frozen input and the initial weights from the seed; build the network.

    ConfigError (naming input_rate) if the frozen input holds no spike: nothing could drive
    the network.
    """
    dtype = torch.float32
    gen = make_generator(cfg.seed)
    ds = cfg.dataset
    x = poisson_input(ds.nb_steps, ds.batch_size, ds.nb_inputs, cfg.input_rate, cfg.dt, gen)
    if not bool(x.any()):
        raise ConfigError(
            f"input_rate={cfg.input_rate!r} is not valid here: with dt={cfg.dt!r} the frozen "
            f"input ({ds.nb_inputs} inputs x {ds.nb_steps} steps x batch {ds.batch_size}, a "
            f"spike with probability input_rate * dt = {cfg.input_rate * cfg.dt:.3g}) holds no "
            "spike, so nothing drives the network; raise input_rate"
        )
    weights = [
        init_weights(n_pre, n_post, cfg.sigma_u, cfg.input_rate, cfg.tau_mem, cfg.tau_syn, gen)
        for n_pre, n_post in ((ds.nb_inputs, ds.nb_hidden), (ds.nb_hidden, ds.nb_outputs))
    ]
    RunFolder.check_finite(
        [("W_ih", weights[0].to(dtype)), ("W_ho", weights[1].to(dtype))],
        "at initialisation",
        derived.shown(cfg, ["sigma_u", "input_rate", "tau_mem", "tau_syn"]).replace(", ", " "),
    )
    z = torch.from_numpy(target).unsqueeze(1).expand(-1, ds.batch_size, -1).to(dtype)
    kernels = model.make_kernels(ds.nb_steps, cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.eps0, dtype)
    net = model.Net(
        cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.threshold, cfg.eps0, cfg.reset_mode, kernels
    )
    train, valid = make_modes(cfg.method.name, cfg.method.sigm, cfg.valid_escape, params, gen)
    xf = x.to(dtype)
    setup = Setup(net, xf, model.filt(kernels.membrane, xf), z, train, valid, gen)
    return setup, State(0, weights[0].to(dtype), weights[1].to(dtype))


class ChunkBuffer:
    """The histories of the epochs since the last write, as preallocated compact arrays."""

    def __init__(self, cfg, n_epochs: int) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        r, rv = cfg.method.nb_trials, cfg.valid_nb_trials
        b, t = cfg.dataset.batch_size, cfg.dataset.nb_steps
        nh, no, ni = cfg.dataset.nb_hidden, cfg.dataset.nb_outputs, cfg.dataset.nb_inputs
        valid = cfg.validate_with_other_method
        shapes: dict[str, tuple[tuple, Any]] = {
            k: ((), np.float32)
            for k in ("loss_hist_vRd", "loss_hist_L2", "dw0_mean_hist", "dw1_mean_hist")
        }
        if valid:
            shapes.update(
                {k: ((), np.float32) for k in ("loss_hist_vRd_valid", "loss_hist_L2_valid")}
            )
        if cfg.save_spk:
            shapes.update(
                spk_hist_h=((r, b, t, nh), np.uint8), spk_hist_o=((r, b, t, no), np.uint8)
            )
            if valid:
                shapes["spk_hist_h_valid"] = ((rv, b, t, nh), np.uint8)
                shapes["spk_hist_o_valid"] = ((rv, b, t, no), np.uint8)
        if cfg.save_mem:
            shapes.update(
                mem_hist_h=((r, b, t, nh), np.float32), mem_hist_o=((r, b, t, no), np.float32)
            )
        if cfg.save_w:
            shapes.update(w_hist_h=((ni, nh), np.float32), w_hist_o=((nh, no), np.float32))
        if cfg.save_dw:
            shapes.update(dw_hist_h=((ni, nh), np.float32), dw_hist_o=((nh, no), np.float32))
        for name, (shape, dtype) in shapes.items():
            self.arrays[name] = np.zeros((n_epochs,) + shape, dtype=dtype)

    def put(self, name: str, i: int, value) -> None:
        """Store epoch `i` of the chunk's history `name` (ignored if not kept)."""
        if name in self.arrays:
            if isinstance(value, torch.Tensor):
                value = value.numpy()
            self.arrays[name][i] = value

    def write(self, data_dir: Path, epoch_end: int, n: int) -> None:
        """Write the first `n` epochs of every history as `<name>_<epoch_end>.npy`."""
        for name, arr in self.arrays.items():
            save_npy_atomic(data_dir / f"{name}_{epoch_end}.npy", arr[:n])


def trials_first(x: torch.Tensor) -> torch.Tensor:
    """(T, trials, batch, N) -> (trials, batch, T, N) as stored on disk."""
    return x.permute(1, 2, 0, 3)


def spike_stats(cfg, spk_h: torch.Tensor, spk_o: torch.Tensor) -> dict[str, Any]:
    """Firing rates (Hz) and Fano factors (across trials) of one epoch's spikes."""
    out: dict[str, Any] = {}
    for layer, spk in (("hidden", spk_h), ("output", spk_o)):
        s = trials_first(spk).float()  # (trials, batch, T, N)
        out[f"rate_{layer}_hz"] = firing_rate(s.flatten(0, 1), cfg.dt)
        out[f"fano_{layer}"] = fano_factor(s, int(cfg.fano_window)) if s.shape[0] > 1 else None
    return out


def store_trial(buf: ChunkBuffer, i: int, trial: model.Trial, suffix: str = "") -> None:
    """Put one pass's spikes (and membranes) into the chunk buffer."""
    buf.put(f"spk_hist_h{suffix}", i, trials_first(trial.spk_h))
    buf.put(f"spk_hist_o{suffix}", i, trials_first(trial.spk_o))
    if not suffix:
        buf.put("mem_hist_h", i, trials_first(trial.mem_h))
        buf.put("mem_hist_o", i, trials_first(trial.mem_o))


def run_epoch(
    cfg, s: Setup, state: State, buf: ChunkBuffer, i: int
) -> tuple[model.Trial, model.Trial | None]:
    """One epoch: forward, update, validation in the other mode; returns (trial, vtrial)."""
    buf.put("w_hist_h", i, state.w_ih)
    buf.put("w_hist_o", i, state.w_ho)
    m = s.train
    trial = model.forward(
        s.net, s.x, state.w_ih, state.w_ho, m.spike_h, m.spike_o, int(cfg.method.nb_trials)
    )
    vrd, l2 = model.losses(s.net, s.z, trial.spk_o)
    lr_h, lr_o = float(cfg.dataset_method.lr_h), float(cfg.dataset_method.lr_o)
    dw_ih, dw_ho = learning.weight_updates(
        s.net, s.xbar_i, s.z, state.w_ho, trial, m.spike_h.surrogate, cfg.delta_u_o, lr_h, lr_o
    )
    state.w_ih, state.w_ho = state.w_ih + dw_ih, state.w_ho + dw_ho
    where = f"in epoch {state.epoch + 1}"
    RunFolder.check_finite([("W_ih", state.w_ih), ("W_ho", state.w_ho)], where, s.hint)
    rec = {"loss_hist_vRd": vrd, "loss_hist_L2": l2}
    rec["dw0_mean_hist"], rec["dw1_mean_hist"] = (
        float(dw_ih.abs().mean()),
        float(dw_ho.abs().mean()),
    )
    buf.put("dw_hist_h", i, dw_ih)
    buf.put("dw_hist_o", i, dw_ho)
    store_trial(buf, i, trial)
    vtrial = None
    if cfg.validate_with_other_method:
        v = s.valid
        vtrial = model.forward(
            s.net, s.x, state.w_ih, state.w_ho, v.spike_h, v.spike_o, int(cfg.valid_nb_trials)
        )
        rec["loss_hist_vRd_valid"], rec["loss_hist_L2_valid"] = model.losses(
            s.net, s.z, vtrial.spk_o
        )
        store_trial(buf, i, vtrial, "_valid")
    for key, value in rec.items():  # every recorded number, not only the weights
        if not math.isfinite(value):
            raise NonFiniteError(f"{s.hint}: {key} became NaN or infinite {where}")
    note_flags(cfg, state, trial, rec)
    for key, value in rec.items():
        buf.put(key, i, value)
        state.hist.setdefault(key, []).append(value)
    return trial, vtrial


def _count(table: dict[str, dict], key: str, epoch: int) -> None:
    rec = table.setdefault(key, {"epochs": 0, "first": epoch, "last": epoch})
    rec["epochs"] += 1
    rec["last"] = epoch


def _warn_once(state: State, text: str) -> None:
    """One warning line on stderr, the first time anything is flagged in this process."""
    if not state.warned:
        state.warned = True
        print(f"warning: {text}; results.json counts such epochs under warnings", file=sys.stderr)


def note_flags(cfg, state: State, trial: model.Trial, rec: dict[str, float]) -> None:
    """Count the epochs (how many, first and last, 1-based) in which a layer fired no spike
    at all or a spike at every step of every neuron in the training pass, and those in which
    no weight changed: nothing is learnt through them. Training goes on (a surrogate
    gradient may move a silent layer); the first flag in this process prints one line."""
    epoch = state.epoch + 1
    causes = derived.shown(cfg, ["threshold", "sigma_u", "input_rate"])
    for layer, spk in zip(LAYERS, (trial.spk_h, trial.spk_o), strict=True):
        for table, bad, what in (
            (state.silent, not bool(spk.any()), "fired no spike"),
            (state.saturated, bool(spk.all()), "fired at every step"),
        ):
            if bad:
                _count(table, layer, epoch)
                _warn_once(
                    state,
                    f"the {layer} layer {what} in epoch {epoch}; training goes on (a surrogate "
                    f"gradient may move it); check {causes} and the escape noise's settings",
                )
    if rec["dw0_mean_hist"] == 0 and rec["dw1_mean_hist"] == 0:
        _count(state.unchanged, "weights", epoch)
        lrs = derived.shown(cfg, ["dataset_method.lr_h", "dataset_method.lr_o", "delta_u_o"])
        _warn_once(
            state,
            f"no weight changed in epoch {epoch} (every update 0 in float32); check {lrs}",
        )


def warnings(state: State) -> list[str]:
    """Lines for results.json about silent or saturated layers and epochs without any weight
    change (none when all is well)."""
    lines = [
        f"the {layer} layer {what} in {rec['epochs']} of {state.epoch} epochs "
        f"(first in epoch {rec['first']}, last in epoch {rec['last']})"
        for table, what in (
            (state.silent, "fired no spike"),
            (state.saturated, "fired at every step"),
        )
        for layer, rec in table.items()
    ]
    for rec in state.unchanged.values():
        lines.append(
            f"no weight changed in {rec['epochs']} of {state.epoch} epochs (first in epoch "
            f"{rec['first']}, last in epoch {rec['last']})"
        )
    return lines


def pass_stats(cfg, trial: model.Trial, vtrial: model.Trial | None) -> dict[str, Any]:
    """Spike statistics of one epoch's training pass and validation pass."""
    out = {"train": spike_stats(cfg, trial.spk_h, trial.spk_o)}
    if vtrial is not None:
        out["valid"] = spike_stats(cfg, vtrial.spk_h, vtrial.spk_o)
    return out


def summary(state: State) -> dict[str, Any]:
    """Losses (first, final, means of the first and last 10 epochs), spike statistics of the
    first and last epoch, the timing of the last session that trained, silent layers."""
    losses = {k: v for k, v in state.hist.items() if k.startswith("loss")}
    out: dict[str, Any] = {"epochs": state.epoch}
    out["losses"] = {
        "first": {k: v[0] for k, v in losses.items()},
        "final": {k: v[-1] for k, v in losses.items()},
        "mean_last_10": {k: float(np.mean(v[-10:])) for k, v in losses.items()},
        "mean_first_10": {k: float(np.mean(v[:10])) for k, v in losses.items()},
    }
    out["spike_stats"] = {"first_epoch": state.first}
    if state.last is not None:
        out["spike_stats"]["final_epoch"] = state.last
    if state.timing is not None:
        out["timing"] = state.timing
    out["warnings"] = warnings(state)
    if state.silent:
        out["silent_epochs"] = state.silent
    if state.saturated:
        out["saturated_epochs"] = state.saturated
    if state.unchanged:
        out["unchanged_epochs"] = state.unchanged["weights"]
    return out


@dataclass
class Clock:
    """Wall times of this session: start-up (process start to training), per epoch."""

    startup: float
    start: float = field(default_factory=time.perf_counter)
    epochs: list[float] = field(default_factory=list)

    def timing(self, state: State) -> dict[str, Any]:
        """The timing record of results.json."""
        session = time.perf_counter() - self.start
        n = len(self.epochs)
        return {
            "run_time_s": state.elapsed + session,
            "startup_s": self.startup,
            "seconds_per_epoch_this_session": sum(self.epochs) / max(n, 1),
            "median_s_per_epoch": float(np.median(self.epochs[10:] or self.epochs or [0.0])),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "epochs_this_session": n,
            "resumed_from_epoch": state.epoch - n,
        }


def restore(state: State, ckpt: dict, generator: torch.Generator) -> None:
    """Continue from a checkpoint: weights, generator, histories, spike statistics, timing.

    A checkpoint without the last epoch's statistics and timing of its own takes them from
    the copy of its results that the run folder keeps in it (if any).
    """
    state.epoch, state.elapsed = ckpt["epoch"], ckpt["elapsed"]
    state.w_ih, state.w_ho = ckpt["w_ih"].float(), ckpt["w_ho"].float()
    state.hist, state.first = ckpt["hist"], ckpt.get("first")
    saved = ckpt.get("results") if isinstance(ckpt.get("results"), dict) else {}
    state.last = ckpt.get("last", (saved.get("spike_stats") or {}).get("final_epoch"))
    state.timing = ckpt.get("timing", saved.get("timing"))
    state.silent = ckpt.get("silent", saved.get("silent_epochs") or {})
    state.saturated = ckpt.get("saturated", saved.get("saturated_epochs") or {})
    state.unchanged = ckpt.get("unchanged", {})
    generator.set_state(ckpt["generator"])


def checkpoint_state(state: State, generator: torch.Generator, clock: Clock) -> dict:
    """What the checkpoint holds (the folder adds the settings and the wandb id)."""
    return {
        "epoch": state.epoch,
        "w_ih": state.w_ih,
        "w_ho": state.w_ho,
        "generator": generator.get_state(),
        "hist": state.hist,
        "elapsed": state.elapsed + time.perf_counter() - clock.start,
        "first": state.first,
        "last": state.last,
        "timing": state.timing,
        "silent": state.silent,
        "saturated": state.saturated,
        "unchanged": state.unchanged,
    }


def log_chunk(wb, state: State, n: int) -> None:
    """Send the chunk's epochs to wandb (one step per epoch)."""
    for k in range(state.epoch - n, state.epoch):
        wb.log({key: values[k] for key, values in state.hist.items()}, step=k)


def run_chunks(
    cfg, s: Setup, state: State, folder: RunFolder, wb, clock: Clock, base: dict
) -> dict:
    """Train chunk by chunk until nb_epochs (or max_chunks); return the last saved results
    (their status is "interrupted" when max_chunks stopped the run early)."""
    from tqdm import tqdm

    total, freq, chunks = int(cfg.nb_epochs), int(cfg.logging_freq), 0
    results = {**base, **summary(state)}
    bar = tqdm(
        total=total, initial=state.epoch, desc=cfg.method.name, unit="ep", disable=not cfg.progress
    )
    with bar:
        while state.epoch < total:
            n = min(freq, total - state.epoch)
            buf = ChunkBuffer(cfg, n)
            for i in range(n):
                t0 = time.perf_counter()
                trial, vtrial = run_epoch(cfg, s, state, buf, i)
                state.epoch += 1
                if state.first is None:
                    state.first = pass_stats(cfg, trial, vtrial)
                clock.epochs.append(time.perf_counter() - t0)
                bar.update(1)
            state.last = pass_stats(cfg, trial, vtrial)
            folder.write_files(partial(buf.write, folder.path / "data", state.epoch, n), "data/")
            log_chunk(wb, state, n)
            state.timing = clock.timing(state)
            results = {**base, **summary(state)}
            folder.save(checkpoint_state(state, s.generator, clock), results)
            chunks += 1
            if cfg.max_chunks is not None and chunks >= cfg.max_chunks and state.epoch < total:
                folder.write_results(results, "interrupted")
                return {**results, "status": "interrupted"}
    return results


def run(cfg, run_dir: Path, checked: dict, process_start: float) -> dict[str, Any]:
    """Train (or resume) one run in `run_dir`; return its results (status included).

    The frozen input, weights and kernels are made (and checked) before the run folder is
    touched. A checkpoint that holds every epoch but whose results.json does not say
    completed (damaged, or a failure after the last save) is completed from the checkpoint's
    own record: no recorded result is dropped.
    """
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg, resolve=True)
    torch.set_num_threads(default_threads(cfg.threads))
    s, state = make_setup(cfg, checked["params"], checked["target"])
    s.hint = derived.nonfinite_hint(cfg, checked.get("defaults", {}))
    with RunFolder(run_dir, experiment="spike_train_matching") as folder:
        ckpt = folder.resume(settings, ignore=RUN_CONTROL, fresh=not cfg.resume)
        done = ckpt is not None and ckpt["epoch"] >= cfg.nb_epochs
        if done and read_status(run_dir) == "completed":
            print(f"{run_dir}: already completed ({ckpt['epoch']} epochs); nothing to do")
            return read_json(run_dir / "results.json")
        folder.write_files(lambda: write_inputs(run_dir / "data", s), "data/")
        if ckpt is not None:
            restore(state, ckpt, s.generator)
        if done and (state.last is None or state.timing is None):
            raise CheckpointError(
                f"hydra.run.dir={run_dir}: its checkpoint holds all {state.epoch} epochs but not "
                "the last epoch's spike statistics and timing, and results.json does not record "
                "the run as completed; rerun with a larger nb_epochs to train on, or move the "
                "folder aside to start afresh"
            )
        name = f"{cfg.method.name}-{cfg.dataset.name}-seed{cfg.seed}"
        wb = folder.start_wandb(cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, settings, name)
        clock = Clock(startup=time.perf_counter() - process_start)
        base = {"config": settings, "versions": versions()}
        folder.write_results({**base, **summary(state)})
        results = run_chunks(cfg, s, state, folder, wb, clock, base)
        if results.get("status") == "interrupted":
            print(f"stopped at epoch {state.epoch} (max_chunks={cfg.max_chunks})")
            return results
        folder.complete(results)
        wb.log({"final_vRd": state.hist["loss_hist_vRd"][-1]}, step=state.epoch - 1)
    vrd = state.hist["loss_hist_vRd"]
    print(f"{cfg.method.name}: vRd {vrd[0]:.3f} -> {vrd[-1]:.3f}; results in {run_dir}")
    return {**results, "status": "completed"}


def write_inputs(data_dir: Path, s: Setup) -> None:
    """The frozen input and the target, uint8 (batch, steps, neurons)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(data_dir / "x_data.npy", s.x.permute(1, 0, 2).numpy().astype(np.uint8))
    save_npy_atomic(data_dir / "z_data.npy", s.z.permute(1, 0, 2).numpy().astype(np.uint8))
