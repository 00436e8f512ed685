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
    raster = chan.T < out_prob
    if raster.shape != (nb_steps, nb_outputs):
        raise ConfigError(
            f"dataset.data_path={str(path)!r} is {chan.shape[0]} rows x {chan.shape[1]} columns;"
            f" the network needs {nb_outputs} rows (dataset.nb_outputs) x {nb_steps} columns "
            "(dataset.nb_steps)"
        )
    return raster


def poisson_input(
    nb_steps: int, batch: int, nb_inputs: int, rate: float, dt: float, generator: torch.Generator
) -> torch.Tensor:
    """Frozen Poisson input (T, batch, N_in) bool: a spike with probability rate * dt."""
    return torch.rand((nb_steps, batch, nb_inputs), generator=generator) < rate * dt


def init_weights(
    n_pre: int,
    n_post: int,
    sigma_u: float,
    rate: float,
    tau_mem: float,
    tau_syn: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Centred normal weights, std sigma_u / sqrt(N nu eps_hat).

    eps_hat = tau_syn^2 / (2 (tau_syn + tau_mem)); N the fan-in, nu the input rate.
    """
    eps_hat = tau_syn**2 / (2.0 * (tau_syn + tau_mem))
    std = sigma_u / math.sqrt(n_pre * rate * eps_hat)
    return std * torch.randn((n_pre, n_post), generator=generator)
