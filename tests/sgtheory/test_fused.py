"""The native backend (C kernels) of the LIF scan against the torch loop and against plain
autograd, the escape noises' inverse (on which the fused sampling rests), building and
loading the kernels, and the allocator switch."""

import math
import warnings

import pytest
import torch

from sgtheory import random
from sgtheory.backends import torch_loop
from sgtheory.backends.allocator import retain_freed_memory
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.lif import LIFParams, delay_in_time, lif_scan_reference
from sgtheory.scan import lif_scan
from sgtheory.spikes import ESCAPE_NOISES, SURROGATES, SpikeFn, make_escape, make_surrogate

needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C compiler here")


@pytest.fixture(autouse=True)
def no_triton_interpreter(monkeypatch):
    """Under TRITON_INTERPRET=1 the Triton kernels would take CPU scans from the C kernels."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def scan_with(monkeypatch, use_fused, escape, surrogate, reset, diff_reset, scan=lif_scan):
    """Spikes, potentials and input gradients of one float32 scan, fused or not."""
    monkeypatch.setenv("SGTHEORY_FUSED", "1" if use_fused else "0")
    torch.manual_seed(0)
    current = (torch.randn(6, 50, 5, 13) * 0.5 + 0.3).requires_grad_()
    weights = torch.randn(6, 50, 5, 13)
    spike = SpikeFn(
        make_escape(escape), make_surrogate(surrogate), torch.Generator().manual_seed(3)
    )
    spikes, mem = scan(current, spike, 0.8, 0.9, 1.0, reset, diff_reset)
    (grad,) = torch.autograd.grad((spikes * weights).sum(), [current])
    return spikes, mem, grad


@needs_compiler
@pytest.mark.parametrize("escape", list(ESCAPE_NOISES))
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("reset", ["full", "leak"])
@pytest.mark.parametrize("diff_reset", [False, True])
def test_fused_scan_equals_torch_loop_and_plain_autograd(
    monkeypatch, escape, surrogate, reset, diff_reset
):
    fast = scan_with(monkeypatch, True, escape, surrogate, reset, diff_reset)
    assert build.runs(torch.zeros(1))
    loop = scan_with(monkeypatch, False, escape, surrogate, reset, diff_reset)
    plain = scan_with(monkeypatch, False, escape, surrogate, reset, diff_reset, lif_scan_reference)
    assert 0.01 < fast[0].mean() < 0.5
    for other in (loop, plain):
        assert torch.equal(fast[0], other[0])  # the same spikes, also for stochastic noise
        torch.testing.assert_close(fast[1], other[1], rtol=0, atol=1e-5)
        scale = other[2].abs().max()
        assert scale > 0
        # float32 sums over 50 steps in different orders: agree to 1e-4 of the largest
        assert (fast[2] - other[2]).abs().max() <= 1e-4 * scale


@needs_compiler
def test_fused_scan_split_over_threads_equals_one_thread(monkeypatch):
    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    current = torch.randn(40, 30, 97, 23) * 0.5 + 0.3  # 40 steps x 69k neurons, odd row
    spike = SpikeFn(make_escape("sigmoid"), make_surrogate("superspike"))
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            assert len(build.ranges(30 * 97 * 23, 40)) == threads
            spike.generator = torch.Generator().manual_seed(5)
            cur = current.clone().requires_grad_()
            spikes, mem = lif_scan(cur, spike, 0.8, 0.9, time_major=True)
            spikes.backward(torch.ones_like(spikes))
            results.append((spikes, mem, cur.grad))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)  # neurons are independent: splitting changes nothing


def test_fused_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SGTHEORY_FUSED", "0")
    assert build.library() is None
    assert not build.runs(torch.zeros(3))


def test_no_compiler_falls_back_to_the_torch_loop_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    monkeypatch.setenv("SGTHEORY_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_state", {"lib": None, "tried": False, "pool": None, "workers": 0})
    monkeypatch.setattr(build, "compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="torch loop"):
        assert build.library() is None
    spike = SpikeFn(make_escape("step"), make_surrogate("superspike"))
    spikes, _ = lif_scan(torch.ones(2, 5, 3), spike, 0.8, 0.9)  # still runs, by the loop
    assert spikes.shape == (2, 5, 3)


@needs_compiler
def test_kernels_are_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    monkeypatch.setenv("SGTHEORY_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_state", {"lib": None, "tried": False, "pool": None, "workers": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.library() is not None
    built = list(tmp_path.glob("lif_scan_*.so"))
    assert len(built) == 1
    assert build.build(build.compiler()) == built[0]  # cached: no second build


@pytest.mark.parametrize("name", [n for n, cls in ESCAPE_NOISES.items() if n != "step"])
def test_prob_inverse_inverts_prob(name):
    escape = make_escape(name)
    u = torch.linspace(1e-6, 1 - 1e-6, 2001, dtype=torch.float64)
    torch.testing.assert_close(escape.prob(escape.prob_inverse(u)), u, rtol=0, atol=1e-9)
    assert escape.prob_inverse(torch.zeros(1, dtype=torch.float64)).item() == float("-inf")


@pytest.mark.parametrize("name", [n for n, cls in ESCAPE_NOISES.items() if n != "step"])
def test_prob_inverse_into_out_gives_the_same_numbers(name):
    """The fused scan writes firing points with `out=`: bitwise those of the torch loop."""
    escape = make_escape(name)
    u = torch.rand(3 * 4099, generator=torch.Generator().manual_seed(5))
    u[:3] = torch.tensor([0.0, 0.5, 1.0 - 2**-24])
    before = u.clone()
    out = torch.full_like(u, 7.0)
    assert escape.prob_inverse(u, out=out) is out
    assert torch.equal(u, before)  # the uniforms are left as drawn
    assert torch.equal(out, escape.prob_inverse(u))


@pytest.mark.parametrize("name", [n for n, cls in ESCAPE_NOISES.items() if n != "step"])
def test_firing_point_rule_equals_uniform_below_probability(name):
    escape = make_escape(name)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(200_000, generator=gen, dtype=torch.float64) * 0.3
    u = torch.rand(200_000, generator=gen, dtype=torch.float64)
    by_inverse = x > escape.prob_inverse(u)
    by_prob = u < escape.prob(x)
    clear = (u - escape.prob(x)).abs() > 1e-12  # away from rounding ties
    assert torch.equal(by_inverse[clear], by_prob[clear])
    assert clear.float().mean() > 0.999


def test_allocator_switch(monkeypatch):
    monkeypatch.setenv("SGTHEORY_MALLOPT", "0")
    assert retain_freed_memory() is False
    monkeypatch.setenv("SGTHEORY_MALLOPT", "1")
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert retain_freed_memory() is True


@needs_compiler
def test_fused_scan_works_in_a_forked_child(monkeypatch):
    """A thread pool inherited through fork has no threads: the child must make its own.

    (torch's own OpenMP pool does not survive fork either, so the child keeps torch to one
    thread and splits the scan over two ranges itself.)"""
    import multiprocessing

    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    monkeypatch.setattr(build, "ranges", _two_ranges)
    current = torch.randn(40, 20, 60, 7) * 0.5 + 0.3
    spike = SpikeFn(make_escape("step"), make_surrogate("superspike"))
    expected, _ = lif_scan(current, spike, 0.8, 0.9, time_major=True)  # pool made here
    assert build._state["pool"] is not None
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_scan_in_child, (current,)).get(timeout=60)
    assert torch.equal(got, expected)


def _two_ranges(row: int, nb_steps: int, block: int = build.BLOCK) -> list[tuple[int, int]]:
    return [(0, row // 2), (row // 2, row)]


def _scan_in_child(current: torch.Tensor) -> torch.Tensor:
    torch.set_num_threads(1)
    spike = SpikeFn(make_escape("step"), make_surrogate("superspike"))
    return lif_scan(current, spike, 0.8, 0.9, time_major=True)[0]


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
def test_c_philox_draws_equal_the_reference(monkeypatch, threads):
    """native.philox_uniform = random.uniform_reference bitwise: any first step (also not a
    multiple of 4, and near the 2^34 steps of a stream), any shape, split over threads."""
    monkeypatch.setattr(build, "MIN_PARALLEL", 64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cases = [(0, 0, 0, 1, (1,)), (7, 2**63 + 5, 3, 9, (2, 300)), (2**64 - 1, 11, 5, 6, (257,))]
        cases.append((5, 6, random.MAX_STEPS - 7, 7, (3, 5)))
        for seed, stream, first, steps, shape in cases:
            ours = native.philox_uniform(seed, stream, first, steps, shape)
            assert torch.equal(ours, random.uniform_reference(seed, stream, first, steps, shape))
    finally:
        torch.set_num_threads(before)


def test_element_layout_gives_each_storage_position_its_logical_index():
    """For a channels-last step (batch, channels, positions) stored as (batch, positions,
    channels): decoding storage position j by the layout (sizes and logical strides in
    storage order, as the C kernel does) gives the logical index of the neuron stored there."""
    step = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # value = logical index
    stored = step.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other storage
    layout = native.element_layout(stored).tolist()
    assert layout == [3, 2, 12, 4, 1, 3, 4]
    in_storage = stored.transpose(1, 2).reshape(-1)  # the values as they lie in memory
    ndim, decoded = layout[0], []
    for j in range(in_storage.numel()):
        rest, index = j, 0
        for d in reversed(range(ndim)):
            index += (rest % layout[1 + 2 * d]) * layout[2 + 2 * d]
            rest //= layout[1 + 2 * d]
        decoded.append(index)
    assert decoded == in_storage.long().tolist()
    assert native.element_layout(step).tolist() == [3, 2, 12, 3, 4, 4, 1]


@needs_compiler
@pytest.mark.parametrize("escape", list(ESCAPE_NOISES))
@pytest.mark.parametrize("delay", [1, 2, 7])
def test_fused_input_delay_equals_shifting_the_current(monkeypatch, escape, delay):
    """input_delay read late inside the C kernels = the kernels on a shifted copy (spikes,
    potentials, input gradients: bitwise), and = the torch loop (gradients up to rounding)."""
    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    results = []
    for variant in ("late", "shifted", "loop"):
        if variant == "loop":
            monkeypatch.setenv("SGTHEORY_FUSED", "0")
        torch.manual_seed(0)
        current = (torch.randn(6, 50, 5, 13) * 0.5 + 0.3).requires_grad_()
        weights = torch.randn(6, 50, 5, 13)
        spike = SpikeFn(
            make_escape(escape), make_surrogate("superspike"), torch.Generator().manual_seed(3)
        )
        if variant == "late":
            spikes, mem = lif_scan(current, spike, 0.8, 0.9, input_delay=delay)
        else:
            spikes, mem = lif_scan(delay_in_time(current, delay, 1), spike, 0.8, 0.9)
        (grad,) = torch.autograd.grad((spikes * weights).sum(), [current])
        results.append((spikes, mem, grad))
    late, shifted, loop = results
    for got, want in zip(late, shifted, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(late[0], loop[0]) and torch.equal(late[1], loop[1])
    assert (late[2] - loop[2]).abs().max() <= 1e-4 * loop[2].abs().max()
    assert late[2][:, 50 - delay :].abs().sum() == 0  # these steps reach no synapse in time
    assert late[1][:, : delay + 2].abs().sum() == 0  # the current reaches mem[delay + 2] first


@needs_compiler
@pytest.mark.parametrize("escape", list(ESCAPE_NOISES))
@pytest.mark.parametrize("diff_reset", [False, True])
def test_channels_last_current_runs_in_place_with_the_same_results(monkeypatch, escape, diff_reset):
    """A current stored channels-last ((time, batch, positions, channels) storage, as conv
    layers without recurrence make it) scans in its own layout, no copy: spikes and
    potentials bitwise those of the contiguous current (stochastic draws too: each neuron
    draws by its logical index), the input gradient too, and every output keeps the layout."""
    monkeypatch.setenv("SGTHEORY_FUSED", "1")
    torch.manual_seed(0)
    base = torch.randn(30, 16, 5, 13) * 0.5 + 0.3  # (time, batch, channels, positions)
    weights = torch.randn(30, 16, 5, 13)
    results = []
    for layout in ("contiguous", "channels_last"):
        current = base.clone()
        if layout == "channels_last":
            current = base.transpose(2, 3).contiguous().transpose(2, 3)
        current.requires_grad_()
        gen = torch.Generator().manual_seed(3)
        spike = SpikeFn(make_escape(escape), make_surrogate("superspike"), gen)
        spikes, mem = lif_scan(current, spike, 0.8, 0.9, 1.0, "full", diff_reset, time_major=True)
        (grad,) = torch.autograd.grad((spikes * weights).sum(), [current])
        for out in (spikes, mem, grad):
            assert out.stride() == current.stride()
        results.append((spikes, mem, grad))
    assert 0.01 < results[0][0].mean() < 0.5
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


def test_time_major_dense_keeps_step_blocks_and_copies_the_rest():
    storage = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 5, 4)
    cl = storage.transpose(2, 3)  # each step one contiguous block, neurons permuted
    assert native.time_major_dense(cl) is cl
    batch_major = torch.zeros(3, 2, 4, 5).transpose(0, 1)  # steps interleaved: copied
    assert native.time_major_dense(batch_major).is_contiguous()
    sliced = torch.zeros(2, 3, 4, 10)[..., ::2]  # holes in every step: copied
    assert native.time_major_dense(sliced).is_contiguous()


def ulps(value: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|value - exact| in units of the float32 spacing at the exactly rounded result."""
    rounded = exact.float()
    spacing = (rounded.nextafter(torch.tensor(float("inf"))) - rounded).abs().double()
    return (value.double() - exact).abs() / spacing


