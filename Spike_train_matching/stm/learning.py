"""The SuperSpike-style learning rule of the spike-train-matching network, written out.

It reads what the forward pass returns (spikes and membranes of both layers); the hidden
surrogate derivative is evaluated at the hidden membrane (for MultilayerSpiker it is the
hidden spike train itself).
"""

from __future__ import annotations

import torch

from .model import Net, Trial, filt


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """SuperSpike-style updates (dW_ih, dW_ho), averaged over trials and batch.

    delta_o = (z - S_o) / delta_u_o;  dW_ho = lr_o sum_t xbar_h delta_o^T;
    dW_ih[i, h] = lr_h sum_t xbar_i[i](t) sigma'_h(t) (eps^T e_h)(t) with
    e_h = W_ho delta_o the back-projected error: the contraction
    sum_t delta_o(t) [eps * (sigma'_h xbar_i)](t) rewritten with the adjoint filter eps^T.
    xbar_i: (T, batch, N_in) input filtered by the membrane kernel; weights are
    (presynaptic, postsynaptic).
    """
    spk_h = trial.spk_h.to(w_ho.dtype)
    nb_trials, batch = spk_h.shape[1], spk_h.shape[2]
    n_h, n_o = w_ho.shape
    scale = 1.0 / (nb_trials * batch)
    delta = (z.unsqueeze(1) - trial.spk_o.to(w_ho.dtype)) / delta_u_o  # (T, R, B, N_o)
    xbar_h = filt(net.kernels.membrane, spk_h)
    dw_ho = (lr_o * scale) * (xbar_h.reshape(-1, n_h).T @ delta.reshape(-1, n_o))
    err_h = filt(net.kernels.eps_t, delta) @ w_ho.T  # (T, R, B, N_h)
    sg = surrogate_h.derivative(trial.mem_h - net.threshold, spk_h)
    g = (sg * err_h).sum(1)  # (T, B, N_h): summed over trials
    dw_ih = (lr_h * scale) * (xbar_i.reshape(-1, xbar_i.shape[-1]).T @ g.reshape(-1, n_h))
    return dw_ih, dw_ho
