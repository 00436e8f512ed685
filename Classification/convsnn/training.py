"""One training epoch: shuffled batches, loss + activity penalty, backward, optimiser step."""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from sgtheory.layers import SpikingNetwork
from sgtheory.losses import accuracy, loss_fn
from sgtheory.regularizers import ActivityRegularizer, total_penalty

from .data import Split
from .settings import REGULARIZER_TERMS


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


def regularizers(cfg: Any) -> list[ActivityRegularizer]:
    """The active (strength > 0) activity regularisers of `cfg.regularizer`."""
    regs = []
    for term, (bound, order) in REGULARIZER_TERMS.items():
        spec = cfg.regularizer[term]
        if spec.strength > 0:
            dims = tuple(spec.dims) if spec.dims else None
            regs.append(
                ActivityRegularizer(bound, order, float(spec.strength), float(spec.threshold), dims)
            )
    return regs


def train_epoch(
    net: SpikingNetwork,
    optimizer: torch.optim.Optimizer,
    split: Split,
    cfg: Any,
    shuffle: torch.Generator,
    regs: list[ActivityRegularizer],
    epoch: int,
    bar: tqdm | None = None,
) -> dict[str, float]:
    """Train one epoch; return mean loss (task loss), penalty and accuracy over samples.

    Raises NonFiniteLoss (before the optimiser step) if a batch loss is not finite.
    """
    lossf = loss_fn(cfg.loss_type)
    order = torch.randperm(len(split), generator=shuffle)
    total, loss_sum, reg_sum, correct = 0, 0.0, 0.0, 0.0
    for start in range(0, len(split), int(cfg.batch_size)):
        x, y = split.batch(order[start : start + int(cfg.batch_size)])
        out, spikes = net(x)
        task = lossf(out, y)
        penalty = total_penalty(regs, spikes) if regs else task.new_zeros(())
        loss = task + penalty
        del spikes  # the float spike trains are not needed for backward: ~1 GB less on SHD
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the training loss became {value} in epoch {epoch + 1}, batch "
                f"{start // int(cfg.batch_size) + 1} (method.lr={cfg.method.lr}, "
                f"optimizer={cfg.optimizer}); lower method.lr or change the optimizer"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = int(y.shape[0])
        total += n
        loss_sum += float(task.detach()) * n
        reg_sum += float(penalty.detach()) * n
        correct += accuracy(out.detach(), y, cfg.loss_type) * n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
    return {"loss": loss_sum / total, "reg": reg_sum / total, "acc": correct / total}
