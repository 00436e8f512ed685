"""The spiking nonlinearity: escape noise (forward) x surrogate derivative (backward).

A spike operation is a pair of small objects, bound per layer instance:

* an escape noise gives the probability of a spike at x = U - theta, and draws spikes:
  ``step`` (deterministic threshold), ``sigmoid``, ``exponential``, ``superspike``;
* a surrogate derivative replaces dS/dx in the backward pass:
  ``superspike``, ``sigmoid``, ``scaled_sigmoid``, ``exponential``, ``multilayerspiker``.

``SpikeFn(escape, surrogate, generator)`` binds them into one autograd operation; its
stochastic spikes compare the potential with firing points of uniforms drawn from a
counter-based stream (``sgtheory.random``), the same numbers on every device and backend.
There is no class-level or global mutable state: two layers with different settings coexist.
The named methods of the paper's configs are one table, ``METHODS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgtheory import random
from sgtheory.errors import ConfigError, check_positive

# Escape-noise registry. The compiled LIF scans draw their uniforms u inside their loops and
# decide a spike by one of these rules of x = mem - threshold (numbered alike in the C and
# Triton kernels, parameters (p, q)); each escape noise says which by `kernel_form()`. The
# firing points are computed from u by float32 additions, multiplications, divisions and
# bit operations only (`log_f32`, `logit_f32`): operations that every backend rounds alike,
# so torch, C and Triton give the same spikes bitwise.
ESC_STEP, ESC_SIGMOID, ESC_EXPONENTIAL, ESC_SUPERSPIKE = 0, 1, 2, 3
ESCAPE_FORMULAS = {
    ESC_STEP: "x > 0",
    ESC_SIGMOID: "x > logit(u) / p",
    ESC_EXPONENTIAL: "x > q log(u / p)",
    ESC_SUPERSPIKE: "x > v / (p (1 - |v|)), v = 2 u - 1",
}
# float32 constants of the logarithm (ln 2 split so that e ln2_hi is exact for |e| < 2^8;
# 2 atanh(s) = 2 s + s r(s^2), r's coefficients 2/3, 2/5, 2/7, 2/9)
LN2_HI, LN2_LO, SQRT2 = 0.693145752, 1.42860677e-06, 1.41421354
ATANH_COEFFS = (0.666666687, 0.400000006, 0.285714298, 0.222222224)


def _atanh_log(e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """e ln2 + 2 atanh(s) in float32, |s| <= 0.172 (series cut after s^9)."""
    c1, c2, c3, c4 = ATANH_COEFFS
    z = s * s
    r = z * (c1 + z * (c2 + z * (c3 + z * c4)))
    return e * LN2_HI + (2.0 * s + (s * r + e * LN2_LO))


def _mantissa_exponent(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m in [1, 2), biased exponent as float32) of positive normal float32 `v`."""
    bits = v.view(torch.int32)
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)
    return m, (bits >> 23).to(torch.float32)


def log_f32(v: torch.Tensor) -> torch.Tensor:
    """log(v) of float32 `v` (0 or a positive normal float) by basic operations: v = 2^e m,
    m halved when above sqrt2 (exact), log v = e ln2 + 2 atanh((m - 1) / (m + 1)); within
    a few ulp; -inf at 0. The C and Triton kernels repeat it operation by operation."""
    m, e = _mantissa_exponent(v)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)
    e = (e - 127.0) + big.to(torch.float32)
    out = _atanh_log(e, (m - 1.0) / (m + 1.0))
    return out.masked_fill_(v == 0.0, -math.inf)


def logit_f32(u: torch.Tensor) -> torch.Tensor:
    """log(u / (1 - u)) of float32 u in [0, 1 - 2^-24] with 1 - u exact (every draw of
    `sgtheory.random`) by basic operations, without rounding the quotient: u = 2^e1 m1,
    1 - u = 2^e2 m2, m1 or m2 doubled so that m1 / m2 lies within [1/sqrt2, sqrt2], then
    e ln2 + 2 atanh((m1 - m2) / (m1 + m2)); within 1.6 ulp (also near 1/2); -inf at 0.
    The same operations as the C kernel's logit_normal and the Triton kernels'."""
    m1, e1 = _mantissa_exponent(u)
    m2, e2 = _mantissa_exponent(1.0 - u)
    up = (m1 > SQRT2 * m2).to(torch.float32)
    down = (m2 > SQRT2 * m1).to(torch.float32)
    e = (e1 - e2) + (up - down)
    m2 = m2 + up * m2
    m1 = m1 + down * m1
    out = _atanh_log(e, (m1 - m2) / (m1 + m2))
    return out.masked_fill_(u == 0.0, -math.inf)


# --------------------------------------------------------------------------- escape noise


@dataclass(frozen=True)
class Step:
    """Deterministic threshold: S = 1 if x > 0 else 0."""

    name = "step"
    deterministic = True

    def kernel_form(self) -> tuple[int, float, float]:
        """(rule, p, q) of ESCAPE_FORMULAS by which the compiled scans decide spikes."""
        return ESC_STEP, 0.0, 0.0

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (x > 0).to(x.dtype)


