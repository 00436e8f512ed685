"""Spike-train matching with one hidden layer: model, SuperSpike-style learning rule, losses.

Layout is time-major inside this module: spikes and membranes are (time, trials, batch,
neurons); the frozen input and the target are (time, batch, neurons). Everything linear in
time (synaptic and membrane filtering, the causal kernel eps and its adjoint) is a product
with a precomputed lower-triangular Toeplitz matrix of the kernel (189 x 189 is tiny), so
the learning rule has no Python loop over time or neurons. Only the spiking recursion of
each layer loops over time, three fused ops per step with trials as a batch.

Model (a = exp(-dt / tau), mem[0] = syn[0] = 0, S[t] = spike(mem[t] - threshold)):
    syn[t+1] = a_syn syn[t] + I[t]
    mem[t+1] = a_mem mem[t] (1 - S[t]) + (1 - a_mem) syn[t]        (reset_mode False)
    mem[t+1] = (a_mem mem[t] + (1 - a_mem) syn[t]) (1 - S[t])      (reset_mode True)
Because syn has no reset and no recurrence, the "drive" (1 - a_mem) syn[t] of every step is
a matrix product computed before the loop.

Stochastic spikes: S = 1 with probability F(mem - threshold), F an escape noise of
`sgtheory.spikes`. With u ~ U[0, 1), u < F(x) is the same event as x > F^-1(u), so each
layer draws all its uniforms at once and the loop compares the membrane with a noisy
threshold threshold + F^-1(u[t]); the step escape noise (deterministic) draws nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.spikes import make_escape, make_surrogate

STOCHASTIC_ESCAPES = ("sigmoid", "exponential", "superspike")
ESCAPES = ("step",) + STOCHASTIC_ESCAPES


# ----------------------------------------------------------------------------- kernels


def _toeplitz(kernel: np.ndarray) -> torch.Tensor:
    """Lower-triangular T x T matrix M[t, s] = kernel[t - s] (s <= t), float64."""
    nb_steps = kernel.shape[0]
    lag = np.arange(nb_steps)[:, None] - np.arange(nb_steps)[None, :]
    mat = np.where(lag >= 0, kernel[np.clip(lag, 0, None)], 0.0)
    return torch.from_numpy(mat)


def drive_kernel(nb_steps: int, dt: float, tau_mem: float, tau_syn: float) -> np.ndarray:
    """Kernel of (1 - a_mem) syn: input at step s gives (1 - a_mem) a_syn^(t-1-s) at t > s."""
    a_mem, a_syn = math.exp(-dt / tau_mem), math.exp(-dt / tau_syn)
    lag = np.arange(nb_steps, dtype=np.float64)
    return np.where(lag >= 1, (1.0 - a_mem) * a_syn ** np.clip(lag - 1, 0, None), 0.0)


def membrane_kernel(nb_steps: int, dt: float, tau_mem: float, tau_syn: float) -> np.ndarray:
    """Membrane potential at lag t caused by one input spike of unit weight (no reset)."""
    a_mem = math.exp(-dt / tau_mem)
    drive = drive_kernel(nb_steps, dt, tau_mem, tau_syn)
    mem = np.zeros(nb_steps)
    for t in range(1, nb_steps):  # mem[t] = a_mem mem[t-1] + drive[t-1]; runs once at set-up
        mem[t] = a_mem * mem[t - 1] + drive[t - 1]
    return mem


def eps_kernel(nb_steps: int, dt: float, tau_mem: float, tau_syn: float, eps0: float):
    """Causal kernel eps(t) = eps0 (exp(-t / tau_mem) - exp(-t / tau_syn)), t = 0, dt, ..."""
    t = np.arange(nb_steps, dtype=np.float64) * dt
    return eps0 * (np.exp(-t / tau_mem) - np.exp(-t / tau_syn))


@dataclass
class Kernels:
    """Toeplitz matrices (float32) of the drive, membrane and eps kernels."""

    drive: torch.Tensor
    membrane: torch.Tensor
    eps: torch.Tensor
    eps_t: torch.Tensor  # eps transposed (contiguous): the adjoint, time-reversed filter


def make_kernels(
    nb_steps: int,
    dt: float,
    tau_mem: float,
    tau_syn: float,
    eps0: float,
    dtype: torch.dtype = torch.float32,
) -> Kernels:
    """All filter matrices for `nb_steps` steps."""
    eps = _toeplitz(eps_kernel(nb_steps, dt, tau_mem, tau_syn, eps0))
    return Kernels(
        drive=_toeplitz(drive_kernel(nb_steps, dt, tau_mem, tau_syn)).to(dtype),
        membrane=_toeplitz(membrane_kernel(nb_steps, dt, tau_mem, tau_syn)).to(dtype),
        eps=eps.to(dtype),
        eps_t=eps.T.contiguous().to(dtype),
    )


def filt(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a (T, T) time filter to x shaped (T, ...): one matrix product."""
    return (matrix @ x.reshape(x.shape[0], -1)).reshape(x.shape)


