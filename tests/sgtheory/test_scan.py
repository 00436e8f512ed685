"""The dispatch rule of `sgtheory.scan`: which backend runs a scan for each device, dtype,
recurrence, source of draws and forced setting; that a forced backend which cannot run a
scan is a one-line error naming the setting, its value and the choices; and that the
backend the rule names is the one that runs (spied), with the spikes of the reference.

The rule, as `sgtheory.scan` states it: `backend=`, else SGTHEORY_BACKEND, else auto; auto
takes the first of triton, native, torch that can run the scan."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import torch

from sgtheory import lif, random, scan
from sgtheory.backends import readout as readout_backend
from sgtheory.backends import torch_loop
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.backends.triton import scan as triton_scan
from sgtheory.errors import ConfigError
from sgtheory.layers import DenseLIFLayer
from sgtheory.lif import LIFParams, readout_reference
from sgtheory.spikes import SpikeFn, make_escape, make_surrogate, spike_fn_for_method

HAS_C = build.compiler() is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None
PARAMS = LIFParams(0.8, 0.9)
CHOICES = "choose one of: auto, reference, torch, native, triton"


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    """No setting from the environment the suite runs in: each test sets what it needs."""
    for name in ("SGTHEORY_BACKEND", "TRITON_INTERPRET", "SGTHEORY_FUSED", "SGTHEORY_TRITON"):
        monkeypatch.delenv(name, raising=False)


def stochastic(generator=None) -> SpikeFn:
    gen = random.Stream(1, "scan") if generator is None else generator
    return SpikeFn(make_escape("sigmoid"), make_surrogate("superspike"), gen)


def current(dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Time-major (time, batch, channels, length)."""
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(12, 3, 4, 5, generator=gen) * 0.6 + 0.4).to(device, dtype)


REC = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(1)) * 0.3


@pytest.mark.skipif(not HAS_C, reason="no C compiler here")
def test_auto_on_cpu_float32_is_native_else_torch(monkeypatch):
    spike = stochastic()
    assert scan.choose(current(), spike, PARAMS) == "native"
    assert scan.choose(current(), spike, PARAMS, REC) == "native"  # recurrence in C too
    assert scan.choose(current(torch.float64), spike, PARAMS) == "torch"  # float32 only
    assert scan.choose(current().flatten(2), spike, PARAMS) == "native"  # dense layers
    given = stochastic(random.GivenUniforms(torch.rand(12, 3, 4, 5)))
    assert scan.choose(current(), given, PARAMS) == "torch"  # explicit uniforms: the loop
    monkeypatch.setenv("SGTHEORY_FUSED", "0")  # the C kernels turned off
    assert scan.choose(current(), spike, PARAMS) == "torch"


def test_an_escape_noise_without_a_kernel_rule_runs_as_the_torch_loop():
    class Linear:
        deterministic = False

        def prob_inverse(self, u, out=None):
            return u - 0.5

    spike = SpikeFn(Linear(), make_surrogate("superspike"), random.Stream(1, "l"))
    assert scan.choose(current(), spike, PARAMS) == "torch"
    with pytest.raises(ConfigError, match="backend='native' cannot run this scan"):
        scan.choose(current(), spike, PARAMS, backend="native")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_auto_takes_triton_first_where_it_runs(monkeypatch):
    """Under Triton's interpreter the kernels run on CPU tensors: before the C kernels, with
    recurrence too; not in float64, not with a rec_delay beyond the steps (the C kernels
    take any), not when off."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    spike = stochastic()
    assert scan.choose(current(), spike, PARAMS) == "triton"
    assert scan.choose(current(), spike, PARAMS, REC) == "triton"
    assert scan.choose(current(torch.float64), spike, PARAMS, REC) == "torch"
    late = LIFParams(0.8, 0.9, rec_delay=13)  # 12 steps: the kernels take up to 12
    next_one = "native" if HAS_C else "torch"
    assert scan.choose(current(), spike, late, REC) == next_one
    monkeypatch.setenv("SGTHEORY_TRITON", "0")
    assert scan.choose(current(), spike, PARAMS, REC) == next_one
    assert scan.choose(current(), spike, PARAMS) == next_one


def test_a_forced_backend_runs_where_it_can_and_the_argument_beats_the_environment(
    monkeypatch,
):
    spike = stochastic()
    for name in ("reference", "torch"):  # these run every scan
        assert scan.choose(current(torch.float64), spike, PARAMS, REC, backend=name) == name
        monkeypatch.setenv("SGTHEORY_BACKEND", name)
        assert scan.choose(current(torch.float64), spike, PARAMS, REC) == name
    monkeypatch.setenv("SGTHEORY_BACKEND", "reference")
    assert scan.choose(current(), spike, PARAMS, backend="torch") == "torch"
    monkeypatch.setenv("SGTHEORY_BACKEND", "auto")
    assert scan.choose(current(torch.float64), spike, PARAMS, REC) == "torch"


def test_forcing_a_backend_that_cannot_run_the_scan_is_a_clear_error(monkeypatch):
    spike = stochastic()
    with pytest.raises(ConfigError) as err:
        scan.choose(current(torch.float64), spike, PARAMS, REC, backend="native")
    message = str(err.value)
    assert message.startswith("backend='native' cannot run this scan (cpu float64 current, ")
    assert "a recurrent weight" in message and "float32 CPU current" in message
    assert message.endswith(CHOICES) and "\n" not in message
    monkeypatch.setenv("SGTHEORY_BACKEND", "triton")  # CPU without the interpreter
    with pytest.raises(ConfigError, match=r"^SGTHEORY_BACKEND='triton' cannot run") as err:
        scan.choose(current(), spike, PARAMS)
    assert "CUDA" in str(err.value) and str(err.value).endswith(CHOICES)
    monkeypatch.setenv("SGTHEORY_BACKEND", "native")
    monkeypatch.setenv("SGTHEORY_FUSED", "0")
    with pytest.raises(ConfigError, match=r"^SGTHEORY_BACKEND='native' cannot run.*FUSED"):
        scan.lif_scan(current(), spike, 0.8, 0.9, time_major=True)


def test_a_value_that_is_no_backend_is_refused_naming_the_choices(monkeypatch):
    spike = stochastic()
    with pytest.raises(ConfigError, match=re.escape(f"backend='cuda' is not valid; {CHOICES}")):
        scan.lif_scan(current(), spike, 0.8, 0.9, backend="cuda")
    monkeypatch.setenv("SGTHEORY_BACKEND", "fast")
    with pytest.raises(ConfigError, match=re.escape("SGTHEORY_BACKEND='fast' is not valid; ")):
        scan.lif_scan(current(), spike, 0.8, 0.9)


def spy(monkeypatch, module, name: str, calls: list, label: str) -> None:
    """Append `label` to `calls` at each call of module.name."""
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(label)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def spy_scans(monkeypatch, calls: list) -> None:
    """Each backend's forward appends its name to `calls`."""
    for name, module in (("torch", torch_loop), ("native", native), ("triton", triton_scan)):
        spy(monkeypatch, module, "forward", calls, name)