@needs_compiler
def test_logit_points_within_ulps_of_the_exact_value_for_every_draw_and_increasing():
    """Every float32 draw of torch.rand is k 2^-24: all 2^24 of them against float64, and
    the points never decrease with u."""
    draws = torch.arange(2**24, dtype=torch.float32) / 2**24
    beta = 10.0
    points = native.logit_points(draws, beta)
    exact = torch.logit(draws.double()) / beta
    assert points[0].item() == float("-inf")
    assert ulps(points[1:], exact[1:]).max() <= 2.0  # logit within 1.6, then / beta
    assert bool((points[1:] >= points[:-1]).all())
    # torch.logit's rounded quotient loses relative accuracy near 1/2; this does not
    near_half = slice(2**23 - 64, 2**23 + 64)
    assert ulps(points[near_half], exact[near_half]).max() <= 2.0


@needs_compiler
def test_logit_points_outside_the_draws_range():
    u = torch.tensor([1.0, -0.0, -0.5, 1.5, float("nan"), float("inf"), 1e-40, 3e-39, 0.25])
    points = native.logit_points(u, 2.0)
    assert points[0].item() == float("inf") and points[1].item() == float("-inf")
    assert bool(points[2:6].isnan().all())
    exact = torch.logit(u[6:].double()) / 2.0  # subnormal, just below FLT_MIN, normal
    assert ulps(points[6:], exact).max() <= 2.0


