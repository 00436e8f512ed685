"""Every convolution algorithm equals torch's conv1d and its autograd; the choice is cached."""

import json

import pytest
import torch
import torch.nn.functional as F

from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv.algos import ALGOS, CHUNK, FUNCTIONS, OPS, Geometry
from sgtheory.backends.conv.chunked import conv1d_chunked, conv1d_weight_grad
from sgtheory.backends.native import build

# (cin, lin, cout, k, stride, padding): the Randman layers, SHD-like strides, padding, a
# layer with more output positions than taps (the other branch of the unfold adjoint), and
# padding wider than the kernel
GEOMETRIES = [
    (1, 20, 32, 11, 1, 0),
    (32, 10, 8, 5, 1, 0),
    (6, 6, 10, 5, 1, 0),
    (1, 70, 4, 21, 10, 0),
    (3, 21, 5, 7, 3, 0),
    (4, 9, 3, 5, 1, 2),
    (2, 30, 3, 3, 2, 1),
    (2, 3, 2, 2, 1, 3),  # padding wider than the kernel: some outputs see no input at all
]


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch, tmp_path):
    """No forced algorithm, and a cache of this test's own."""
    monkeypatch.delenv(conv_algos.ENV, raising=False)
    monkeypatch.setenv("SGTHEORY_CACHE", str(tmp_path))
    conv_algos.force(None)
    conv_algos._memo.clear()
    yield
    conv_algos.force(None)
    conv_algos._memo.clear()


def _autograd_reference(x, w, geo, gen):
    """conv1d output, a random output gradient, and torch's input and weight gradients."""
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = F.conv1d(xr, wr, stride=geo.stride, padding=geo.padding)
    grad_out = torch.randn(y.shape, generator=gen, dtype=x.dtype)
    y.backward(grad_out)
    return y.detach(), grad_out, xr.grad, wr.grad


