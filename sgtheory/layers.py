"""Spiking layers (dense and 1-D convolutional LIF), the readout, and a feedforward stack.

Every layer takes and returns tensors shaped (batch, time, ...). The feedforward input of
a layer does not depend on its state, so it is computed for all time steps at once (one
matmul or convolution over batch x time); only the recurrence runs step by step, by the
backend that ``sgtheory.scan`` chooses. `reference=True` runs the plain baseline instead:
each convolution once per time step and the neuron update through autograd (`lif.reference`).

`time_major=True` makes a layer take and return (time, batch, ...) tensors:
`SpikingNetwork` uses it between layers so that no layer has to transpose its data.

Connection delays (stork's timing): `input_delay=1` makes a layer's feedforward current
reach its synapses one step later (current[t] = W x[t-1], zero at step 0); `rec_delay=2`
does the same for the recurrent convolution (`sgtheory.lif.LIFParams`). The readout
takes `input_delay`, `initial_mem` and `after_update`. The defaults (0, 1; 0, 0.0, False)
are the undelayed model.
"""

from __future__ import annotations

import torch
from torch import nn

from sgtheory import scan
from sgtheory.errors import ConfigError, check_positive
from sgtheory.lif import LIFParams, decay, delay_in_time
from sgtheory.regularizers import sum_over_time
from sgtheory.spikes import SpikeFn

LOW_PRECISION = (torch.bfloat16, torch.float16)  # autocast dtypes; dynamics run in float32


def _check_input_delay(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"input_delay={steps!r} is not valid; it must be an integer >= 0")
    return steps


