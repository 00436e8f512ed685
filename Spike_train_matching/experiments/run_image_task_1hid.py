"""Spike-train matching: a one-hidden-layer LIF network learns to emit a target raster.

Run from this folder:  python3 run_image_task_1hid.py --config-name=config [overrides]
e.g. `method=stochasticsuperspike`, `dataset=oxford dataset.data_path=/path/to/image.png`,
or a sweep with `-m seed=1,2,3`. See ../README.md for what a run writes.
"""

# ruff: noqa: E402
from __future__ import annotations

import time

_T0 = time.perf_counter()  # process start (before the heavy imports), for the start-up time

import math
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtheory.errors import ConfigError
from sgtheory.runs import (
    init_wandb,
    load_checkpoint,
    make_generator,
    read_json,
    save_atomic,
    save_npy_atomic,
    versions,
    write_json_atomic,
)
from sgtheory.stats import fano_factor, firing_rate
from stm import core
from stm.settings import precheck_argv, validate

CONFIG_DIR = Path(__file__).resolve().parent / "config_experiments"
CHECKPOINT = "checkpoint.pt"


# ----------------------------------------------------------------------------- run


def _config_key(cfg_dict: dict) -> dict:
    """The settings that change the result (run control such as max_chunks excluded)."""
    skip = {"max_chunks", "wandb", "resume", "num_threads", "progress", "nb_epochs"}
    return {k: v for k, v in cfg_dict.items() if k not in skip}


class ChunkBuffer:
    """The histories of the epochs since the last write, as preallocated compact arrays."""

    def __init__(self, cfg, n_epochs: int):
        self.arrays: dict[str, np.ndarray] = {}
        r, rv = cfg.method.nb_trials, cfg.valid_nb_trials
        b, t = cfg.dataset.batch_size, cfg.dataset.nb_steps
        nh, no, ni = cfg.dataset.nb_hidden, cfg.dataset.nb_outputs, cfg.dataset.nb_inputs

        def add(name, shape, dtype):
            self.arrays[name] = np.zeros((n_epochs,) + shape, dtype=dtype)

        for kind in ("loss_hist_vRd", "loss_hist_L2", "dw0_mean_hist", "dw1_mean_hist"):
            add(kind, (), np.float32)
        valid = cfg.validate_with_other_method
        if valid:
            add("loss_hist_vRd_valid", (), np.float32)
            add("loss_hist_L2_valid", (), np.float32)
        if cfg.save_spk:
            add("spk_hist_h", (r, b, t, nh), np.uint8)
            add("spk_hist_o", (r, b, t, no), np.uint8)
            if valid:
                add("spk_hist_h_valid", (rv, b, t, nh), np.uint8)
                add("spk_hist_o_valid", (rv, b, t, no), np.uint8)
        if cfg.save_mem:
            add("mem_hist_h", (r, b, t, nh), np.float32)
            add("mem_hist_o", (r, b, t, no), np.float32)
        if cfg.save_w:
            add("w_hist_h", (ni, nh), np.float32)
            add("w_hist_o", (nh, no), np.float32)
        if cfg.save_dw:
            add("dw_hist_h", (ni, nh), np.float32)
            add("dw_hist_o", (nh, no), np.float32)

    def put(self, name: str, i: int, value) -> None:
        if name in self.arrays:
            if isinstance(value, torch.Tensor):
                value = value.numpy()
            self.arrays[name][i] = value

    def write(self, data_dir: Path, epoch_end: int, n: int) -> None:
        for name, arr in self.arrays.items():
            save_npy_atomic(data_dir / f"{name}_{epoch_end}.npy", arr[:n])


def _to_trials_first(x: torch.Tensor) -> torch.Tensor:
    """(T, trials, batch, N) -> (trials, batch, T, N) as stored on disk."""
    return x.permute(1, 2, 0, 3)