class _Stochastic:
    deterministic = False

    def sample(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Bernoulli(prob(x)) on x's device: uniforms from torch.rand with a torch.Generator
        (or None), else one step of a `random.Stream` (or `random.GivenUniforms`)."""
        if generator is None or isinstance(generator, torch.Generator):
            uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            uniform = random.take(generator, 1).uniform(0, 1, x.shape, x.device)[0]
        return self.spikes(x, uniform)

    def spikes(self, x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """The spikes of uniform draws: u gives a spike iff u < prob(x), i.e. iff
        x > prob_inverse(u) (prob is increasing); the second form is used, as in the
        kernels, which compute each draw's firing point inside their loops."""
        return (x > self.prob_inverse(uniform.to(x.dtype))).to(x.dtype)


@dataclass(frozen=True)
class SigmoidEscape(_Stochastic):
    """S ~ Bernoulli(sigmoid(beta x))."""

    beta: float = 10.0
    name = "sigmoid"

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.beta * x)

    def prob_inverse(self, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """logit(u) / beta (-inf at u = 0); into `out` if given (same numbers). In float32
        by `logit_f32` (the kernels' operations, so every backend gives the same points);
        in other dtypes by torch.logit."""
        if u.dtype != torch.float32 or u.requires_grad:
            return torch.div(torch.logit(u), self.beta, out=out)
        return torch.div(logit_f32(u), self.beta, out=out)

    def kernel_form(self) -> tuple[int, float, float]:
        """(rule, p, q) of ESCAPE_FORMULAS by which the compiled scans decide spikes."""
        return ESC_SIGMOID, self.beta, 0.0


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
        if given (same numbers). In float32 by `log_f32` (the kernels' operations)."""
        quotient = u / self.p0
        log = log_f32(quotient) if u.dtype == torch.float32 else torch.log(quotient)
        return torch.mul(log, self.delta_u, out=out)

    def kernel_form(self) -> tuple[int, float, float]:
        """(rule, p, q) of ESCAPE_FORMULAS by which the compiled scans decide spikes."""
        return ESC_EXPONENTIAL, self.p0, self.delta_u


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

    def kernel_form(self) -> tuple[int, float, float]:
        """(rule, p, q) of ESCAPE_FORMULAS by which the compiled scans decide spikes."""
        return ESC_SUPERSPIKE, self.beta, 0.0


# -------------------------------------------------------------------- surrogate derivatives
# Kernel registry. The compiled LIF scans (C: backends/native/csrc/lif_scan.c, Triton:
# backends/triton/kernels.py)
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
    def forward(ctx, x, escape, surrogate, uniform):
        spikes = escape.sample(x, None) if uniform is None else escape.spikes(x, uniform)
        ctx.save_for_backward(x, spikes)
        ctx.surrogate = surrogate
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        x, spikes = ctx.saved_tensors
        return grad_spikes * ctx.surrogate.derivative(x, spikes), None, None, None


class SpikeFn:
    """One spike operation: forward draws spikes through `escape`, backward uses `surrogate`.

    `generator` is where the uniforms come from: a `random.Stream` (counter-based: the same
    numbers on every device and backend), a torch.Generator (or None: torch's default),
    whose state gives each draw a fresh key (`random.take`), or `random.GivenUniforms`.

    >>> spike = SpikeFn(SigmoidEscape(beta=10), SuperSpikeSurrogate(beta=10), stream)
    >>> s = spike(mem - 1.0)
    """

    def __init__(self, escape, surrogate, generator=None):
        self.escape = escape
        self.surrogate = surrogate
        self.generator = generator

    @property
    def deterministic(self) -> bool:
        return self.escape.deterministic

    def take(self, nb_steps: int) -> random.Draws | None:
        """The uniforms of the next `nb_steps` steps (one scan), or None if deterministic."""
        return None if self.deterministic else random.take(self.generator, nb_steps)

    def __call__(
        self, x: torch.Tensor, draws: random.Draws | None = None, step: int = 0
    ) -> torch.Tensor:
        """Spikes of x = U - theta: with `draws` (from `take`), from that draw's step `step`;
        else from a draw of one step of its own."""
        uniform = None
        if not self.deterministic:
            draws = self.take(1) if draws is None else draws
            uniform = draws.uniform(step, step + 1, tuple(x.shape), x.device)[0]
        return _SpikeFunction.apply(x, self.escape, self.surrogate, uniform)

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
    generator=None,
) -> SpikeFn:
    """The SpikeFn of a named method (see METHODS), with the config's beta, p0, delta_u,
    drawing from `generator` (see SpikeFn)."""
    escape, surrogate = method_pair(method, sigm)
    return SpikeFn(
        make_escape(escape, beta, p0, delta_u),
        make_surrogate(surrogate, beta, p0, delta_u),
        generator,
    )