def conv_output_length(length: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a 1-D convolution, or a ConfigError if the kernel does not fit."""
    if kernel > length + 2 * padding:
        raise ConfigError(
            f"kernel_size={kernel} is larger than its input of length {length} "
            f"(padding {padding}); use a smaller kernel, more padding or fewer strides"
        )
    return (length + 2 * padding - kernel) // stride + 1


class LIFLayer(nn.Module):
    """Shared LIF part: the LIF parameters (`params`, from the time constants, threshold,
    reset and delays) and the spike operation."""

    def __init__(
        self,
        spike_fn: SpikeFn,
        tau_mem: float,
        tau_syn: float,
        dt: float,
        threshold: float = 1.0,
        reset: str = "full",
        diff_reset: bool = False,
        input_delay: int = 0,
        rec_delay: int = 1,
    ):
        super().__init__()
        self.spike_fn = spike_fn
        rest = dict(threshold=threshold, reset=reset, diff_reset=diff_reset, rec_delay=rec_delay)
        self.params = LIFParams.from_time_constants(tau_mem, tau_syn, dt, **rest)
        self.input_delay = _check_input_delay(input_delay)  # steps added to the feedforward path
        # Keep the membrane potential of the last call (batch, time, ...) for recording and
        # plots. Off by default: holding it would keep a whole batch's potentials alive
        # through the next training step.
        self.record_mem = False
        self.last_mem: torch.Tensor | None = None

    def run_neurons(
        self,
        current: torch.Tensor,
        rec_weight: torch.Tensor | None,
        reference: bool,
        time_major: bool,
        input_delay: int = 0,
    ) -> torch.Tensor:
        """Spikes of the neurons driven by `current`, shifted `input_delay` steps later in
        time inside the scan (`scan.run`)."""
        spikes, mem = scan.run(
            current.float() if current.dtype in LOW_PRECISION else current,  # see autocast
            self.spike_fn,
            self.params,
            rec_weight,
            time_major,
            input_delay,
            backend="reference" if reference else None,
        )
        if self.record_mem:
            self.last_mem = mem.transpose(0, 1) if time_major else mem  # (batch, time, ...)
        return spikes


class DenseLIFLayer(LIFLayer):
    """Fully connected LIF layer: (batch, time, n_in) -> spikes (batch, time, n_out)."""

    def __init__(self, n_in: int, n_out: int, spike_fn: SpikeFn, **lif):
        super().__init__(spike_fn, **lif)
        check_positive("nb_hidden", n_out, integer=True)
        self.weight = nn.Parameter(torch.empty(n_out, n_in))

    def forward(
        self, x: torch.Tensor, reference: bool = False, time_major: bool = False
    ) -> torch.Tensor:
        current = delay_in_time(
            x.flatten(2) @ self.weight.t(), self.input_delay, int(not time_major)
        )
        return self.run_neurons(current, None, reference, time_major)


class ConvLIFLayer(LIFLayer):
    """1-D convolutional LIF layer with an optional recurrent convolution.

    Input (batch, time, channels, length) -> spikes (batch, time, filters, length_out).
    The recurrent convolution has stride 1 and padding kernel // 2 (size-preserving).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        spike_fn: SpikeFn,
        stride: int = 1,
        padding: int = 0,
        recurrent_kernel: int | None = None,
        **lif,
    ):
        super().__init__(spike_fn, **lif)
        for name, value in [
            ("nb_filters", out_channels),
            ("kernel_size", kernel_size),
            ("stride", stride),
        ]:
            check_positive(name, value, integer=True)
        if padding < 0:
            raise ConfigError(f"padding={padding!r} is not valid; it must be >= 0")
        self.stride, self.padding = stride, padding
        # True when the input is known to be spikes (set by SpikingNetwork for every layer
        # after the first); None lets the convolution check.
        self.input_is_spikes: bool | None = None
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.rec_weight = None
        if recurrent_kernel:
            if recurrent_kernel % 2 != 1:
                raise ConfigError(f"recurrent_kernel={recurrent_kernel} must be odd")
            self.rec_weight = nn.Parameter(
                torch.empty(out_channels, out_channels, recurrent_kernel)
            )

    def output_length(self, length: int) -> int:
        return conv_output_length(length, self.weight.shape[-1], self.stride, self.padding)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv1d(x, self.weight, stride=self.stride, padding=self.padding)

    def _conv_all_steps(self, x: torch.Tensor) -> torch.Tensor:
        # the current, and so the spikes, stay channels-last on CPU: the next convolution
        # then reads its windows in place (scan.use_channels_last); the scan runs on any
        # such layout, recurrent or not.
        cl = scan.use_channels_last(x.device)
        return scan.conv1d(
            x, self.weight, self.stride, self.padding, self.input_is_spikes, channels_last=cl
        )

    def forward(
        self, x: torch.Tensor, reference: bool = False, time_major: bool = False
    ) -> torch.Tensor:
        length = self.output_length(x.shape[-1])  # clear error if the kernel does not fit
        time_dim = 0 if time_major else 1
        # fast path: the scan reads the current late (no copy); otherwise the delay is
        # applied to whichever of input and current is smaller (same result: the
        # convolution acts on each step alone and maps zero to zero)
        scan_delay = 0 if reference else self.input_delay
        delay_input = not scan_delay and x[0, 0].numel() <= self.weight.shape[0] * length
        if delay_input:
            x = delay_in_time(x, self.input_delay, time_dim)
        if reference:  # baseline: one convolution per time step
            steps = x.shape[time_dim]
            current = torch.stack(
                [self._conv(x.select(time_dim, t)) for t in range(steps)], dim=time_dim
            )
        else:  # all time steps in one convolution over (batch x time)
            current = self._conv_all_steps(x.reshape(-1, *x.shape[2:]))
            current = current.reshape(*x.shape[:2], *current.shape[1:])
        if not delay_input and not scan_delay:
            current = delay_in_time(current, self.input_delay, time_dim)
        return self.run_neurons(current, self.rec_weight, reference, time_major, scan_delay)