def _assert_layout(t: torch.Tensor, channels_last: bool) -> None:
    if channels_last:
        assert t.transpose(1, 2).is_contiguous(), t.stride()
    else:
        assert t.is_contiguous(), t.stride()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", GEOMETRIES)
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("layout_in", ["standard", "channels_last"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_algorithm_equals_conv1d_and_its_gradients(
    algo, shape, dtype, layout_in, channels_last
):
    """Values and both gradients for inputs in either layout, outputs in the asked one."""
    geo = Geometry(*shape)
    gen = torch.Generator().manual_seed(sum(shape))
    n = 2 * CHUNK + 37  # several oneDNN chunks and a ragged last one
    density = 0.05 if algo == "sparse" else 0.3  # sparse runs up to SPARSE_MAX_DENSITY
    x = (torch.rand(n, geo.cin, geo.lin, generator=gen) < density).to(dtype)
    w = torch.randn(geo.cout, geo.cin, geo.k, generator=gen, dtype=dtype)
    y, grad_out, gx, gw = _autograd_reference(x, w, geo, gen)
    cl_in = layout_in == "channels_last"
    x_in, g_in = conv_algos.to_layout(x, cl_in), conv_algos.to_layout(grad_out, cl_in)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    out = FUNCTIONS["forward", algo](x_in, w, geo, channels_last)
    torch.testing.assert_close(out, y, **tol)
    _assert_layout(out, channels_last)
    if ("input_grad", algo) in FUNCTIONS:  # sparse: forward and weight gradient only
        got_gx = FUNCTIONS["input_grad", algo](g_in, w, geo, channels_last)
        torch.testing.assert_close(got_gx, gx, **tol)
        _assert_layout(got_gx, channels_last)
    for inputs in (x_in, x_in.bool()):  # spikes are saved as booleans for the backward pass
        got_gw = FUNCTIONS["weight_grad", algo](inputs, g_in, geo, channels_last)
        torch.testing.assert_close(got_gw, gw, **tol)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_forced_algorithm_through_autograd_equals_conv1d(monkeypatch, algo, binary, channels_last):
    """The autograd function with SGTHEORY_CONV_ALGO=<algo>: values and both gradients, for
    binary inputs (saved as booleans) and real-valued ones, in float64; the output in the
    asked layout and the input's gradient in the input's."""
    monkeypatch.setenv(conv_algos.ENV, algo)
    geo = Geometry(3, 20, 4, 5, 3, 2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(CHUNK + 100, 3, 20, generator=gen, dtype=torch.float64)
    x = (x < 0.2).double() if binary else x
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    y, grad_out, gx, gw = _autograd_reference(x, w, geo, gen)
    xi = conv_algos.to_layout(x, channels_last).requires_grad_()
    wi = w.clone().requires_grad_()
    out = conv1d_chunked(xi, wi, geo.stride, geo.padding, channels_last=channels_last)
    _assert_layout(out, channels_last)
    out.backward(grad_out)
    for got, exact in ((out, y), (xi.grad, gx), (wi.grad, gw)):
        torch.testing.assert_close(got, exact)
    _assert_layout(xi.grad, channels_last)
    got_w = conv1d_weight_grad(x.bool() if binary else x, w.shape, grad_out, 3, 2)
    torch.testing.assert_close(got_w, gw)


def test_setting_forces_per_operation_and_rejects_bad_values(monkeypatch):
    monkeypatch.setenv(conv_algos.ENV, "forward=banded, weight_grad=unfold")
    assert [conv_algos.forced(op) for op in OPS] == ["banded", None, "unfold"]
    conv_algos.force("onednn")  # from Python: wins over the environment
    assert [conv_algos.forced(op) for op in OPS] == ["onednn"] * 3
    conv_algos.force("sparse")  # for the operations it serves; input_grad stays measured
    assert [conv_algos.forced(op) for op in OPS] == ["sparse", None, "sparse"]
    with pytest.raises(ValueError, match="sparse serves forward and weight_grad only"):
        conv_algos.force("input_grad=sparse")
    conv_algos.force(None)
    monkeypatch.setenv(conv_algos.ENV, "fastest")
    with pytest.raises(ValueError, match="SGTHEORY_CONV_ALGO='fastest' is not valid; choose"):
        conv_algos.forced("forward")
    with pytest.raises(ValueError, match="force='forward=fft' is not valid"):
        conv_algos.force("forward=fft")


def test_choice_is_the_fastest_measured_and_is_read_back_from_the_cache(monkeypatch, tmp_path):
    geo = Geometry(8, 6, 16, 5, 1, 0)
    fake = {"onednn": 3.0, "unfold": 1.0, "banded": 2.0}
    calls = []

    def fake_measure(op, g, samples, dtype, channels_last):
        calls.append((op, g, samples, dtype, channels_last))
        return dict(fake)

    monkeypatch.setattr(conv_algos, "measure", fake_measure)
    cpu = torch.device("cpu")
    assert conv_algos.choose("weight_grad", geo, 40000, torch.float32, cpu) == "unfold"
    assert calls == [("weight_grad", geo, conv_algos.MEASURE_SAMPLES, torch.float32, False)]
    (path,) = (tmp_path / "conv_algos").glob("*.json")
    entry = json.loads(path.read_text())
    assert entry["choice"] == "unfold" and entry["seconds"] == fake
    assert entry["key"]["threads"] == torch.get_num_threads()
    assert entry["key"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert "loadavg" in entry  # kept even from a busy machine, so that reruns round alike
    conv_algos._memo.clear()  # a new process: the file answers, nothing is measured
    fake["unfold"] = 9.0
    assert conv_algos.choose("weight_grad", geo, 40000, torch.float32, cpu) == "unfold"
    assert len(calls) == 1
    # another dtype, operation or layout is another entry
    assert conv_algos.choose("forward", geo, 40000, torch.float32, cpu) == "banded"
    assert len(calls) == 2
    fake["positions"] = 0.5
    assert conv_algos.choose("forward", geo, 40000, torch.float32, cpu, True) == "positions"
    assert calls[-1] == ("forward", geo, conv_algos.MEASURE_SAMPLES, torch.float32, True)
    assert len(list((tmp_path / "conv_algos").glob("*.json"))) == 3
    # sparse fastest at 2 %: chosen, with the fastest dense algorithm as its fallback and
    # its limit where the line through its times at 2 % and 10 % meets the dense time:
    # 0.1 s + (d - 0.02) x 10 s = 0.5 s at d = 0.06
    fake.update({"sparse": 0.1, "sparse@0.1": 0.9})
    choice = conv_algos.choice("weight_grad", geo, 40000, torch.float32, cpu, True)
    assert choice.algo == "sparse" and choice.dense == "positions"
    assert choice.max_density == pytest.approx(0.06)
    conv_algos._memo.clear()
    assert conv_algos.choice("weight_grad", geo, 40000, torch.float32, cpu, True) == choice
    entries = [json.loads(p.read_text()) for p in (tmp_path / "conv_algos").glob("*.json")]
    (entry,) = [e for e in entries if e["choice"] == "sparse"]
    assert entry["dense_choice"] == "positions"
    assert entry["sparse_max_density"] == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("sparse_low", "sparse_high", "expected"),
    [
        (0.1, 0.9, ("sparse", 0.06)),  # crossover between the two densities
        (0.1, 0.3, ("sparse", 0.1)),  # faster up to 10 %: no extrapolation beyond it
        (0.1, 0.05, ("sparse", 0.1)),  # (timing noise: faster when denser) up to 10 %
        (0.6, 0.9, ("positions", 0.0)),  # slower already at 2 %: the dense algorithm
    ],
)
def test_sparse_limit_is_the_measured_crossover(sparse_low, sparse_high, expected):
    times = {"onednn": 3.0, "positions": 0.5, "sparse": sparse_low, "sparse@0.1": sparse_high}
    choice = conv_algos._fastest(times)
    assert (choice.algo, choice.max_density) == pytest.approx(expected)
    assert choice.dense == "positions"


def test_a_choice_stored_meanwhile_by_another_process_wins(monkeypatch, tmp_path):
    """Two processes measuring at once: the first to store its choice decides for both, so
    that they (e.g. a run and its resumption) round alike."""
    geo = Geometry(8, 6, 16, 5, 1, 0)
    cpu = torch.device("cpu")

    def other_process_finishes_first(op, g, samples, dtype, channels_last):
        monkeypatch.setattr(conv_algos, "measure", lambda *a: {"onednn": 1.0, "unfold": 2.0})
        conv_algos._memo.clear()
        assert conv_algos.choose(op, g, 40000, dtype, cpu) == "onednn"  # stores onednn
        return {"onednn": 2.0, "unfold": 1.0}  # this process would pick unfold

    monkeypatch.setattr(conv_algos, "measure", other_process_finishes_first)
    assert conv_algos.choose("forward", geo, 40000, torch.float32, cpu) == "onednn"
    (path,) = (tmp_path / "conv_algos").glob("*.json")
    assert json.loads(path.read_text())["choice"] == "onednn"
    assert not list((tmp_path / "conv_algos").glob("*.tmp*"))


def test_small_batches_run_onednn_unmeasured(monkeypatch):
    monkeypatch.setattr(conv_algos, "measure", lambda *a: 1 / 0)  # must not be called
    geo = Geometry(8, 6, 16, 5, 1, 0)
    n = conv_algos.MIN_MEASURED - 1
    assert conv_algos.choose("forward", geo, n, torch.float32, torch.device("cpu")) == "onednn"


def test_a_small_batch_called_once_per_step_is_measured_at_its_own_size(monkeypatch):
    """A recurrent convolution runs on `batch` samples once per step: measured (at the
    per-call size) when all its calls together are large enough, else oneDNN."""
    calls = []
    fake = {"onednn": 2.0, "unfold": 1.0}
    monkeypatch.setattr(conv_algos, "measure", lambda *a: calls.append(a) or dict(fake))
    geo, cpu = Geometry(16, 68, 16, 5, 1, 2), torch.device("cpu")
    assert conv_algos.choice("forward", geo, 400, torch.float32, cpu, calls=349).algo == "unfold"
    assert calls == [("forward", geo, 512, torch.float32, False)]  # 400 rounded up to 2^9
    assert conv_algos.choice("forward", geo, 400, torch.float32, cpu, calls=10).algo == "onednn"
    assert len(calls) == 1


def test_measure_times_every_candidate_and_banded_only_for_small_bands():
    randman_l3 = Geometry(64, 6, 128, 5, 1, 0)
    shd_l1 = Geometry(1, 700, 16, 21, 10, 0)  # a dense matrix 33x the convolution's FLOPs
    sparse = ("sparse",) if build.library() is not None else ()
    standard = ("onednn", "unfold", "banded")
    assert conv_algos.candidates(randman_l3, torch.float32) == standard + sparse
    assert conv_algos.candidates(randman_l3, torch.float32, True) == ALGOS[: 4 + len(sparse)]
    assert conv_algos.candidates(randman_l3, torch.bfloat16) == standard  # sparse: float32
    assert "banded" not in conv_algos.candidates(shd_l1, torch.float32)
    for cl, op in ((False, "input_grad"), (True, "input_grad"), (True, "forward")):
        geo = Geometry(4, 8, 6, 3, 1, 1)
        seconds = conv_algos.measure(op, geo, 64, torch.float32, cl)
        timed = set(conv_algos.candidates(geo, torch.float32, cl, op))
        timed |= {f"sparse@{conv_algos.SPARSE_DENSITIES[1]}"} if "sparse" in timed else set()
        assert set(seconds) == timed
        assert ("sparse" in seconds) == (op == "forward" and bool(sparse))
        assert all(0 < s < 10 for s in seconds.values())


def test_flop_count_of_the_randman_layers():
    """2 x samples x cout x cin x k x lout per operation, by hand for layer 3 (6 -> 2)."""
    geo = Geometry(64, 6, 128, 5, 1, 0)
    assert geo.lout == 2
    assert geo.flops(40000) == 2 * 40000 * 128 * 64 * 5 * 2


def test_channels_last_is_the_cpu_default_and_can_be_turned_off(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(conv_algos.LAYOUT_ENV, raising=False)
    assert conv_algos.use_channels_last(cpu) and not conv_algos.use_channels_last(cuda)
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv(conv_algos.LAYOUT_ENV, off)
        assert not conv_algos.use_channels_last(cpu)
    monkeypatch.setenv(conv_algos.LAYOUT_ENV, "1")
    assert conv_algos.use_channels_last(cpu)
