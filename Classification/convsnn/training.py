"""One training epoch: shuffled batches, loss + activity penalty, backward, optimiser step."""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from sgruns.folder import RunFolder
from sgtheory.errors import NonFiniteError
from sgtheory.layers import SpikingNetwork
from sgtheory.losses import accuracy, loss_fn
from sgtheory.regularizers import ActivityRegularizer, total_penalty

from .data import Split, mean_over_batches
from .model import init_settings

# regulariser term -> (bound, order) of its penalty on the hidden layers' spike counts
REGULARIZER_TERMS = {"upper_l2": ("upper", 2), "lower_l1": ("lower", 1), "lower_l2": ("lower", 2)}


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
    """Train one epoch; return mean loss (task loss), penalty and accuracy over its batches,
    averaged as `split.average` (the progress bar shows means over samples), each hidden
    layer's spike count ("spikes") and how far the readout of any sample lay from that of
    the epoch's first ("readout_spread": 0 when the output does not depend on the input)
    and the most spikes each layer could have emitted ("possible": one per neuron and step).

    Raises NonFiniteError if a batch loss is not finite (before the optimiser step) or if
    after a step any gradient, weight or optimiser state is not (see `check_step`).
    """
    lossf = loss_fn(cfg.loss_type)
    order = torch.randperm(len(split), generator=shuffle)
    total, loss_sum, correct = 0, 0.0, 0.0
    batches: dict[str, list[float]] = {"loss": [], "reg": [], "acc": []}
    sizes: list[int] = []
    spikes, possible = [0.0] * len(net.hidden), [0.0] * len(net.hidden)
    spread, first = 0.0, None  # how far any sample's readout lies from the epoch's first
    for start in range(0, len(split), int(cfg.batch_size)):
        x, y = split.batch(order[start : start + int(cfg.batch_size)])
        out, counts = net(x, counts=True)  # counts: no layer's spike trains kept (memory)
        for i, c in enumerate(counts):
            spikes[i] += float(c.detach().sum())
            possible[i] += float(c.numel() * x.shape[1])
        first = out.detach()[:1].clone() if first is None else first
        spread = max(spread, float((out.detach() - first).abs().max()))
        task = lossf(out, y)
        penalty = total_penalty(regs, counts, counted=True) if regs else task.new_zeros(())
        loss = task + penalty
        del counts
        value = float(loss.detach())
        where = f"in epoch {epoch + 1}, batch {start // int(cfg.batch_size) + 1}"
        if not math.isfinite(value):
            _nonfinite_loss(cfg, value, float(task.detach()), epoch == 0 and start == 0, where)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        check_step(net, optimizer, where, _hint(cfg))
        n = int(y.shape[0])
        sizes.append(n)
        batches["loss"].append(float(task.detach()))
        batches["reg"].append(float(penalty.detach()))
        batches["acc"].append(accuracy(out.detach(), y, cfg.loss_type))
        total += n
        loss_sum += batches["loss"][-1] * n
        correct += batches["acc"][-1] * n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
    means = {k: mean_over_batches(v, sizes, split.average) for k, v in batches.items()}
    return {**means, "spikes": spikes, "possible": possible, "readout_spread": spread}


def _nonfinite_loss(cfg: Any, value: float, task: float, first: bool, where: str) -> None:
    """NonFiniteError naming the settings to blame: the activity penalty's if the task loss
    is finite, the initial weights' before the first step (the learning rate has not acted
    yet), else the learning rate's."""
    hint = init_settings(cfg) if first else _hint(cfg)
    what = "training loss"
    if math.isfinite(task):
        hint, what = _penalty_hint(cfg), "activity penalty"
    raise NonFiniteError(f"{hint}: the {what} became {value} {where}")


def _penalty_hint(cfg: Any) -> str:
    """The active regulariser terms' settings, `<setting>=<value>, ...`."""
    terms = [t for t in REGULARIZER_TERMS if cfg.regularizer[t].strength > 0]
    return ", ".join(
        f"regularizer.{t}.strength={cfg.regularizer[t].strength}, "
        f"regularizer.{t}.threshold={cfg.regularizer[t].threshold}"
        for t in terms
    )


def _hint(cfg: Any) -> str:
    return f"method.lr={cfg.method.lr} (optimizer={cfg.optimizer})"


def check_step(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, where: str, hint: str
) -> None:
    """NonFiniteError if a gradient, weight or optimiser state holds a NaN or an infinity.

    One max-abs reduction per tensor and one synchronisation per step. Non-finite weights
    can leave the loss finite (NaN membranes never cross the threshold: a silent network),
    so the loss alone does not show them. Gradients are named first: they explain the rest.
    """
    params = list(net.named_parameters())
    names = {id(p): n for n, p in params}
    named = [(f"the gradient of {n}", p.grad) for n, p in params]
    named += [(f"the weight {n}", p) for n, p in params]
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                named.append((f"the optimiser's {key} of {names.get(id(param), '?')}", value))
    RunFolder.check_finite(named, where, hint)