class Readout(nn.Module):
    """Non-spiking leaky integrator readout: (batch, time, ...) -> potentials (batch, time, n).

    `input_delay`, `initial_mem`, `after_update`: see `sgtheory.lif.readout_reference` and
    the module docstring; stork's readout is (1, -1e-3, True).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        tau_mem: float,
        tau_syn: float,
        dt: float,
        input_delay: int = 0,
        initial_mem: float = 0.0,
        after_update: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.a_mem = decay(tau_mem, dt)
        self.a_syn = decay(tau_syn, dt)
        self.input_delay = _check_input_delay(input_delay)
        self.initial_mem, self.after_update = float(initial_mem), bool(after_update)

    def forward(
        self, x: torch.Tensor, reference: bool = False, time_major: bool = False
    ) -> torch.Tensor:
        flat, weight = self._features(x)
        # as W (x^T) rather than x W^T: with only n_out (e.g. 15) columns, the product and
        # its input gradient (W^T dL/dcur^T) run about 1.7x faster this way round
        current = (weight @ flat.reshape(-1, flat.shape[-1]).t()).t()
        current = current.reshape(*flat.shape[:-1], current.shape[-1])
        if current.dtype in LOW_PRECISION:  # the product ran under autocast
            current = current.float()
        current = delay_in_time(current, self.input_delay, 0 if time_major else 1)
        return scan.readout_scan(
            current,
            self.a_syn,
            self.a_mem,
            time_major,
            self.initial_mem,
            self.after_update,
            fast=not reference,
        )

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x flattened to (time, batch, features) and the weight with its columns in the
        same order: channels-last conv spikes (storage (..., positions, channels)) are read
        in storage order, with the weight's columns permuted, instead of being copied."""
        if x.dim() == 4 and x.stride(-2) == 1 and x.stride(-1) == x.shape[-2] > 1:
            n_out, channels, length = self.weight.shape[0], x.shape[-2], x.shape[-1]
            weight = self.weight.view(n_out, channels, length).transpose(1, 2)
            return x.transpose(-1, -2).flatten(2), weight.reshape(n_out, -1)
        return x.flatten(2), self.weight


class SpikingNetwork(nn.Module):
    """Hidden spiking layers followed by a readout; keeps each hidden layer's spikes."""

    def __init__(
        self, hidden: list[nn.Module], readout: Readout, autocast: torch.dtype | None = None
    ):
        super().__init__()
        self.hidden = nn.ModuleList(hidden)
        self.readout = readout
        # e.g. torch.bfloat16: convolutions and weight products in that dtype (autocast),
        # neuron and readout dynamics, outputs and weights in float32
        self.autocast = autocast
        for layer in self.hidden[1:]:
            if isinstance(layer, ConvLIFLayer):
                layer.input_is_spikes = True

    def forward(
        self, x: torch.Tensor, reference: bool = False, counts: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return (readout potentials (batch, time, classes), [spikes of each hidden layer]).

        `x` is (batch, time, ...); internally the layers run time-major, and the returned
        tensors are (batch, time, ...) views of their time-major results. With
        counts=True the list holds each layer's spike counts instead
        (`regularizers.sum_over_time`, the same numbers, with their graph), taken as soon
        as the layer has run: then no layer's float spike trains outlive the next layer's
        forward pass (the convolution keeps large ones as booleans), which lowers the
        peak memory of training by about a gigabyte on SHD.
        """
        x = x.transpose(0, 1)
        spikes = []
        low = self.autocast is not None
        with torch.autocast(x.device.type, dtype=self.autocast, enabled=low):
            for layer in self.hidden:
                x = layer(x, reference=reference, time_major=True)
                spikes.append(self._counts(x.transpose(0, 1)) if counts else x.transpose(0, 1))
            out = self.readout(x, reference=reference, time_major=True)
        return out.transpose(0, 1), spikes

    @staticmethod
    def _counts(spikes: torch.Tensor) -> torch.Tensor:
        """Spike counts per sample and unit (sum over time), with autocast off."""
        with torch.autocast(spikes.device.type, enabled=False):
            return sum_over_time(spikes)

    def set_spike_fns(self, spike_fns: list[SpikeFn]) -> None:
        """Swap the spike operation of every hidden layer (e.g. to evaluate another method)."""
        for layer, fn in zip(self.hidden, spike_fns, strict=True):
            layer.spike_fn = fn
