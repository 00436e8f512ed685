"""The spike-train-matching network: two LIF layers run by the core scan, kernels, losses.

Layout is time-major: spikes and membranes are (time, trials, batch, neurons); the frozen
input and the target are (time, batch, neurons).

Model (the core library's `scan.run` with `Net.lif`, reset "leak" or "full"; a = exp(-dt / tau),
mem[0] = syn[0] = 0, S[t] = spike(mem[t] - threshold)):
    syn[t+1] = a_syn syn[t] + I[t]
    mem[t+1] = a_mem mem[t] (1 - S[t]) + (1 - a_mem) syn[t]        (reset_mode False: "leak")
    mem[t+1] = (a_mem mem[t] + (1 - a_mem) syn[t]) (1 - S[t])      (reset_mode True: "full")
Stochastic spikes come from the escape noise of the layer's `SpikeFn` and its generator
(hidden layer first, then output, each drawing all its uniforms at once).

The learning rule (`stm.learning`) and the losses filter in time with precomputed
lower-triangular Toeplitz matrices of the kernels (189 x 189 is tiny), so they have no
Python loop over time or neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sgtheory import scan
from sgtheory.lif import LIFParams
from sgtheory.scan import readout_scan
from sgtheory.spikes import SpikeFn

# ----------------------------------------------------------------------------- kernels


def _toeplitz(kernel: np.ndarray) -> torch.Tensor:
    """Lower-triangular T x T matrix M[t, s] = kernel[t - s] (s <= t), float64."""
    nb_steps = kernel.shape[0]
    lag = np.arange(nb_steps)[:, None] - np.arange(nb_steps)[None, :]
    mat = np.where(lag >= 0, kernel[np.clip(lag, 0, None)], 0.0)
    return torch.from_numpy(mat)


def membrane_kernel(nb_steps: int, dt: float, tau_mem: float, tau_syn: float) -> np.ndarray:
    """Membrane potential at lag t caused by one input spike of unit weight (no reset).

    The model's own dynamics (the core `readout_scan`) run on a unit impulse, in float64.
    """
    impulse = torch.zeros(nb_steps, 1, dtype=torch.float64)
    impulse[0] = 1.0
    a_mem, a_syn = math.exp(-dt / tau_mem), math.exp(-dt / tau_syn)
    return readout_scan(impulse, a_syn, a_mem, time_major=True)[:, 0].numpy()


def eps_kernel(nb_steps: int, dt: float, tau_mem: float, tau_syn: float, eps0: float) -> np.ndarray:
    """Causal kernel eps(t) = eps0 (exp(-t / tau_mem) - exp(-t / tau_syn)), t = 0, dt, ...

    For tau_mem == tau_syn = tau the difference vanishes; the kernel then takes its limit
    shape, eps(t) = eps0 (t / tau) exp(-t / tau): the limit of the membrane's response to a
    unit synaptic jump, tau_syn / (tau_mem - tau_syn) (exp(-t / tau_mem) - exp(-t / tau_syn)),
    which is the difference form itself at the defaults (10 ms, 5 ms).
    """
    t = np.arange(nb_steps, dtype=np.float64) * dt
    if tau_mem == tau_syn:
        return eps0 * (t / tau_mem) * np.exp(-t / tau_mem)
    return eps0 * (np.exp(-t / tau_mem) - np.exp(-t / tau_syn))


@dataclass
class Kernels:
    """Toeplitz matrices of the membrane and eps kernels (and eps transposed, the adjoint)."""

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
        membrane=_toeplitz(membrane_kernel(nb_steps, dt, tau_mem, tau_syn)).to(dtype),
        eps=eps.to(dtype),
        eps_t=eps.T.contiguous().to(dtype),
    )


def filt(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a (T, T) time filter to x shaped (T, ...): one matrix product."""
    return (matrix @ x.reshape(x.shape[0], -1)).reshape(x.shape)


# ---------------------------------------------------------------------------- network


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

    @property
    def a_syn(self) -> float:
        return math.exp(-self.dt / self.tau_syn)

    @property
    def reset(self) -> str:
        """The core scan's reset mode: "full" (reset_mode true) or "leak"."""
        return "full" if self.reset_mode else "leak"

    @property
    def lif(self) -> LIFParams:
        """The LIF dynamics as the core library's scans take them."""
        return LIFParams(self.a_syn, self.a_mem, self.threshold, self.reset)


@dataclass
class Trial:
    """One forward pass: membranes and spikes (0/1 floats) of both layers, (T, trials, B, N)."""

    mem_h: torch.Tensor
    spk_h: torch.Tensor
    mem_o: torch.Tensor
    spk_o: torch.Tensor


def run_layer(
    net: Net, current: torch.Tensor, spike_fn: SpikeFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, mem) of one LIF layer driven by `current` (T, trials, batch, N), core scan."""
    with torch.no_grad():
        return scan.run(current, spike_fn, net.lif, time_major=True)


def forward(
    net: Net,
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_ho: torch.Tensor,
    spike_h: SpikeFn,
    spike_o: SpikeFn,
    nb_trials: int,
) -> Trial:
    """Run the network `nb_trials` times in parallel (trials as a batch).

    x: (T, batch, N_in) frozen input spikes (0/1 floats); weights are (pre, post). The
    hidden current x @ w_ih is the same in every trial; the spikes differ through the
    escape noise of `spike_h` / `spike_o` (drawn from their generator).
    """
    cur_h = (x @ w_ih).unsqueeze(1).expand(-1, nb_trials, -1, -1)
    spk_h, mem_h = run_layer(net, cur_h, spike_h)
    spk_o, mem_o = run_layer(net, spk_h @ w_ho, spike_o)
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
