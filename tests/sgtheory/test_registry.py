"""The kernel registry of `sgtheory.spikes`: every surrogate and escape noise defined in Python
has a path through the compiled scans (C: `backends.native`, Triton: `backends.triton`) or a
declared fallback, each surrogate's declared formula is its derivative, and the C kernel
numbers the formulas as spikes.py does. (That the kernels evaluate the formulas right is
tested by the scan equalities of test_fused.py and test_triton.py, which walk SURROGATES.)"""

from __future__ import annotations

import math
import re
import types

import pytest
import torch

from sgtheory import random, spikes
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.backends.triton import scan as triton_scan
from sgtheory.lif import lif_scan_reference
from sgtheory.scan import lif_scan
from sgtheory.spikes import KERNEL_FORMULAS, SG_GIVEN, SURROGATES, SpikeFn, make_escape

# the formulas of KERNEL_FORMULAS written out independently: (x, S, p, q) -> dS/dx
FORMULAS = {
    spikes.SG_SUPERSPIKE: lambda x, s, p, q: 1.0 / (p * x.abs() + 1.0) ** 2,
    spikes.SG_SPIKE: lambda x, s, p, q: s,
    spikes.SG_SIGMOID: lambda x, s, p, q: q / (1 + torch.exp(-p * x)) / (1 + torch.exp(p * x)),
    spikes.SG_EXPONENTIAL: lambda x, s, p, q: torch.clamp(p * torch.exp(x / q), max=1.0) / q,
}


def registry_problems(module) -> list[str]:
    """What keeps the surrogates and escape noises of `module` from the compiled scans."""
    problems = []
    for cls in [c for c in vars(module).values() if isinstance(c, type)]:
        if cls.__name__.startswith("_"):  # private bases
            continue
        if callable(getattr(cls, "derivative", None)):
            problems += _surrogate_problems(module, cls)
        if callable(getattr(cls, "sample", None)):
            if cls not in module.ESCAPE_NOISES.values():
                problems.append(f"escape noise {cls.__name__} is not in ESCAPE_NOISES")
            if not cls.deterministic and not callable(getattr(cls, "prob_inverse", None)):
                problems.append(f"stochastic escape noise {cls.__name__} lacks prob_inverse")
            problems += _escape_problems(module, cls)
    return problems


def _escape_problems(module, cls) -> list[str]:
    """An escape noise without a kernel rule runs as the torch loop: allowed for one added
    in Python, but every escape noise of the library declares its rule."""
    if "kernel_form" not in vars(cls):
        return [f"escape noise {cls.__name__} declares no kernel_form (an ESCAPE_FORMULAS rule)"]
    form = cls().kernel_form()
    if len(form) != 3 or form[0] not in module.ESCAPE_FORMULAS:
        return [f"escape noise {cls.__name__}: kernel_form {form} names no ESCAPE_FORMULAS rule"]
    return []


def _surrogate_problems(module, cls) -> list[str]:
    if cls not in module.SURROGATES.values():
        return [f"surrogate {cls.__name__} is not in SURROGATES"]
    if "kernel_form" not in vars(cls):  # declared by the class itself, not inherited
        return [f"surrogate {cls.__name__} declares no kernel_form (a formula or SG_GIVEN)"]
    form = cls().kernel_form()
    if len(form) != 3 or form[0] not in module.KERNEL_FORMULAS:
        return [f"surrogate {cls.__name__}: kernel_form {form} names no KERNEL_FORMULAS entry"]
    if not all(isinstance(v, float) and math.isfinite(v) for v in form[1:]):
        return [f"surrogate {cls.__name__}: kernel parameters {form[1:]} are not finite floats"]
    return []


def test_every_surrogate_and_escape_noise_has_a_kernel_path():
    assert registry_problems(spikes) == []


def test_the_walk_catches_a_surrogate_without_kernel_path():
    """The check above can fail: a surrogate with no kernel_form, one not registered."""

    class NoForm:
        name = "noform"
        beta: float = 1.0

        def derivative(self, x, s):
            return x

    class Unlisted(NoForm):
        def kernel_form(self):
            return SG_GIVEN, 0.0, 0.0

    fake = types.SimpleNamespace(**vars(spikes))
    fake.NoForm, fake.Unlisted = NoForm, Unlisted
    fake.SURROGATES = {**SURROGATES, "noform": NoForm}
    problems = registry_problems(fake)
    assert problems == [
        "surrogate NoForm declares no kernel_form (a formula or SG_GIVEN)",
        "surrogate Unlisted is not in SURROGATES",
    ]


@pytest.mark.parametrize("name", list(SURROGATES))
def test_declared_formula_is_the_surrogate_derivative(name):
    surrogate = spikes.make_surrogate(name, beta=7.0, p0=0.4, delta_u=0.2)
    form, p, q = surrogate.kernel_form()
    x = torch.linspace(-3, 3, 1201, dtype=torch.float64)
    s = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    expected = surrogate.derivative(x, s)
    if form == SG_GIVEN:
        pytest.skip(f"{name} has no formula: the kernels read its derivative")
    torch.testing.assert_close(FORMULAS[form](x, s, p, q), expected, rtol=1e-12, atol=1e-12)


