"""Optimisers: SMORMS3 (Simon Funk, 2015) as used by stork, plus torch's SGD and Adam.

SMORMS3 keeps per parameter a memory m (initially 1) and running averages g, g2 of the
gradient and its square with rate r = 1 / (m + 1):

    g  <- (1 - r) g  + r grad
    g2 <- (1 - r) g2 + r grad^2
    x  = g^2 / (g2 + eps)
    p  <- p - grad min(lr, x) / (sqrt(g2) + eps)
    m  <- 1 + m (1 - x)
"""

from __future__ import annotations

import torch

from sgtheory.errors import check_choice, check_positive

OPTIMIZERS = ("smorms3", "adam", "sgd")


class SMORMS3(torch.optim.Optimizer):
    """Simon Funk's SMORMS3 ("squared mean over root mean squared cubed")."""

    def __init__(self, params, lr: float = 1e-3, eps: float = 1e-16):
        check_positive("lr", lr)
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["mem"] = torch.ones_like(p)
                    state["g"] = torch.zeros_like(p)
                    state["g2"] = torch.zeros_like(p)
                mem, g, g2 = state["mem"], state["g"], state["g2"]
                r = 1.0 / (mem + 1.0)
                g.mul_(1 - r).addcmul_(r, grad)
                g2.mul_(1 - r).addcmul_(r, grad * grad)
                x = g * g / (g2 + eps)
                p.sub_(grad * torch.clamp(x, max=lr) / (g2.sqrt() + eps))
                mem.mul_(1 - x).add_(1.0)
        return loss


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Optimiser by name: 'smorms3' | 'adam' | 'sgd'."""
    check_choice("optimizer", name, OPTIMIZERS)
    check_positive("lr", lr)
    if name == "smorms3":
        return SMORMS3(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)
