"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022).

For zero-mean weights of std sigma_w onto a neuron with N Poisson inputs at rate nu, the
free membrane potential (no spikes, no reset) has variance N sigma_w^2 nu eps_hat, where
eps_hat is the integral of the squared PSP kernel. Choosing

    sigma_w = sqrt(alpha sigma_u^2 / (N nu eps_hat))                 (feedforward)
    sigma_w = sqrt((1 - alpha) sigma_u^2 / (N_rec nu eps_hat))       (recurrent)

puts the membrane fluctuations at a target std sigma_u, with a fraction alpha of the
variance from feedforward input. Without recurrence all of it is feedforward.
"""

from __future__ import annotations

import math

import torch

from sgtheory.errors import ConfigError, check_positive
from sgtheory.lif import decay


def psp_kernel(tau_mem: float, tau_syn: float, dt: float, nb_steps: int) -> torch.Tensor:
    """Membrane response mem[n] of the discrete LIF model to one unit input at step 0.

    Closed form (a_m = exp(-dt/tau_mem), a_s = exp(-dt/tau_syn), a_m != a_s):
    mem[0] = mem[1] = 0 and mem[n] = (1 - a_m) / (a_m - a_s) (a_m^(n-1) - a_s^(n-1)).
    """
    a_m, a_s = decay(tau_mem, dt), decay(tau_syn, dt)
    if math.isclose(a_m, a_s):
        raise ConfigError(f"tau_mem={tau_mem} and tau_syn={tau_syn} must differ for this kernel")
    n = torch.arange(nb_steps, dtype=torch.float64)
    kernel = (1 - a_m) / (a_m - a_s) * (a_m ** (n - 1) - a_s ** (n - 1))
    kernel[:2] = 0.0
    return kernel


def psp_eps_hat(tau_mem: float, tau_syn: float, dt: float) -> float:
    """Integral (seconds) of the squared PSP kernel of the discrete model, summed exactly.

    dt * sum_n mem[n]^2 with the closed form of `psp_kernel`, as a geometric series. It
    tends to tau_syn^2 / (2 (tau_syn + tau_mem)) as dt -> 0.
    """
    a_m, a_s = decay(tau_mem, dt), decay(tau_syn, dt)
    if math.isclose(a_m, a_s):
        raise ConfigError(f"tau_mem={tau_mem} and tau_syn={tau_syn} must differ for this kernel")
    amp = (1 - a_m) / (a_m - a_s)
    series = 1 / (1 - a_m**2) - 2 / (1 - a_m * a_s) + 1 / (1 - a_s**2)
    return dt * amp**2 * series


def fluctuation_driven_std(
    sigma_u: float, nu: float, fan_in: int, eps_hat: float, fraction: float = 1.0
) -> float:
    """Weight std putting a share `fraction` of the membrane variance at sigma_u^2."""
    check_positive("target_sigma_u", sigma_u)
    check_positive("nu", nu)
    check_positive("fan_in", fan_in, integer=True)
    check_positive("eps_hat", eps_hat)
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"alpha={fraction!r} is not valid; it must lie in [0, 1]")
    return math.sqrt(fraction * sigma_u**2 / (fan_in * nu * eps_hat))


def fluctuation_driven_init_(
    weight: torch.Tensor,
    sigma_u: float,
    nu: float,
    eps_hat: float,
    fraction: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill `weight` (out, in, *kernel) in place with N(0, sigma_w^2), fan-in = in x kernel."""
    fan_in = weight[0].numel()
    std = fluctuation_driven_std(sigma_u, nu, fan_in, eps_hat, fraction)
    with torch.no_grad():
        weight.normal_(0.0, std, generator=generator)
    return weight


def readout_init_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Readout weights: N(0, 1 / fan_in)."""
    with torch.no_grad():
        weight.normal_(0.0, 1.0 / math.sqrt(weight[0].numel()), generator=generator)
    return weight
