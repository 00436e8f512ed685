"""Small stochastic spiking networks whose spike patterns can be enumerated.

A network holds its fixed input, readout and loss; `forward(params, spike, batch)` runs
`batch` trials and returns the loss of each (batch,). Parameters are a dict of tensors
with a leading dimension that is 1 (shared by all trials) or `batch` (one copy per trial,
for per-trial gradients). `spike` is any callable x -> spikes (see `theory.ops`), called
once per stage in the order of `stage_sizes()`.

The loss depends on the parameters only through the spikes (fixed readout), so every
estimator's gradient is that of the expected loss through the spike probabilities.

A network may hold several input rows (and one target per row): trial r of a batch then
sees input row r mod rows, so a batch of `rows` x m trials covers every input m times in
blocks (the learning study's tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgtheory.errors import check_choice, check_positive
from sgtheory.lif import lif_scan_reference

LOSSES = ("output", "mse", "error")


def rows_for(value: torch.Tensor | float, batch: int) -> torch.Tensor | float:
    """A per-row tensor (rows, ...) tiled block-wise to `batch` rows; a scalar as it is."""
    if not torch.is_tensor(value) or value.dim() == 0:
        return value
    if batch % value.shape[0]:
        raise ValueError(f"a batch of {batch} is not a whole number of {value.shape[0]} rows")
    return value.repeat(batch // value.shape[0], *([1] * (value.dim() - 1)))


def readout_loss(
    counts: torch.Tensor,
    readout: torch.Tensor,
    loss: str,
    target: torch.Tensor | float,
    nb_terms: int = 1,
) -> torch.Tensor:
    """Loss per trial of the readout y = counts @ readout.

    "output": y; "mse": (y - target)^2; "error": (1 - 2 target) y + target nb_terms, which
    for 0/1 spikes and a 0/1 target is the number of the `nb_terms` read-out spikes that
    differ from the target (linear in the spikes).
    """
    y = counts @ readout.to(counts.dtype)
    if loss == "output":
        return y
    target = rows_for(target, y.shape[0])
    if loss == "mse":
        return (y - target) ** 2
    return (1 - 2 * target) * y + target * nb_terms


def _weights(shape, gen, gain: float) -> torch.Tensor:
    fan_in = shape[-1]
    w = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    return w * (gain / math.sqrt(fan_in))


@dataclass
class BinaryNet:
    """Memoryless binary units: s_l ~ Bernoulli(p(W_l s_{l-1} + b_l)), s_0 = `inputs`.

    widths = (n_in, n_1, ..., n_L); the loss reads out the last layer's spikes.
    """

    widths: tuple[int, ...]
    inputs: torch.Tensor  # (n_in,) real-valued input, or (rows, n_in)
    readout: torch.Tensor  # (n_L,)
    loss: str = "output"
    target: torch.Tensor | float = 0.0  # a number, or (rows,) with the input rows

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if len(self.widths) < 2:
            raise ValueError(f"widths={self.widths!r} is not valid; give (n_in, n_1, ...)")
        for width in self.widths:
            check_positive("width", width, integer=True)

    def stage_sizes(self) -> list[int]:
        return list(self.widths[1:])

    def init_params(
        self, gen: torch.Generator, gain: float = 1.0, bias: float = 0.5
    ) -> dict[str, torch.Tensor]:
        """Gaussian weights (std gain / sqrt(fan_in)) and biases (std `bias`), float64."""
        params = {}
        for layer, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:]), 1):
            params[f"W{layer}"] = _weights((n_out, n_in), gen, gain)
            params[f"b{layer}"] = bias * torch.randn((1, n_out), generator=gen, dtype=torch.float64)
        return params

    def forward(self, params: dict, spike, batch: int) -> torch.Tensor:
        s = self.inputs.to(torch.float64)
        s = (rows_for(s, batch) if s.dim() == 2 else s).expand(batch, -1)
        for layer in range(1, len(self.widths)):
            w, b = params[f"W{layer}"], params[f"b{layer}"]
            x = (w @ s.unsqueeze(-1)).squeeze(-1) + b
            s = spike(x.expand(batch, -1))
        return readout_loss(s, self.readout, self.loss, self.target)


@dataclass
class LIFNet:
    """Layers of LIF neurons (`lif_scan_reference`) driven by a fixed input current.

    current: (nb_steps, n_in) or (rows, nb_steps, n_in); layer l gets W_l @ (input current,
    or the previous layer's spikes), plus a constant current b_l with `bias`. The loss reads
    out the last layer's spike counts over its last `window` steps (all steps if None).
    Stages are layer-major: all steps of layer 1, then all steps of layer 2, ...
    """

    widths: tuple[int, ...]
    current: torch.Tensor  # (nb_steps, n_in) or (rows, nb_steps, n_in)
    readout: torch.Tensor  # (n_L,)
    a_syn: float = 0.5
    a_mem: float = 0.5
    threshold: float = 1.0
    diff_reset: bool = True
    loss: str = "output"
    target: torch.Tensor | float = 0.0  # a number, or (rows,) with the current rows
    reset: str = "full"
    bias: bool = False
    window: int | None = None

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if len(self.widths) < 2 or self.current.shape[-1] != self.widths[0]:
            raise ValueError(
                f"widths={self.widths!r} is not valid for a current shaped "
                f"{tuple(self.current.shape)}; give (n_in, n_1, ...) with n_in its last size"
            )

    @property
    def nb_steps(self) -> int:
        return self.current.shape[-2]

    def stage_sizes(self) -> list[int]:
        return [n for n in self.widths[1:] for _ in range(self.nb_steps)]

    def init_params(self, gen: torch.Generator, gain: float = 1.0) -> dict[str, torch.Tensor]:
        """Gaussian weights with std gain / sqrt(fan_in), float64."""
        pairs = zip(self.widths[:-1], self.widths[1:])
        params = {}
        for i, (n, o) in enumerate(pairs, 1):
            params[f"W{i}"] = _weights((o, n), gen, gain)
            if self.bias:  # after the weights: the weights do not depend on `bias`
                params[f"b{i}"] = torch.zeros((1, 1, o), dtype=torch.float64)
        return params

    def forward(self, params: dict, spike, batch: int) -> torch.Tensor:
        s = self.current.to(torch.float64)  # (T, n_in) or (rows, T, n_in)
        if s.dim() == 3:
            s = rows_for(s, batch)
        for layer in range(1, len(self.widths)):
            cur = s @ params[f"W{layer}"].transpose(-1, -2)  # (1 or batch, T, n_l)
            if self.bias:
                cur = cur + params[f"b{layer}"]
            s, _ = lif_scan_reference(
                cur.expand(batch, -1, -1),
                spike,
                self.a_syn,
                self.a_mem,
                self.threshold,
                reset=self.reset,
                diff_reset=self.diff_reset,
            )
        window = self.nb_steps if self.window is None else self.window
        counts = s[:, self.nb_steps - window :].sum(1)
        return readout_loss(counts, self.readout, self.loss, self.target, window)


def two_unit_chain(
    w1: float = 0.7, b1: float = -0.2, w2: float = -0.9, b2: float = 0.4, x0: float = 1.3
) -> tuple[BinaryNet, dict]:
    """Two binary units in a chain, x0 -> s1 -> s2, loss L = s2: the network whose moments
    the README and the tests write out by hand."""
    net = BinaryNet((1, 1, 1), torch.tensor([x0], dtype=torch.float64), torch.tensor([1.0]))
    params = {
        name: torch.tensor(value, dtype=torch.float64).reshape(shape)
        for name, value, shape in (
            ("W1", w1, (1, 1, 1)),
            ("b1", b1, (1, 1)),
            ("W2", w2, (1, 1, 1)),
            ("b2", b2, (1, 1)),
        )
    }
    return net, params
