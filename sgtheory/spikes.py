"""The spiking nonlinearity: escape noise (forward) x surrogate derivative (backward).

A spike operation is a pair of small objects, bound per layer instance:

* an escape noise gives the probability of a spike at x = U - theta, and draws spikes:
  ``step`` (deterministic threshold), ``sigmoid``, ``exponential``, ``superspike``;
* a surrogate derivative replaces dS/dx in the backward pass:
  ``superspike``, ``sigmoid``, ``scaled_sigmoid``, ``exponential``, ``multilayerspiker``.

``SpikeFn(escape, surrogate, generator)`` binds them into one autograd operation. There is
no class-level or global mutable state: two layers with different settings coexist.
The named methods of the paper's configs are one table, ``METHODS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError, check_positive

# --------------------------------------------------------------------------- escape noise


@dataclass(frozen=True)
class Step:
    """Deterministic threshold: S = 1 if x > 0 else 0."""

    name = "step"
    deterministic = True

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (x > 0).to(x.dtype)


class _Stochastic:
    deterministic = False

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Bernoulli(prob(x)) from `generator`, on x's device.

        A uniform draw u gives a spike iff u < prob(x), i.e. iff x > prob_inverse(u)
        (prob is increasing); the second form is used, so that the fused LIF scan can
        turn all draws into firing points before its loop and get the same spikes.
        """
        uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x > self.prob_inverse(uniform)).to(x.dtype)