def _stats(cfg, spk_h: torch.Tensor, spk_o: torch.Tensor) -> dict[str, Any]:
    """Firing rates (Hz) and Fano factors (across trials) of one epoch's spikes."""
    out: dict[str, Any] = {}
    for layer, spk in (("hidden", spk_h), ("output", spk_o)):
        s = _to_trials_first(spk).float()  # (trials, batch, T, N)
        out[f"rate_{layer}_hz"] = firing_rate(s.flatten(0, 1), cfg.dt)
        out[f"fano_{layer}"] = fano_factor(s, int(cfg.fano_window)) if s.shape[0] > 1 else None
    return out


def run(cfg) -> dict[str, Any]:
    """Train (or resume) one run in the current Hydra output folder; return the results."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    checked = validate(cfg, CONFIG_DIR)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    torch.set_num_threads(int(cfg.num_threads))
    dtype = torch.float32
    status_path = run_dir / "status.json"

    def set_status(status: str, epoch: int, **extra) -> None:
        write_json_atomic(
            status_path,
            {
                "status": status,
                "epoch": epoch,
                "nb_epochs": int(cfg.nb_epochs),
                "time": time.time(),
                **extra,
            },
        )

    t_start = time.perf_counter()
    gen = make_generator(cfg.seed)
    nb_steps, batch = cfg.dataset.nb_steps, cfg.dataset.batch_size
    x = core.poisson_input(nb_steps, batch, cfg.dataset.nb_inputs, cfg.input_rate, cfg.dt, gen)
    w_ih = core.init_weights(
        cfg.dataset.nb_inputs,
        cfg.dataset.nb_hidden,
        cfg.sigma_u,
        cfg.input_rate,
        cfg.tau_mem,
        cfg.tau_syn,
        gen,
    ).to(dtype)
    w_ho = core.init_weights(
        cfg.dataset.nb_hidden,
        cfg.dataset.nb_outputs,
        cfg.sigma_u,
        cfg.input_rate,
        cfg.tau_mem,
        cfg.tau_syn,
        gen,
    ).to(dtype)
    z = torch.from_numpy(checked["target"]).unsqueeze(1).expand(-1, batch, -1).to(dtype)
    save_npy_atomic(data_dir / "x_data.npy", x.permute(1, 0, 2).numpy().astype(np.uint8))
    save_npy_atomic(data_dir / "z_data.npy", z.permute(1, 0, 2).numpy().astype(np.uint8))

    kernels = core.make_kernels(nb_steps, cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.eps0, dtype)
    net = core.Net(
        cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.threshold, cfg.eps0, bool(cfg.reset_mode), kernels
    )
    xf = x.to(dtype)
    drive_x = core.filt(kernels.drive, xf)  # frozen input: filtered once
    xbar_i = core.filt(kernels.membrane, xf)

    # ---- resume
    epoch, hist, elapsed_before, wandb_id, first = 0, {}, 0.0, None, None
    ckpt = load_checkpoint(run_dir / CHECKPOINT) if cfg.resume else None
    if ckpt is not None:
        if ckpt["config"] != _config_key(cfg_dict):
            raise ConfigError(
                f"{run_dir} holds a run with different settings; use another hydra.run.dir "
                "or resume=false to start over"
            )
        epoch, elapsed_before = ckpt["epoch"], ckpt["elapsed"]
        w_ih, w_ho = ckpt["w_ih"].to(dtype), ckpt["w_ho"].to(dtype)
        gen.set_state(ckpt["generator"])
        hist, wandb_id, first = ckpt["hist"], ckpt.get("wandb_id"), ckpt.get("first")
    if epoch >= cfg.nb_epochs and (run_dir / "results.json").exists():
        print(f"{run_dir}: already completed ({epoch} epochs); nothing to do")
        return read_json(run_dir / "results.json")

    wb = init_wandb(
        cfg.wandb.mode,
        cfg.wandb.project,
        cfg.wandb.entity,
        run_dir,
        cfg_dict,
        name=f"{cfg.method.name}-{cfg.dataset.name}-seed{cfg.seed}",
        resume_id=wandb_id,
    )
    wandb_id = getattr(wb, "id", None)
    set_status("running", epoch)
    startup = time.perf_counter() - _T0

    from tqdm import tqdm

    esc_h, esc_o = checked["escapes"]["train"]
    vesc_h, vesc_o = checked["escapes"]["valid"]
    surrogate = checked["surrogate"]
    r, rv = int(cfg.method.nb_trials), int(cfg.valid_nb_trials)
    lr_h, lr_o = float(cfg.dataset_method.lr_h), float(cfg.dataset_method.lr_o)
    valid = bool(cfg.validate_with_other_method)
    freq = int(cfg.logging_freq)
    chunks_done = 0
    last = None
    bar = tqdm(
        total=int(cfg.nb_epochs),
        initial=epoch,
        desc=f"{cfg.method.name}",
        unit="ep",
        disable=not cfg.progress,
    )
    t_loop = time.perf_counter()
    epochs_run = 0
    epoch_times: list[float] = []
    try:
        while epoch < cfg.nb_epochs:
            n = min(freq, int(cfg.nb_epochs) - epoch)
            buf = ChunkBuffer(cfg, n)
            for i in range(n):
                t_epoch = time.perf_counter()
                buf.put("w_hist_h", i, w_ih)
                buf.put("w_hist_o", i, w_ho)
                trial = core.forward(net, drive_x, w_ih, w_ho, esc_h, esc_o, r, gen)
                vrd, l2 = core.losses(net, z, trial.spk_o)
                dw_ih, dw_ho = core.weight_updates(
                    net, xbar_i, z, w_ho, trial, surrogate, cfg.delta_u_o, lr_h, lr_o
                )
                w_ih = w_ih + dw_ih
                w_ho = w_ho + dw_ho
                rec = {
                    "loss_hist_vRd": vrd,
                    "loss_hist_L2": l2,
                    "dw0_mean_hist": float(dw_ih.abs().mean()),
                    "dw1_mean_hist": float(dw_ho.abs().mean()),
                }
                buf.put("spk_hist_h", i, _to_trials_first(trial.spk_h))
                buf.put("spk_hist_o", i, _to_trials_first(trial.spk_o))
                buf.put("mem_hist_h", i, _to_trials_first(trial.mem_h))
                buf.put("mem_hist_o", i, _to_trials_first(trial.mem_o))
                buf.put("dw_hist_h", i, dw_ih)
                buf.put("dw_hist_o", i, dw_ho)
                vtrial = None
                if valid:
                    vtrial = core.forward(net, drive_x, w_ih, w_ho, vesc_h, vesc_o, rv, gen)
                    rec["loss_hist_vRd_valid"], rec["loss_hist_L2_valid"] = core.losses(
                        net, z, vtrial.spk_o
                    )
                    buf.put("spk_hist_h_valid", i, _to_trials_first(vtrial.spk_h))
                    buf.put("spk_hist_o_valid", i, _to_trials_first(vtrial.spk_o))
                for key, value in rec.items():
                    buf.put(key, i, value)
                    hist.setdefault(key, []).append(value)
                last = (trial, vtrial)
                if first is None:
                    first = {"train": _stats(cfg, trial.spk_h, trial.spk_o)}
                    if vtrial is not None:
                        first["valid"] = _stats(cfg, vtrial.spk_h, vtrial.spk_o)
                epoch += 1
                epochs_run += 1
                epoch_times.append(time.perf_counter() - t_epoch)
                bar.update(1)
                if not math.isfinite(vrd):
                    raise FloatingPointError(f"loss is not finite at epoch {epoch}")
            buf.write(data_dir, epoch, n)
            for k in range(epoch - n, epoch):
                wb.log({key: values[k] for key, values in hist.items()}, step=k)
            elapsed = elapsed_before + time.perf_counter() - t_start
            save_atomic(
                run_dir / CHECKPOINT,
                {
                    "epoch": epoch,
                    "w_ih": w_ih,
                    "w_ho": w_ho,
                    "generator": gen.get_state(),
                    "hist": hist,
                    "elapsed": elapsed,
                    "wandb_id": wandb_id,
                    "first": first,
                    "config": _config_key(cfg_dict),
                },
            )
            del buf
            chunks_done += 1
            if (
                cfg.max_chunks is not None
                and chunks_done >= cfg.max_chunks
                and epoch < cfg.nb_epochs
            ):
                set_status("interrupted", epoch)
                wb.finish()
                bar.close()
                print(f"stopped after {chunks_done} chunk(s) at epoch {epoch} (max_chunks)")
                return {"status": "interrupted", "epoch": epoch}
            set_status("running", epoch)
    except BaseException as exc:
        set_status("failed", epoch, error=repr(exc))
        bar.close()
        raise
    bar.close()
    loop_time = time.perf_counter() - t_loop
    total = elapsed_before + time.perf_counter() - t_start

    results: dict[str, Any] = {"status": "completed", "config": cfg_dict, "epochs": epoch}
    results["losses"] = {
        "first": {k: v[0] for k, v in hist.items() if k.startswith("loss")},
        "final": {k: v[-1] for k, v in hist.items() if k.startswith("loss")},
        "mean_last_10": {
            k: float(np.mean(v[-10:])) for k, v in hist.items() if k.startswith("loss")
        },
        "mean_first_10": {
            k: float(np.mean(v[:10])) for k, v in hist.items() if k.startswith("loss")
        },
    }
    stats = {"first_epoch": first}
    if last is not None:
        trial, vtrial = last
        stats["final_epoch"] = {"train": _stats(cfg, trial.spk_h, trial.spk_o)}
        if vtrial is not None:
            stats["final_epoch"]["valid"] = _stats(cfg, vtrial.spk_h, vtrial.spk_o)
    results["spike_stats"] = stats
    results["timing"] = {
        "run_time_s": total,
        "startup_s": startup,
        "seconds_per_epoch_this_session": loop_time / max(epochs_run, 1),
        "median_s_per_epoch": float(np.median(epoch_times[10:] or epoch_times)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "epochs_this_session": epochs_run,
        "resumed_from_epoch": epoch - epochs_run,
    }
    results["versions"] = versions()
    write_json_atomic(run_dir / "results.json", results)
    set_status("completed", epoch)
    wb.log({"final_vRd": hist["loss_hist_vRd"][-1]}, step=epoch - 1)
    wb.finish()
    print(
        f"{cfg.method.name}: vRd {hist['loss_hist_vRd'][0]:.3f} -> "
        f"{hist['loss_hist_vRd'][-1]:.3f} in {total:.1f} s; results in {run_dir}"
    )
    return results


def main() -> None:
    """Command-line entry: validate the method/dataset names, then hand over to Hydra."""
    try:
        precheck_argv(sys.argv, CONFIG_DIR)
    except ConfigError as exc:
        print(f"ConfigError: {exc}", file=sys.stderr)
        sys.exit(2)
    import hydra

    @hydra.main(version_base="1.3", config_path="config_experiments", config_name="config")
    def _app(cfg) -> None:
        try:
            run(cfg)
        except ConfigError as exc:
            print(f"ConfigError: {exc}", file=sys.stderr)
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                # Record the failure in the run's folder and let Hydra mark this job failed:
                # the sweep goes on with the other runs (sys.exit would stop it).
                status = {"status": "failed", "epoch": 0, "error": repr(exc), "time": time.time()}
                write_json_atomic(Path(hydra_cfg.runtime.output_dir) / "status.json", status)
                raise
            sys.exit(2)

    _app()


if __name__ == "__main__":
    main()
