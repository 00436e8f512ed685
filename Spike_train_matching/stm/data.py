"""Data and initial weights: the target raster from an image, frozen Poisson input, weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from sgtheory.errors import ConfigError


def load_target(
    path: str | Path, out_prob: float, nb_steps: int, nb_outputs: int, dataset: str = "dataset"
) -> np.ndarray:
    """Target raster (nb_steps, nb_outputs) bool from an image file.

    First channel, transposed so columns are time steps; a spike where pixel < out_prob
    (pixel values as matplotlib reads them: floats in [0, 1] for PNG).
    """
    import matplotlib.image as mpimg

    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"dataset.data_path={str(path)!r} is a directory, not a file; give the path of an "
            "image file (PNG) in it"
        )
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"dataset.data_path={str(path)!r} is not a regular file (a device or a pipe); give "
            "the path of an image file (PNG)"
        )
    if not path.is_file():
        hint = ""
        if dataset == "oxford":
            hint = (
                " The paper's target (a photo of the Radcliffe Camera, Oxford) is not shipped: "
                "download it from the paper's repository and set dataset.data_path to it."
            )
        raise ConfigError(f"dataset.data_path={str(path)!r} does not exist.{hint}")
    try:
        img = np.asarray(mpimg.imread(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a config problem
        msg = f"dataset.data_path={str(path)!r} is not a readable image: {exc}"
        raise ConfigError(msg) from exc
    chan = img if img.ndim == 2 else img[..., 0]
    if chan.dtype.kind in "ui":  # e.g. JPEG read as uint8
        chan = chan / float(np.iinfo(chan.dtype).max)
    raster = chan.T.astype(np.float64) < out_prob  # float64: a tiny out_prob is not 0
    if raster.shape != (nb_steps, nb_outputs):
        raise ConfigError(
            f"dataset.data_path={str(path)!r} is {chan.shape[0]} rows x {chan.shape[1]} columns;"
            f" the network needs {nb_outputs} rows (dataset.nb_outputs) x {nb_steps} columns "
            "(dataset.nb_steps)"
        )
    check_target(raster, chan, out_prob, path)
    return raster


def check_target(raster: np.ndarray, pixels: np.ndarray, out_prob: float, path: Path) -> None:
    """A target with no spike or with a spike everywhere is degenerate: refused.

    Names out_prob (and the pixel range that a useful out_prob lies in), or the image itself
    where every pixel has the same value.
    """
    if raster.any() and not raster.all():
        return
    low, high = float(np.min(pixels)), float(np.max(pixels))
    what = "a spike in every step of every output" if raster.all() else "no spike at all"
    if low == high:
        raise ConfigError(
            f"dataset.data_path={str(path)!r} is not a usable target: every pixel is {low:.3g}, "
            f"so the target has {what}; give an image with dark and light pixels"
        )
    raise ConfigError(
        f"out_prob={out_prob!r} is not valid for dataset.data_path={str(path)!r}: a spike is "
        f"placed where a pixel is below out_prob, so the target would have {what}; choose "
        f"out_prob above {low:.3g} (the darkest pixel) and at most {high:.3g} (the lightest)"
    )


def poisson_input(
    nb_steps: int, batch: int, nb_inputs: int, rate: float, dt: float, generator: torch.Generator
) -> torch.Tensor:
    """Frozen Poisson input (T, batch, N_in) bool: a spike with probability rate * dt."""
    return torch.rand((nb_steps, batch, nb_inputs), generator=generator) < rate * dt


def log_init_std(n_pre: int, sigma_u: float, rate: float, tau_mem: float, tau_syn: float) -> float:
    """log of the initial weights' std sigma_u / sqrt(N nu eps_hat), computed in logs so that
    no intermediate over- or underflows; eps_hat = tau_syn^2 / (2 (tau_syn + tau_mem))."""
    log_ts, log_tm = math.log(tau_syn), math.log(tau_mem)
    log_eps_hat = 2 * log_ts - math.log(2.0) - float(np.logaddexp(log_ts, log_tm))
    return math.log(sigma_u) - 0.5 * (math.log(n_pre) + math.log(rate) + log_eps_hat)


def init_weights(
    n_pre: int,
    n_post: int,
    sigma_u: float,
    rate: float,
    tau_mem: float,
    tau_syn: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Centred normal weights, std sigma_u / sqrt(N nu eps_hat) (`log_init_std`).

    eps_hat = tau_syn^2 / (2 (tau_syn + tau_mem)); N the fan-in, nu the input rate.
    """
    std = math.exp(log_init_std(n_pre, sigma_u, rate, tau_mem, tau_syn))
    return std * torch.randn((n_pre, n_post), generator=generator)