@dataclass(frozen=True)
class SigmoidEscape(_Stochastic):
    """S ~ Bernoulli(sigmoid(beta x))."""

    beta: float = 10.0
    name = "sigmoid"

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.beta * x)

    def prob_inverse(self, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """logit(u) / beta (-inf at u = 0); into `out` if given (same numbers). On the CPU
        in float32 by the C kernel (`fused.logit_points`: faster, and within 2 ulp also
        near u = 1/2, where torch.logit's rounded quotient loses accuracy), which the fused
        LIF scan evaluates too, so that both give the same spikes; else by torch."""
        from . import fused  # here: fused imports this module

        plain = u.is_contiguous() and not u.requires_grad
        if fused.usable(u) and plain and (out is None or out.is_contiguous()):
            return fused.logit_points(u, self.beta, out=out)
        return torch.div(torch.logit(u, out=out), self.beta, out=out)

    def kernel_logit_beta(self) -> float | None:
        """beta if the fused scan may find this escape noise's firing points itself (its
        estimate of the logit decides by direction: beta > 0), else None."""
        return self.beta if 0.0 < self.beta < math.inf else None


@dataclass(frozen=True)
class ExponentialEscape(_Stochastic):
    """S ~ Bernoulli(min(1, p0 exp(x / delta_u))); the exponent is capped at saturation."""

    p0: float = 2.0 / 3.0
    delta_u: float = 0.133
    name = "exponential"

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        cap = math.log(1.0 / self.p0)  # exponent at which p0 exp(.) reaches 1
        return self.p0 * torch.exp(torch.clamp(x / self.delta_u, max=cap))

    def prob_inverse(self, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """delta_u log(u / p0): the saturation at 1 plays no part since u < 1; into `out`
        if given (same numbers)."""
        quotient = torch.div(u, self.p0, out=out)
        return torch.mul(torch.log(quotient, out=out), self.delta_u, out=out)


@dataclass(frozen=True)
class SuperSpikeEscape(_Stochastic):
    """S ~ Bernoulli(f(x)), f the fast sigmoid 1/2 (1 + beta x / (1 + beta |x|))."""

    beta: float = 10.0
    name = "superspike"

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        # beta x / (1 + beta |x|) written so that beta x cannot overflow
        return 0.5 * (1.0 + x / (1.0 / self.beta + x.abs()))

    def prob_inverse(self, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """v / (beta (1 - |v|)) with v = 2u - 1, the inverse of v = beta x / (1 + beta |x|);
        into `out` if given."""
        v = 2.0 * u - 1.0
        return torch.div(v, self.beta * (1.0 - v.abs()), out=out)


# -------------------------------------------------------------------- surrogate derivatives
# Kernel registry. The compiled LIF scans (C: csrc/lif_scan.c, Triton: triton_kernels.py)
# evaluate a surrogate derivative inside their backward loops by one of these formulas of
# x = mem - threshold and the spike S, numbered alike in both kernels, with two parameters
# (p, q). Every surrogate says which formula and parameters it is by `kernel_form()`; one
# without a formula returns SG_GIVEN, the declared fallback: the kernels then read its
# `derivative`, computed beforehand by torch. So a new surrogate is one class here (and its
# name in SURROGATES); a formula in the kernels is only a speed-up. Tests walk this registry.
SG_GIVEN, SG_SUPERSPIKE, SG_SPIKE, SG_SIGMOID, SG_EXPONENTIAL = -1, 0, 1, 2, 3
KERNEL_FORMULAS = {
    SG_GIVEN: "derivative(x, S), computed beforehand by torch",
    SG_SUPERSPIKE: "1 / (p |x| + 1)^2",
    SG_SPIKE: "S",
    SG_SIGMOID: "q sigmoid(p x) sigmoid(-p x)",
    SG_EXPONENTIAL: "min(p exp(x / q), 1) / q",
}


@dataclass(frozen=True)
class SuperSpikeSurrogate:
    """dS/dx := 1 / (beta |x| + 1)^2 (Zenke & Ganguli 2018)."""

    beta: float = 10.0
    name = "superspike"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return 1.0 / (self.beta * x.abs() + 1.0) ** 2

    def kernel_form(self) -> tuple[int, float, float]:
        """(formula, p, q) of KERNEL_FORMULAS by which the compiled scans evaluate this."""
        return SG_SUPERSPIKE, self.beta, 0.0


@dataclass(frozen=True)
class SigmoidSurrogate:
    """dS/dx := beta s (1 - s), s = sigmoid(beta x): the derivative of sigmoid(beta x)."""

    beta: float = 10.0
    name = "sigmoid"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        bx = self.beta * x
        return self.beta * torch.sigmoid(bx) * torch.sigmoid(-bx)

    def kernel_form(self) -> tuple[int, float, float]:
        """(formula, p, q) of KERNEL_FORMULAS by which the compiled scans evaluate this."""
        return SG_SIGMOID, self.beta, self.beta


@dataclass(frozen=True)
class ScaledSigmoidSurrogate:
    """dS/dx := s (1 - s), s = sigmoid(beta x): the sigmoid derivative without the factor beta."""

    beta: float = 10.0
    name = "scaled_sigmoid"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        bx = self.beta * x
        return torch.sigmoid(bx) * torch.sigmoid(-bx)

    def kernel_form(self) -> tuple[int, float, float]:
        """(formula, p, q) of KERNEL_FORMULAS by which the compiled scans evaluate this."""
        return SG_SIGMOID, self.beta, 1.0


@dataclass(frozen=True)
class ExponentialSurrogate:
    """dS/dx := p0 / delta_u exp(x / delta_u), the derivative of the exponential escape noise.

    Above saturation (p0 exp(x/delta_u) >= 1) it keeps its value at saturation, 1/delta_u,
    so it stays finite for every input instead of overflowing.
    """

    p0: float = 2.0 / 3.0
    delta_u: float = 0.133
    name = "exponential"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        cap = math.log(1.0 / self.p0)
        return self.p0 / self.delta_u * torch.exp(torch.clamp(x / self.delta_u, max=cap))

    def kernel_form(self) -> tuple[int, float, float]:
        """(formula, p, q) of KERNEL_FORMULAS by which the compiled scans evaluate this."""
        return SG_EXPONENTIAL, self.p0, self.delta_u


@dataclass(frozen=True)
class MultilayerSpikerSurrogate:
    """dS/dx := S, the spike itself (Gardner, Sporea & Gruening 2015)."""

    name = "multilayerspiker"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return spikes

    def kernel_form(self) -> tuple[int, float, float]:
        """(formula, p, q) of KERNEL_FORMULAS by which the compiled scans evaluate this."""
        return SG_SPIKE, 0.0, 0.0


ESCAPE_NOISES = {
    "step": Step,
    "sigmoid": SigmoidEscape,
    "exponential": ExponentialEscape,
    "superspike": SuperSpikeEscape,
}
SURROGATES = {
    "superspike": SuperSpikeSurrogate,
    "sigmoid": SigmoidSurrogate,
    "scaled_sigmoid": ScaledSigmoidSurrogate,
    "exponential": ExponentialSurrogate,
    "multilayerspiker": MultilayerSpikerSurrogate,
}


def _build(kind: str, registry: dict, name: str, beta: float, p0: float, delta_u: float):
    if name not in registry:
        raise ConfigError(f"{kind}={name!r} is not valid; choose one of: {', '.join(registry)}")
    cls = registry[name]
    fields = getattr(cls, "__dataclass_fields__", {})
    params = {"beta": beta, "p0": p0, "delta_u": delta_u}
    kwargs = {key: params[key] for key in fields}
    for key, value in kwargs.items():
        check_positive(key, value)
    if "p0" in kwargs and kwargs["p0"] > 1:
        raise ConfigError(f"p0={p0!r} is not valid; it must lie in (0, 1]")
    return cls(**kwargs)


def make_escape(name: str, beta: float = 10.0, p0: float = 2 / 3, delta_u: float = 0.133):
    """Escape noise by name (one of ESCAPE_NOISES), taking only the parameters it uses."""
    return _build("escape noise", ESCAPE_NOISES, name, beta, p0, delta_u)


def make_surrogate(name: str, beta: float = 10.0, p0: float = 2 / 3, delta_u: float = 0.133):
    """Surrogate derivative by name (one of SURROGATES), taking only the parameters it uses."""
    return _build("surrogate", SURROGATES, name, beta, p0, delta_u)


# ------------------------------------------------------------------------ autograd op


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, escape, surrogate, generator):
        spikes = escape.sample(x, generator)
        ctx.save_for_backward(x, spikes)
        ctx.surrogate = surrogate
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        x, spikes = ctx.saved_tensors
        return grad_spikes * ctx.surrogate.derivative(x, spikes), None, None, None


class SpikeFn:
    """One spike operation: forward draws spikes through `escape`, backward uses `surrogate`.

    >>> spike = SpikeFn(SigmoidEscape(beta=10), SuperSpikeSurrogate(beta=10), generator=gen)
    >>> s = spike(mem - 1.0)
    """

    def __init__(self, escape, surrogate, generator: torch.Generator | None = None):
        self.escape = escape
        self.surrogate = surrogate
        self.generator = generator

    @property
    def deterministic(self) -> bool:
        return self.escape.deterministic

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(x, self.escape, self.surrogate, self.generator)

    def __repr__(self) -> str:
        return f"SpikeFn(escape={self.escape}, surrogate={self.surrogate})"


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A named method: escape noise, and surrogate for sigm=False / sigm=True."""

    escape: str
    surrogate: str
    surrogate_sigm: str
    escape_sigm: str | None = None  # escape noise when sigm=True, if it differs


METHODS = {
    "superspike": Method("step", "superspike", "sigmoid"),
    "stochasticsuperspike": Method("sigmoid", "superspike", "sigmoid"),
    "exponentialstochasticsuperspike": Method("exponential", "superspike", "sigmoid"),
    "realstochasticsuperspike": Method("superspike", "superspike", "sigmoid"),
    "multilayerspiker": Method("exponential", "multilayerspiker", "multilayerspiker", "sigmoid"),
    "scaled_sigmoid": Method("sigmoid", "scaled_sigmoid", "scaled_sigmoid"),
}


def method_pair(method: str, sigm: bool = False) -> tuple[str, str]:
    """(escape noise name, surrogate name) of a named method."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not valid; choose one of: {', '.join(METHODS)}")
    spec = METHODS[method]
    if sigm:
        return spec.escape_sigm or spec.escape, spec.surrogate_sigm
    return spec.escape, spec.surrogate


def spike_fn_for_method(
    method: str,
    beta: float = 10.0,
    p0: float = 2 / 3,
    delta_u: float = 0.133,
    sigm: bool = False,
    generator: torch.Generator | None = None,
) -> SpikeFn:
    """The SpikeFn of a named method (see METHODS), with the config's beta, p0, delta_u."""
    escape, surrogate = method_pair(method, sigm)
    return SpikeFn(
        make_escape(escape, beta, p0, delta_u),
        make_surrogate(surrogate, beta, p0, delta_u),
        generator,
    )