# ------------------------------------------------------------------------------ escapes


def escape_offsets(
    escape, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor | float:
    """F^-1(u) for uniforms u of `shape`: a spike happens iff mem - threshold > F^-1(u).

    Returns 0.0 (and draws nothing) for the deterministic step escape noise.
    """
    if escape.name == "step":
        return 0.0
    u = torch.rand(shape, generator=generator, dtype=dtype)
    if escape.name == "sigmoid":
        return torch.logit(u).div_(escape.beta)
    if escape.name == "exponential":
        return torch.log(u).sub_(math.log(escape.p0)).mul_(escape.delta_u)
    if escape.name == "superspike":
        y = u.mul_(2.0).sub_(1.0)
        return y / ((1.0 - y.abs()) * escape.beta)
    raise ConfigError(f"escape noise {escape.name!r} has no inverse here")  # pragma: no cover


# ---------------------------------------------------------------------------- network


def run_layer(
    drive: torch.Tensor,
    threshold: torch.Tensor | float,
    a_mem: float,
    reset_mode: bool,
    nb_trials: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spiking recursion of one LIF layer.

    drive: (T, trials or 1, batch, N), the no-reset drive (1 - a_mem) syn[t];
    threshold: scalar or (T, trials, batch, N) noisy thresholds.
    Returns mem (T, trials, batch, N) float (the value each spike was drawn from) and
    spikes (T, trials, batch, N) bool.
    """
    nb_steps = drive.shape[0]
    shape = (nb_trials,) + tuple(drive.shape[2:])
    mem = torch.zeros((nb_steps + 1,) + shape, dtype=drive.dtype)
    spk = torch.empty((nb_steps,) + shape, dtype=torch.bool)
    scalar = not isinstance(threshold, torch.Tensor)
    for t in range(nb_steps):
        m = mem[t]
        torch.gt(m, threshold if scalar else threshold[t], out=spk[t])
        if reset_mode:
            torch.add(drive[t], m, alpha=a_mem, out=mem[t + 1]).masked_fill_(spk[t], 0.0)
        else:
            torch.add(drive[t], m.masked_fill(spk[t], 0.0), alpha=a_mem, out=mem[t + 1])
    return mem[:nb_steps], spk


@dataclass
class Net:
    """Fixed settings of the network and the learning rule."""

    dt: float
    tau_mem: float
    tau_syn: float
    threshold: float
    eps0: float
    reset_mode: bool
    kernels: Kernels

    @property
    def a_mem(self) -> float:
        return math.exp(-self.dt / self.tau_mem)


@dataclass
class Trial:
    """One forward pass: membranes and spikes of both layers, (T, trials, batch, N)."""

    mem_h: torch.Tensor
    spk_h: torch.Tensor
    mem_o: torch.Tensor
    spk_o: torch.Tensor


def forward(
    net: Net,
    drive_x: torch.Tensor,
    w_ih: torch.Tensor,
    w_ho: torch.Tensor,
    escape_h,
    escape_o,
    nb_trials: int,
    generator: torch.Generator,
) -> Trial:
    """Run the network `nb_trials` times in parallel (trials as a batch).

    drive_x: (T, batch, N_in), the frozen input filtered by the drive kernel; the hidden
    drive is then drive_x @ w_ih (linearity), for all steps in one product.
    """
    nb_steps, batch = drive_x.shape[:2]
    drive_h = (drive_x @ w_ih).unsqueeze(1)  # (T, 1, B, N_h): same for every trial
    thr_h = net.threshold + escape_offsets(
        escape_h, (nb_steps, nb_trials, batch, w_ih.shape[1]), generator, drive_x.dtype
    )
    mem_h, spk_h = run_layer(drive_h, thr_h, net.a_mem, net.reset_mode, nb_trials)
    drive_o = filt(net.kernels.drive, spk_h.to(w_ho.dtype) @ w_ho)
    thr_o = net.threshold + escape_offsets(
        escape_o, (nb_steps, nb_trials, batch, w_ho.shape[1]), generator, drive_x.dtype
    )
    mem_o, spk_o = run_layer(drive_o, thr_o, net.a_mem, net.reset_mode, nb_trials)
    return Trial(mem_h, spk_h, mem_o, spk_o)


def losses(net: Net, z: torch.Tensor, spk_o: torch.Tensor) -> tuple[float, float]:
    """(van Rossum, L2) distances, averaged over trials, batch and output neurons.

    vRd = 1/2 sum_t ((eps * z)(t) - (eps * S)(t))^2 and L2 = 1/2 sum_t (z(t) - S(t))^2;
    z is (T, batch, N), spk_o (T, trials, batch, N).
    """
    diff = z.unsqueeze(1) - spk_o.to(z.dtype)
    vrd = 0.5 * filt(net.kernels.eps, diff).square().sum(0).mean()
    l2 = 0.5 * diff.square().sum(0).mean()
    return float(vrd), float(l2)


def weight_updates(
    net: Net,
    xbar_i: torch.Tensor,
    z: torch.Tensor,
    w_ho: torch.Tensor,
    trial: Trial,
    surrogate_h,
    delta_u_o: float,
    lr_h: float,
    lr_o: float,
):
    """SuperSpike-style updates (dW_ih, dW_ho), averaged over trials, summed over batch.

    delta_o = (z - S_o) / delta_u_o;  dW_ho = lr_o sum_t xbar_h delta_o^T;
    dW_ih[i, h] = lr_h sum_t xbar_i[i](t) sigma'_h(t) (eps^T e_h)(t) with
    e_h = W_ho delta_o the back-projected error: the contraction
    sum_t delta_o(t) [eps * (sigma'_h xbar_i)](t) rewritten with the adjoint filter eps^T.
    xbar_i: (T, batch, N_in) input filtered by the membrane kernel; weights are
    (presynaptic, postsynaptic).
    """
    spk_h = trial.spk_h.to(w_ho.dtype)
    nb_trials = spk_h.shape[1]
    n_h, n_o = w_ho.shape
    delta = (z.unsqueeze(1) - trial.spk_o.to(w_ho.dtype)) / delta_u_o  # (T, R, B, N_o)
    xbar_h = filt(net.kernels.membrane, spk_h)
    dw_ho = (lr_o / nb_trials) * (xbar_h.reshape(-1, n_h).T @ delta.reshape(-1, n_o))
    err_h = filt(net.kernels.eps_t, delta) @ w_ho.T  # (T, R, B, N_h)
    sg = surrogate_h.derivative(trial.mem_h - net.threshold, spk_h)
    g = (sg * err_h).sum(1)  # (T, B, N_h): summed over trials
    dw_ih = (lr_h / nb_trials) * (xbar_i.reshape(-1, xbar_i.shape[-1]).T @ g.reshape(-1, n_h))
    return dw_ih, dw_ho


# ------------------------------------------------------------------------- data, weights


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


def make_escapes(
    stochastic: bool,
    escape_h: str,
    escape_o: str,
    beta_h: float,
    beta_o: float,
    p0: float,
    delta_u_h: float,
    delta_u_o: float,
):
    """Escape noises (hidden, output) of one mode: step for deterministic, else the named ones."""
    if not stochastic:
        return make_escape("step"), make_escape("step")
    check_choice("stochastic_escape_h", escape_h, STOCHASTIC_ESCAPES)
    check_choice("stochastic_escape_o", escape_o, STOCHASTIC_ESCAPES)
    return (
        make_escape(escape_h, beta_h, p0, delta_u_h),
        make_escape(escape_o, beta_o, p0, delta_u_o),
    )


def make_hidden_surrogate(name: str, beta_h: float, p0: float, delta_u_h: float):
    """The hidden layer's surrogate derivative (superspike, sigmoid, multilayerspiker, ...)."""
    return make_surrogate(name, beta_h, p0, delta_u_h)


def check_positive_all(settings: dict) -> None:
    """check_positive on every (name, value) pair; ints where the name says nb_/epochs."""
    for name, value in settings.items():
        integer = name.split(".")[-1].startswith(("nb_", "batch")) or name in (
            "nb_epochs",
            "logging_freq",
        )
        check_positive(name, value, integer=integer)