@needs_compiler
def test_logit_points_are_elementwise_in_place_and_over_threads():
    u = torch.rand(300_001, generator=torch.Generator().manual_seed(2))
    whole = native.logit_points(u, 10.0)
    pieces = torch.cat([native.logit_points(p.contiguous(), 10.0) for p in u.split(777)])
    assert torch.equal(whole, pieces)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        in_place = u.clone()
        assert native.logit_points(in_place, 10.0, out=in_place) is in_place
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(whole, in_place)
    escape = make_escape("sigmoid", beta=10.0)  # CPU float32: these numbers; float64: torch
    assert torch.equal(escape.prob_inverse(u), whole)
    assert torch.equal(escape.prob_inverse(u.double()), torch.logit(u.double()) / 10.0)


def test_logit_estimate_from_the_bits_is_within_its_bound_for_every_draw():
    """The lazy scan's estimate (bits(u) - bits(1 - u)) ln2 / 2^23 of logit(u): within
    0.0597 for all 2^24 draws (its margin LAZY_MARGIN must exceed that)."""
    draws = torch.arange(1, 2**24, dtype=torch.float32) / 2**24
    bits = draws.view(torch.int32).double() - (1.0 - draws).view(torch.int32).double()
    estimate = bits * math.log(2.0) / 2**23
    error = (estimate - torch.logit(draws.double())).abs().max().item()
    assert 0.059 < error <= 0.0597 < native.LAZY_MARGIN - 0.005


