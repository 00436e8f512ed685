"""Small stochastic spiking networks whose spike patterns can be enumerated.

A network holds its fixed input, readout and loss; `forward(params, spike, batch)` runs
`batch` trials and returns the loss of each (batch,). Parameters are a dict of tensors
with a leading dimension that is 1 (shared by all trials) or `batch` (one copy per trial,
for per-trial gradients). `spike` is any callable x -> spikes (see `theory.ops`), called
once per stage in the order of `stage_sizes()`.

The loss depends on the parameters only through the spikes (fixed readout), so every
estimator's gradient is that of the expected loss through the spike probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import check_choice, check_positive
from ..neurons import lif_scan_reference

LOSSES = ("output", "mse")


def readout_loss(
    counts: torch.Tensor, readout: torch.Tensor, loss: str, target: float
) -> torch.Tensor:
    """Loss per trial of the readout y = counts @ readout: y ("output") or (y - target)^2."""
    y = counts @ readout.to(counts.dtype)
    return y if loss == "output" else (y - target) ** 2


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
    inputs: torch.Tensor  # (n_in,) real-valued input
    readout: torch.Tensor  # (n_L,)
    loss: str = "output"
    target: float = 0.0

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
        s = self.inputs.to(torch.float64).expand(batch, -1)
        for layer in range(1, len(self.widths)):
            w, b = params[f"W{layer}"], params[f"b{layer}"]
            x = (w @ s.unsqueeze(-1)).squeeze(-1) + b
            s = spike(x.expand(batch, -1))
        return readout_loss(s, self.readout, self.loss, self.target)


@dataclass
class LIFNet:
    """Layers of LIF neurons (`lif_scan_reference`) driven by a fixed input current.

    current: (nb_steps, n_in); layer l gets W_l @ (input current, or the previous layer's
    spikes). The loss reads out the last layer's spike counts. Stages are layer-major:
    all steps of layer 1, then all steps of layer 2, ...
    """

    widths: tuple[int, ...]
    current: torch.Tensor  # (nb_steps, n_in)
    readout: torch.Tensor  # (n_L,)
    a_syn: float = 0.5
    a_mem: float = 0.5
    threshold: float = 1.0
    diff_reset: bool = True
    loss: str = "output"
    target: float = 0.0

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if len(self.widths) < 2 or self.current.shape[-1] != self.widths[0]:
            raise ValueError(
                f"widths={self.widths!r} is not valid for a current shaped "
                f"{tuple(self.current.shape)}; give (n_in, n_1, ...) with n_in its last size"
            )

    @property
    def nb_steps(self) -> int:
        return self.current.shape[0]

    def stage_sizes(self) -> list[int]:
        return [n for n in self.widths[1:] for _ in range(self.nb_steps)]

    def init_params(self, gen: torch.Generator, gain: float = 1.0) -> dict[str, torch.Tensor]:
        """Gaussian weights with std gain / sqrt(fan_in), float64."""
        pairs = zip(self.widths[:-1], self.widths[1:])
        return {f"W{i}": _weights((o, n), gen, gain) for i, (n, o) in enumerate(pairs, 1)}

    def forward(self, params: dict, spike, batch: int) -> torch.Tensor:
        s = self.current.to(torch.float64)  # (T, n_in)
        for layer in range(1, len(self.widths)):
            cur = s @ params[f"W{layer}"].transpose(-1, -2)  # (1 or batch, T, n_l)
            s, _ = lif_scan_reference(
                cur.expand(batch, -1, -1),
                spike,
                self.a_syn,
                self.a_mem,
                self.threshold,
                diff_reset=self.diff_reset,
            )
        return readout_loss(s.sum(1), self.readout, self.loss, self.target)