@pytest.mark.parametrize("rec", [False, True])
def test_each_backend_the_rule_names_is_the_one_that_runs_with_the_same_spikes(monkeypatch, rec):
    """Forced one by one: the named backend's forward runs (and no other), and every one
    gives the spikes of the model run plainly (`lif.lif_scan_reference`, its draws by the
    definition in `sgtheory.random`) and, up to rounding, its gradients."""
    names = ["reference", "torch"] + (["native"] if HAS_C else [])
    if HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        names.append("triton")
    calls: list[str] = []
    spy_scans(monkeypatch, calls)
    results = {}
    for name in names:
        calls.clear()
        cur = current().requires_grad_()
        weight = REC.clone().requires_grad_() if rec else None
        spikes, mem = scan.lif_scan(
            cur, stochastic(), 0.8, 0.9, 0.5, rec_weight=weight, time_major=True, backend=name
        )
        assert calls == ([] if name == "reference" else [name])
        (grad,) = torch.autograd.grad((spikes * torch.linspace(-1, 1, 5)).sum(), [cur])
        results[name] = spikes, mem, grad
    spikes, mem, grad = results["reference"]
    assert 0.05 < spikes.mean() < 0.6
    plain = lif.lif_scan_reference(  # the model itself, its draws by the definition
        current(), stochastic(), 0.8, 0.9, 0.5, rec_weight=REC if rec else None, time_major=True
    )
    assert torch.equal(plain[0], spikes) and torch.equal(plain[1], mem)
    for name in names[1:]:
        assert torch.equal(results[name][0], spikes), name
        torch.testing.assert_close(results[name][1], mem, rtol=0, atol=1e-5)
        assert (results[name][2] - grad).abs().max() <= 3e-5 * grad.abs().max(), name


def test_the_readout_runs_the_matrix_product_when_fast_unless_reference_is_forced(monkeypatch):
    calls: list[str] = []
    spy(monkeypatch, readout_backend, "readout_scan", calls, "matrix")
    cur = current().flatten(2)
    plain = readout_reference(cur, 0.8, 0.9, True, -1e-3, True)
    fast = scan.readout_scan(cur, 0.8, 0.9, True, -1e-3, True, fast=True)
    assert calls == ["matrix"]
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for forced in ("arg", "env"):
        calls.clear()
        if forced == "env":
            monkeypatch.setenv("SGTHEORY_BACKEND", "reference")
        backend = "reference" if forced == "arg" else None
        out = scan.readout_scan(cur, 0.8, 0.9, True, -1e-3, True, fast=True, backend=backend)
        assert calls == [] and torch.equal(out, plain)
    calls.clear()
    assert torch.equal(scan.readout_scan(cur, 0.8, 0.9, True, -1e-3, True), plain)
    assert calls == []


def test_a_layer_with_reference_runs_the_reference_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("SGTHEORY_BACKEND", "torch")
    calls: list[str] = []
    spy_scans(monkeypatch, calls)
    lif = dict(tau_mem=0.02, tau_syn=0.01, dt=1e-3)
    layer = DenseLIFLayer(6, 4, spike_fn_for_method("superspike"), **lif)
    torch.nn.init.normal_(layer.weight, 0.0, 1.0)
    x = torch.rand(2, 10, 6)
    reference = layer(x, reference=True)
    assert calls == []
    fast = layer(x)
    assert calls == ["torch"] and torch.equal(fast, reference)


def test_the_model_modules_load_no_accelerator():
    """Importing sgtheory.lif (with spikes, random, errors) in a fresh process loads nothing
    of sgtheory.backends nor the dispatch."""
    code = (
        "import sys, sgtheory.lif, sgtheory.spikes, sgtheory.random\n"
        "print(sorted(m for m in sys.modules if m.startswith(('sgtheory.backends', "
        "'sgtheory.scan'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    code = code.replace("sgtheory.lif,", "sgtheory.layers,")  # the layers do load them
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "'sgtheory.scan'" in proc.stdout