@needs_compiler
@pytest.mark.parametrize("margin", [math.inf, None])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lazy_logit_scan_gives_the_spikes_of_the_points_computed_beforehand(
    monkeypatch, margin, channels_last
):
    """An infinite margin: every draw's point is computed in the kernel; the default: few
    are. Both give the spikes of the same draws' points computed beforehand (the torch
    loop, escape.prob_inverse), and a margin of 0 (the estimate alone) would not."""
    if margin is not None:
        monkeypatch.setattr(native, "LAZY_MARGIN", margin)
    gen = torch.Generator().manual_seed(4)
    cur = torch.randn(30, 20, 7, 9, generator=gen) * 0.6 + 0.25
    if channels_last:  # stored (T, B, L, C), as the conv currents are
        cur = cur.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    escape, draws = make_escape("sigmoid", beta=10.0), random.Draws(8, 9, 2)
    params = LIFParams(0.8, 0.9, 1.0, "full", False)
    for delay in (0, 2):
        lazy = native.forward(cur, None, escape, draws, params, delay)
        shifted = delay_in_time(cur, delay, 0).contiguous()
        monkeypatch.setenv("SGTHEORY_FUSED", "0")  # points by escape.prob_inverse in torch
        on_points = torch_loop.forward(shifted, None, escape, draws, params)
        monkeypatch.setenv("SGTHEORY_FUSED", "1")
        assert 0.02 < on_points[0].float().mean() < 0.5
        assert torch.equal(lazy[0], on_points[0])
    monkeypatch.setattr(native, "LAZY_MARGIN", 0.0)
    estimate_only = native.forward(cur, None, escape, draws, params, delay)
    assert not torch.equal(estimate_only[0], lazy[0])


@needs_compiler
def test_sigmoid_escape_with_a_negative_beta_runs_fused_on_precomputed_points(monkeypatch):
    """The lazy logit's estimate needs beta > 0; another beta takes the points computed
    beforehand (no error), with the spikes of the torch loop."""
    results = []
    for use_fused in ("1", "0"):
        monkeypatch.setenv("SGTHEORY_FUSED", use_fused)
        cur = torch.randn(20, 30, 5, 7, generator=torch.Generator().manual_seed(0)) * 0.5
        escape = ESCAPE_NOISES["sigmoid"](beta=-4.0)
        spike = SpikeFn(escape, make_surrogate("superspike"), torch.Generator().manual_seed(1))
        results.append(lif_scan(cur, spike, 0.8, 0.9)[0])
    assert 0.01 < results[0].mean() < 0.5
    assert torch.equal(results[0], results[1])
