"""SMORMS3 vs its published update; losses, accuracy and regularisers vs direct formulas."""

import math

import numpy as np
import pytest
import torch

from sgtheory.errors import ConfigError
from sgtheory.losses import accuracy, loss_fn
from sgtheory.optim import SMORMS3, make_optimizer
from sgtheory.regularizers import ActivityRegularizer


def smorms3_numpy(grads, p, lr, eps=1e-16):
    """Simon Funk's update, step by step, in plain numpy."""
    mem, g, g2 = np.ones_like(p), np.zeros_like(p), np.zeros_like(p)
    for grad in grads:
        r = 1 / (mem + 1)
        g = (1 - r) * g + r * grad
        g2 = (1 - r) * g2 + r * grad**2
        x = g * g / (g2 + eps)
        p = p - grad * np.minimum(lr, x) / (np.sqrt(g2) + eps)
        mem = 1 + mem * (1 - x)
    return p


def test_smorms3_matches_published_update_on_a_quadratic():
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = SMORMS3([p], lr=0.05)
    grads, p_np = [], np.zeros(3)
    for _ in range(30):
        opt.zero_grad()
        loss = ((p - target) ** 2 * torch.tensor([1.0, 3.0, 0.2], dtype=torch.float64)).sum()
        loss.backward()
        grads.append(p.grad.numpy().copy())
        opt.step()
    p_np = smorms3_numpy(grads, np.zeros(3), 0.05)
    np.testing.assert_allclose(p.detach().numpy(), p_np, rtol=1e-12)
    assert loss.item() < 5.0  # it descends
    with pytest.raises(ConfigError, match="optimizer"):
        make_optimizer("rmsprop", [p], 0.1)


def test_losses_against_direct_formulas():
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    mot = loss_fn("mot_ce")(out, labels)
    m = out.max(dim=1).values
    expected = np.mean([-(m[i, labels[i]] - torch.logsumexp(m[i], 0)).item() for i in range(4)])
    assert math.isclose(mot.item(), expected, rel_tol=1e-10)
    sos = loss_fn("sum_of_softmax")(out, labels)
    p = torch.softmax(out, dim=-1).mean(dim=1)
    expected = -np.mean([math.log(p[i, labels[i]].item()) for i in range(4)])
    assert math.isclose(sos.item(), expected, rel_tol=1e-10)
    assert accuracy(out, labels, "mot_ce") == float((m.argmax(1) == labels).double().mean())
    with pytest.raises(ConfigError, match="mot_ce"):
        loss_fn("mse")


def test_regularizers_closed_form():
    spikes = torch.zeros(2, 10, 3, 4)
    spikes[0, :9, 0, 0] = 1  # 9 spikes in one neuron of sample 0
    upper = ActivityRegularizer("upper", 2, 0.1, 7.0)
    assert math.isclose(upper(spikes).item(), 0.1 * (9 - 7) ** 2 / 24, rel_tol=1e-6)
    upper_pop = ActivityRegularizer("upper", 2, 0.1, 0.5, dims=(-2, -1))
    assert math.isclose(upper_pop(spikes).item(), 0.1 * 0.25**2 / 2, rel_tol=1e-6)
    lower = ActivityRegularizer("lower", 1, 0.05, 0.1)
    assert math.isclose(lower(spikes).item(), 0.05 * 0.1 * 23 / 24, rel_tol=1e-6)
    with pytest.raises(ConfigError, match="bound"):
        ActivityRegularizer("middle", 1, 1.0, 1.0)


@pytest.mark.parametrize("layout", ["batch_major", "time_major", "time_major_channels_last"])
def test_time_sum_of_any_spike_layout_equals_sum_over_dim_1(layout):
    """The regulariser's spike counts, summed in storage order, equal spikes.sum(dim=1)
    exactly (0/1 values), and so do the penalty and its gradient."""
    from sgtheory.regularizers import sum_over_time

    gen = torch.Generator().manual_seed(0)
    spikes = (torch.rand(6, 30, 5, 4, generator=gen) < 0.3).float()  # (batch, time, C, L)
    if layout == "time_major":
        spikes = spikes.transpose(0, 1).contiguous().transpose(0, 1)
    elif layout == "time_major_channels_last":
        spikes = spikes.permute(1, 0, 3, 2).contiguous().permute(1, 0, 3, 2)
    assert torch.equal(sum_over_time(spikes), spikes.sum(dim=1))
    reg = ActivityRegularizer("upper", 2, 0.1, 2.0, (-2, -1))
    s = spikes.detach().requires_grad_()
    penalty = reg(s)
    (grad,) = torch.autograd.grad(penalty, [s])
    s_ref = spikes.detach().requires_grad_()
    by_hand = 0.1 * torch.relu(s_ref.sum(dim=1).mean((-2, -1)) - 2.0).pow(2).mean()
    (grad_ref,) = torch.autograd.grad(by_hand, [s_ref])
    assert penalty > 0
    torch.testing.assert_close(penalty, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=0)
