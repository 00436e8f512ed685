"""Every convolution algorithm equals torch's conv1d and its autograd; the choice is cached."""

import json

import pytest
import torch
import torch.nn.functional as F

from sgtheory import conv_algos
from sgtheory.conv import conv1d_chunked, conv1d_weight_grad
from sgtheory.conv_algos import ALGOS, CHUNK, FUNCTIONS, OPS, Geometry

# (cin, lin, cout, k, stride, padding): the Randman layers, SHD-like strides, padding, and a
# layer with more output positions than taps (the other branch of the unfold adjoint)
GEOMETRIES = [
    (1, 20, 32, 11, 1, 0),
    (32, 10, 8, 5, 1, 0),
    (6, 6, 10, 5, 1, 0),
    (1, 70, 4, 21, 10, 0),
    (3, 21, 5, 7, 3, 0),
    (4, 9, 3, 5, 1, 2),
    (2, 30, 3, 3, 2, 1),
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", GEOMETRIES)
@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_equals_conv1d_and_its_gradients(algo, shape, dtype):
    geo = Geometry(*shape)
    gen = torch.Generator().manual_seed(sum(shape))
    n = 2 * CHUNK + 37  # several oneDNN chunks and a ragged last one
    x = (torch.rand(n, geo.cin, geo.lin, generator=gen) < 0.3).to(dtype)
    w = torch.randn(geo.cout, geo.cin, geo.k, generator=gen, dtype=dtype)
    y, grad_out, gx, gw = _autograd_reference(x, w, geo, gen)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(FUNCTIONS["forward", algo](x, w, geo), y, **tol)
    torch.testing.assert_close(FUNCTIONS["input_grad", algo](grad_out, w, geo), gx, **tol)
    for inputs in (x, x.bool()):  # spikes are saved as booleans for the backward pass
        torch.testing.assert_close(FUNCTIONS["weight_grad", algo](inputs, grad_out, geo), gw, **tol)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("binary", [True, False])
def test_forced_algorithm_through_autograd_equals_conv1d(monkeypatch, algo, binary):
    """The autograd function with SGTHEORY_CONV_ALGO=<algo>: values and both gradients, for
    binary inputs (saved as booleans) and real-valued ones, in float64."""
    monkeypatch.setenv(conv_algos.ENV, algo)
    geo = Geometry(3, 20, 4, 5, 3, 2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(CHUNK + 100, 3, 20, generator=gen, dtype=torch.float64)
    x = (x < 0.2).double() if binary else x
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    y, grad_out, gx, gw = _autograd_reference(x, w, geo, gen)
    xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = conv1d_chunked(xi, wi, geo.stride, geo.padding)
    out.backward(grad_out)
    for got, exact in ((out, y), (xi.grad, gx), (wi.grad, gw)):
        torch.testing.assert_close(got, exact)
    got_w = conv1d_weight_grad(x.bool() if binary else x, w.shape, grad_out, 3, 2)
    torch.testing.assert_close(got_w, gw)


def test_setting_forces_per_operation_and_rejects_bad_values(monkeypatch):
    monkeypatch.setenv(conv_algos.ENV, "forward=banded, weight_grad=unfold")
    assert [conv_algos.forced(op) for op in OPS] == ["banded", None, "unfold"]
    conv_algos.force("onednn")  # from Python: wins over the environment
    assert [conv_algos.forced(op) for op in OPS] == ["onednn"] * 3
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

    def fake_measure(op, g, samples, dtype):
        calls.append((op, g, samples, dtype))
        return dict(fake)

    monkeypatch.setattr(conv_algos, "measure", fake_measure)
    cpu = torch.device("cpu")
    assert conv_algos.choose("weight_grad", geo, 40000, torch.float32, cpu) == "unfold"
    assert calls == [("weight_grad", geo, conv_algos.MEASURE_SAMPLES, torch.float32)]
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
    # another dtype or operation is another entry
    assert conv_algos.choose("forward", geo, 40000, torch.float32, cpu) == "banded"
    assert len(calls) == 2


def test_a_choice_stored_meanwhile_by_another_process_wins(monkeypatch, tmp_path):
    """Two processes measuring at once: the first to store its choice decides for both, so
    that they (e.g. a run and its resumption) round alike."""
    geo = Geometry(8, 6, 16, 5, 1, 0)
    cpu = torch.device("cpu")

    def other_process_finishes_first(op, g, samples, dtype):
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


def test_measure_times_every_candidate_and_banded_only_for_small_bands():
    randman_l3 = Geometry(64, 6, 128, 5, 1, 0)
    shd_l1 = Geometry(1, 700, 16, 21, 10, 0)  # a dense matrix 33x the convolution's FLOPs
    assert conv_algos.candidates(randman_l3, torch.float32) == ALGOS
    assert "banded" not in conv_algos.candidates(shd_l1, torch.float32)
    seconds = conv_algos.measure("input_grad", Geometry(4, 8, 6, 3, 1, 1), 64, torch.float32)
    assert set(seconds) == set(ALGOS) and all(0 < s < 10 for s in seconds.values())


def test_flop_count_of_the_randman_layers():
    """2 x samples x cout x cin x k x lout per operation, by hand for layer 3 (6 -> 2)."""
    geo = Geometry(64, 6, 128, 5, 1, 0)
    assert geo.lout == 2
    assert geo.flops(40000) == 2 * 40000 * 128 * 64 * 5 * 2
