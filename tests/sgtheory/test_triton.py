"""The Triton kernels of the LIF scan, run on the CPU by Triton's interpreter, against the torch
loop and plain autograd; how the kernels are chosen; and that triton stays optional.

The interpreter is switched on per test (TRITON_INTERPRET=1, read by `triton_scan` at each
call), not at import: `triton_scan` loads its kernels once per mode into a module of its
own and they use only Triton's builtins, so it does not matter whether torch or another test
imported triton first (`test_interpreter_works_after_a_compiled_import` checks it in a fresh
process). Sizes are tiny: the interpreter costs about a millisecond per operation.
Triton 3.7's interpreter rounds tl.fma twice (the GPU once), so potentials may differ from
the loop's in the last bit: they are compared to 1e-6, spikes exactly.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from sgtheory import spikes
from sgtheory.backends.triton import scan as triton_scan
from sgtheory.lif import lif_scan_reference
from sgtheory.scan import lif_scan
from sgtheory.spikes import (
    ESCAPE_NOISES,
    SG_GIVEN,
    SURROGATES,
    SpikeFn,
    make_escape,
    make_surrogate,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter on, small program blocks (several programs, a ragged last one),
    and counters of the kernel launches that the scans make."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SGTHEORY_TRITON", "1")
    monkeypatch.setattr(triton_scan, "BLOCK", 32)
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        monkeypatch.setattr(triton_scan, name, _counted(getattr(triton_scan, name), name, calls))
    return calls


def _counted(fn, name, calls):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def scan_three_ways(monkeypatch, escape, surrogate, reset, diff_reset, shape, rec=None, delay=1):
    """(spikes, mem, grads) of lif_scan with the kernels, of the torch loop (kernels off) and of
    lif_scan_reference, from the same inputs and the same generator seed."""
    gen = torch.Generator().manual_seed(0)
    current = torch.randn(shape, generator=gen) * 0.6 + 0.45
    weights = torch.randn(shape, generator=gen)
    w_rec = None
    if rec is not None:
        w_rec = torch.randn(shape[2], shape[2], rec, generator=gen) * 0.4
    results = []
    for scan, kernels in ((lif_scan, "1"), (lif_scan, "0"), (lif_scan_reference, "0")):
        monkeypatch.setenv("SGTHEORY_TRITON", kernels)
        monkeypatch.setenv("SGTHEORY_FUSED", "0")  # the loop, not the C kernels
        inputs = [current.clone().requires_grad_()]
        if w_rec is not None:
            inputs.append(w_rec.clone().requires_grad_())
        spike = SpikeFn(
            make_escape(escape), make_surrogate(surrogate), torch.Generator().manual_seed(3)
        )
        spikes, mem = scan(
            inputs[0], spike, 0.8, 0.9, 1.0, reset, diff_reset, inputs[1] if rec else None,
            rec_delay=delay,
        )  # fmt: skip
        grads = torch.autograd.grad((spikes * weights).sum(), inputs)
        results.append((spikes, mem, grads))
    return results


def assert_same(results):
    """Spikes equal, potentials equal to float32 rounding; gradients to 1e-5 of the largest
    between the kernels and the loop (the same adjoint recursion), to 3e-5 against plain
    autograd (other float32 summation orders, which a recurrent convolution and the
    exponential surrogate amplify: 1.3e-5 seen)."""
    (s1, m1, g1), *others = results
    assert 0.02 < s1.mean() < 0.5
    for k, (s2, m2, g2) in enumerate(others):
        assert torch.equal(s1, s2)  # the same spikes, also for stochastic escape noise
        torch.testing.assert_close(m1, m2, rtol=0, atol=1e-6)
        for a, b in zip(g1, g2, strict=True):
            scale = b.abs().max()
            assert scale > 0
            assert (a - b).abs().max() <= (1e-5 if k == 0 else 3e-5) * scale


@needs_triton
@pytest.mark.parametrize("escape", list(ESCAPE_NOISES))
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("reset", ["full", "leak"])
@pytest.mark.parametrize("diff_reset", [False, True])
def test_kernels_equal_torch_loop_and_plain_autograd(
    interpreter, monkeypatch, escape, surrogate, reset, diff_reset
):
    results = scan_three_ways(monkeypatch, escape, surrogate, reset, diff_reset, (3, 16, 2, 7))
    assert interpreter == {"forward": 1, "backward": 1}  # the kernels ran, once each way
    assert_same(results)


REC_CASES = [
    (escape, reset, diff_reset, delay)
    for escape in ESCAPE_NOISES
    for reset in ("full", "leak")
    for diff_reset in (False, True)
    for delay in (1, 2)
]


@needs_triton
@pytest.mark.parametrize("case", range(len(REC_CASES)))
def test_recurrent_kernels_equal_torch_loop_and_plain_autograd(interpreter, monkeypatch, case):
    """Every escape noise x reset x diff_reset x delay (the surrogate taken in turn)."""
    escape, reset, diff_reset, delay = REC_CASES[case]
    surrogate = list(SURROGATES)[case % len(SURROGATES)]
    results = scan_three_ways(
        monkeypatch, escape, surrogate, reset, diff_reset, (2, 16, 3, 7), rec=3, delay=delay
    )
    assert interpreter == {"forward": 1, "backward": 1}
    assert_same(results)


@needs_triton
@pytest.mark.parametrize("surrogate", list(SURROGATES))
def test_recurrent_kernels_with_every_surrogate(interpreter, monkeypatch, surrogate):
    """A wider kernel (5) than positions allow in full (4), so the padding is exercised."""
    results = scan_three_ways(monkeypatch, "sigmoid", surrogate, "full", True, (2, 16, 2, 4), 5)
    assert interpreter == {"forward": 1, "backward": 1}
    assert_same(results)


@needs_triton
def test_surrogate_without_a_formula_runs_by_its_declared_fallback(interpreter, monkeypatch):
    """A surrogate added in Python only (kernel_form SG_GIVEN): the kernels read its
    derivative, computed beforehand, and match the loop."""
    monkeypatch.setitem(SURROGATES, "triangle", Triangle)
    results = scan_three_ways(monkeypatch, "sigmoid", "triangle", "full", False, (3, 12, 2, 7))
    assert interpreter == {"forward": 1, "backward": 1}
    assert_same(results)


class Triangle:
    """dS/dx := max(0, 1 - |x|): a surrogate the kernels have no formula for."""

    name = "triangle"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return (1.0 - x.abs()).clamp(min=0.0)

    def kernel_form(self) -> tuple[int, float, float]:
        return SG_GIVEN, 0.0, 0.0


# ----------------------------------------------------------------- choice of the kernels


def test_kernels_apply_only_where_they_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SGTHEORY_TRITON", "1")
    cur = torch.zeros(4, 2, 3, 5)
    assert not triton_scan.runs(cur)  # CPU without the interpreter: the C kernels or loop
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    weight = torch.zeros(3, 3, 3)
    assert triton_scan.runs(cur) == HAS_TRITON
    assert triton_scan.runs(cur, weight, 2) == HAS_TRITON
    assert not triton_scan.runs(cur.double())  # float32 only
    assert not triton_scan.runs(cur[:, :0])  # nothing to launch
    assert not triton_scan.runs(cur, weight.double())
    assert not triton_scan.runs(cur, weight, rec_delay=5)  # delay beyond the steps: loop
    big = torch.zeros(2, 1, 64, 200)  # 64 x 256 padded > MAX_BLOCK: loop
    assert not triton_scan.runs(big, torch.zeros(64, 64, 3))
    monkeypatch.setenv("SGTHEORY_TRITON", "0")
    assert not triton_scan.runs(cur)
    assert triton_scan.describe("cuda") == "torch loop (SGTHEORY_TRITON=0)"
    monkeypatch.setenv("SGTHEORY_TRITON", "1")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert triton_scan.describe("cpu") == "not used on cpu"


def test_cuda_without_triton_warns_once_and_cpu_never_imports_it(monkeypatch):
    imports = []

    def missing():
        imports.append(1)
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(triton_scan, "_state", {"triton": None, "tried": False, "modules": {}})
    monkeypatch.setattr(triton_scan, "_import_triton", missing)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SGTHEORY_TRITON", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not triton_scan.available("cpu")
    assert imports == []  # CPU: triton not even looked for
    with pytest.warns(RuntimeWarning, match="triton is not installed"):
        assert not triton_scan.available("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not triton_scan.available("cuda")  # one warning per process
    assert imports == [1]
    assert triton_scan.describe("cuda") == "torch loop (triton not installed)"
    monkeypatch.setenv("SGTHEORY_TRITON", "0")
    monkeypatch.setattr(triton_scan, "_state", {"triton": None, "tried": False, "modules": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not triton_scan.available("cuda")  # turned off: no warning either


def run_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh process, warnings as errors, started without TRITON_INTERPRET (the
    tests set it where they need it, whatever the suite was started with)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_sgtheory_imports_and_runs_without_triton():
    """With `import triton` failing, the library imports and scans silently on CPU."""
    proc = run_python(
        """
        import sys
        class NoTriton:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ModuleNotFoundError("No module named 'triton'")
        sys.meta_path.insert(0, NoTriton())
        import torch
        from sgtheory.scan import lif_scan
        from sgtheory.spikes import spike_fn_for_method
        cur = torch.randn(2, 30, 3, 5).requires_grad_()
        spikes, _ = lif_scan(cur, spike_fn_for_method("stochasticsuperspike"), 0.8, 0.9)
        spikes.sum().backward()
        assert "triton" not in sys.modules
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@needs_triton
def test_interpreter_works_after_a_compiled_import():
    """triton imported (and the compiled kernels loaded) before TRITON_INTERPRET is set: the
    interpreted kernels still run, and each mode keeps its own module."""
    proc = run_python(
        """
        import os
        import torch, triton
        from sgtheory import spikes
        from sgtheory.backends.triton import scan as triton_scan
        from sgtheory.scan import lif_scan
        from sgtheory.spikes import spike_fn_for_method
        compiled = triton_scan.kernels(False).lif_forward_flat
        assert type(compiled).__name__ == "JITFunction"
        assert "TRITON_INTERPRET" not in os.environ  # restored after loading
        os.environ["TRITON_INTERPRET"] = "1"
        cur = torch.randn(2, 6, 3, 5, generator=torch.Generator().manual_seed(0)) + 1.0
        assert triton_scan.runs(cur.transpose(0, 1))
        spikes, _ = lif_scan(cur, spike_fn_for_method("superspike"), 0.8, 0.9)
        interpreted = triton_scan.kernels(True).lif_forward_flat
        assert type(interpreted).__name__ == "InterpretedFunction"
        assert triton_scan.kernels(False).lif_forward_flat is compiled
        assert spikes.sum() > 0
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def _compile(fn, types: dict, constexprs: dict, num_warps: int):
    """Compile `fn` for an H100/H200 (sm_90) without a GPU: Triton's code generator, LLVM and
    the ptxas that ships with triton, as a CUDA launch would, with the launch's options."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constants = {}, {}
    for name in fn.arg_names:
        if name in constexprs or types.get(name) is None:
            signature[name] = "constexpr"
            constants[name] = constexprs.get(name)
        else:
            signature[name] = types[name]
    source = ASTSource(fn=fn, signature=signature, constexprs=constants)
    options = {"num_warps": num_warps, "enable_fp_fusion": False}
    return triton_compile(source, target=GPUTarget("cuda", 90, 32), options=options)


@needs_triton
@pytest.mark.slow
def test_kernels_compile_for_a_gpu_without_one(monkeypatch):
    """The interpreter does not type-check as the compiler does: compile each kernel with
    its richest flags (None for the absent optional pointers) down to GPU code."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernels = triton_scan.kernels(False)
    f32, ptr, u8, i32 = "fp32", "*fp32", "*u8", "i32"
    coeffs = dict(a_syn=f32, a_mem=f32, b_mem=f32, lerp_w=f32, threshold=f32, ratio=f32)
    coeffs.update(p=f32, q=f32, nb_steps=i32, row=i32, C=i32, L=i32)
    forward = dict(coeffs, cur=ptr, mem_out=ptr, fired=u8, syn_out=ptr, weight=ptr)
    forward.update({k: "i64" for k in ("seed_lo", "seed_hi", "stream_lo", "stream_hi")})
    forward.update(first_step="i64")
    backward = dict(coeffs, fired=u8, mem_in=ptr, syn_in=ptr, sg=None, grad_spikes=ptr)
    backward.update(grad_syn=ptr, weight=ptr)
    flags = dict(RESET_FULL=True, LERP_SMALL=False, KEEP_SYN=True)
    rec = dict(K=5, DELAY=2, BC=16, BL=32)
    rules = (spikes.ESC_SIGMOID, spikes.ESC_EXPONENTIAL, spikes.ESC_SUPERSPIKE)
    cases = [
        (kernels.lif_forward_flat, forward, dict(flags, ESCAPE=rule, BLOCK=triton_scan.BLOCK))
        for rule in rules
    ]
    cases += [
        (kernels.lif_forward_rec, forward, dict(flags, ESCAPE=spikes.ESC_SIGMOID, **rec)),
        (kernels.lif_backward_flat, backward, dict(FORM=2, RESET_FULL=True, DIFF=True, BLOCK=512)),
        (kernels.lif_backward_rec, backward, dict(FORM=0, RESET_FULL=True, DIFF=True, **rec)),
    ]
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not (bundled.exists() or shutil.which("ptxas") or os.environ.get("TRITON_PTXAS_PATH")):
        pytest.skip("this triton ships no CUDA assembler (ptxas)")
    for fn, types, constexprs in cases:
        compiled = _compile(fn, types, constexprs, num_warps=4)
        assert compiled.asm["cubin"]  # GPU machine code
        assert "fma.rn.f32" in compiled.asm["ptx"]  # the lerp's fused multiply-add stays
        if "ESCAPE" in constexprs:  # the draws: 32-bit high products, correctly rounded division
            assert "mul.hi.u32" in compiled.asm["ptx"]
            assert "div.rn.f32" in compiled.asm["ptx"]
            assert "div.full.f32" not in compiled.asm["ptx"]


@needs_triton
@pytest.mark.parametrize("rec", [None, 3])
def test_a_stochastic_scan_is_one_launch_per_direction(interpreter, monkeypatch, rec):
    """The kernels draw their uniforms themselves: one forward and one backward launch,
    and no draw from torch's generators (a Stream is counter-based)."""
    from sgtheory import random

    launches = []
    original = triton_scan._launch
    monkeypatch.setattr(
        triton_scan,
        "_launch",
        lambda name, *a, **k: launches.append(name) or original(name, *a, **k),
    )
    gen = torch.Generator().manual_seed(0)
    current = (torch.randn(2, 10, 3, 7, generator=gen) + 0.5).requires_grad_()
    w_rec = torch.randn(3, 3, 3, generator=gen) * 0.3 if rec else None
    spike = SpikeFn(make_escape("sigmoid"), make_surrogate("superspike"), random.Stream(1, "l"))
    before = torch.get_rng_state()
    spikes, _ = lif_scan(current, spike, 0.8, 0.9, rec_weight=w_rec)
    spikes.sum().backward()
    kind = "flat" if rec is None else "rec"
    assert launches == [f"lif_forward_{kind}", f"lif_backward_{kind}"]
    assert torch.equal(torch.get_rng_state(), before) and spike.generator.offset == 10
