"""Classification losses on readout potentials (batch, time, classes), and accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgtheory.errors import check_choice

LOSS_TYPES = ("mot_ce", "sum_of_softmax")


def max_over_time_ce(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax over each class's maximum potential over time."""
    return F.cross_entropy(out.max(dim=1).values, labels)


def sum_of_softmax_ce(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax at every step, averaged over time, then the negative log-likelihood."""
    log_p = torch.logsumexp(F.log_softmax(out, dim=-1), dim=1) - torch.log(
        torch.tensor(float(out.shape[1]), dtype=out.dtype, device=out.device)
    )
    return F.nll_loss(log_p, labels)


def class_scores(out: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Per-class scores (batch, classes) whose argmax is the prediction under `loss_type`."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    if loss_type == "mot_ce":
        return out.max(dim=1).values
    return F.softmax(out, dim=-1).mean(dim=1)


def loss_fn(loss_type: str):
    """The loss function of a `loss_type` setting."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    return max_over_time_ce if loss_type == "mot_ce" else sum_of_softmax_ce


def accuracy(out: torch.Tensor, labels: torch.Tensor, loss_type: str = "mot_ce") -> float:
    """Fraction of samples whose predicted class equals the label."""
    return float((class_scores(out, loss_type).argmax(dim=-1) == labels).float().mean())