def test_formula_numbers_agree_with_the_c_kernel():
    source = build.SOURCE.read_text()
    enums = " ".join(re.findall(r"enum\s*\{([^}]*)\}", source))
    pairs = re.findall(r"((?:SG|ESC)_\w+)\s*=\s*(-?\d+)", enums)
    numbers = {name: int(value) for name, value in pairs if name.startswith("SG_")}
    rules = {name: int(value) for name, value in pairs if name.startswith("ESC_")}
    assert numbers and rules  # the C file declares its formulas and escape rules
    for name, value in {**numbers, **rules}.items():
        assert getattr(spikes, name) == value, name
    assert set(rules.values()) == set(spikes.ESCAPE_FORMULAS)
    assert set(native.INLINE_FORMULAS) <= set(numbers.values()) - {SG_GIVEN}
    assert set(FORMULAS) | {SG_GIVEN} == set(KERNEL_FORMULAS)  # this test knows them all
    assert set(triton_scan.INLINE_FORMULAS) <= set(KERNEL_FORMULAS) - {SG_GIVEN}


# the rules of ESCAPE_FORMULAS written out independently, in float64: (u, p, q) -> point
RULES = {
    spikes.ESC_SIGMOID: lambda u, p, q: torch.log(u / (1 - u)) / p,
    spikes.ESC_EXPONENTIAL: lambda u, p, q: q * torch.log(u / p),
    spikes.ESC_SUPERSPIKE: lambda u, p, q: (2 * u - 1) / (p * (1 - (2 * u - 1).abs())),
}


@pytest.mark.parametrize("name", [n for n in spikes.ESCAPE_NOISES if n != "step"])
def test_declared_escape_rule_is_the_inverse_of_the_escape_probability(name):
    """The kernel rule's firing point: prob(point) = u, in float64 and float32 (the kernels'
    basic operations, within 4e-6 relative of the exact point)."""
    escape = spikes.make_escape(name, beta=7.0, p0=0.4, delta_u=0.2)
    rule, p, q = escape.kernel_form()
    u = torch.arange(1, 2**12, dtype=torch.float64) / 2**12
    point = RULES[rule](u, p, q)
    torch.testing.assert_close(escape.prob(point), u, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(escape.prob_inverse(u), point, rtol=1e-12, atol=1e-12)
    single = escape.prob_inverse(u.float()).double()
    assert ((single - point).abs() <= 4e-6 * point.abs() + 1e-7).all()


def test_an_escape_noise_added_in_python_only_runs_as_the_torch_loop(monkeypatch):
    """Without a kernel rule the scan draws the same numbers in the torch loop."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    class Linear(spikes._Stochastic):  # S ~ Bernoulli(clamp(1/2 + x, 0, 1)), no kernel rule
        name = "linear"

        def prob(self, x):
            return (0.5 + x).clamp(0.0, 1.0)

        def prob_inverse(self, u, out=None):
            return u - 0.5

    escape = Linear()
    assert not hasattr(escape, "kernel_form")
    cur = torch.randn(3, 20, 9, generator=torch.Generator().manual_seed(0)) * 0.5
    results = []
    for scan in (lif_scan, lif_scan_reference):
        spike = SpikeFn(escape, spikes.make_surrogate("superspike"), random.Stream(1, "p"))
        results.append(scan(cur, spike, 0.8, 0.9, 0.2)[0])
    assert torch.equal(results[0], results[1]) and 0.05 < results[0].mean() < 0.7


class Triangle:
    """dS/dx := max(0, 1 - |x|): a surrogate added in Python only."""

    name = "triangle"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return (1.0 - x.abs()).clamp(min=0.0)

    def kernel_form(self) -> tuple[int, float, float]:
        return SG_GIVEN, 0.0, 0.0


@pytest.mark.skipif(build.compiler() is None, reason="no C compiler here")
def test_c_kernel_runs_a_surrogate_added_in_python_only(monkeypatch):
    """Adding a surrogate is one class: the C kernel reads its derivative (SG_GIVEN)."""
    current = torch.randn(4, 30, 3, 7, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.4
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    grads = []
    for kernels in ("1", "0"):
        monkeypatch.setenv("SGTHEORY_FUSED", kernels)
        assert build.runs(current) == (kernels == "1")
        cur = current.clone().requires_grad_()
        spike = SpikeFn(make_escape("sigmoid"), Triangle(), torch.Generator().manual_seed(2))
        spikes_out, _ = lif_scan(cur, spike, 0.8, 0.9)
        spikes_out.sum().backward()
        grads.append(cur.grad)
    assert grads[1].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
