"""The algorithms that `algos` chooses among for a 1-D convolution and its two
gradients, over (samples, channels, positions) tensors in either memory layout.

Layouts. A tensor shaped (samples, channels, positions) is *standard* when contiguous and
*channels-last* when its storage is (samples, positions, channels), i.e. its
``transpose(1, 2)`` is contiguous. Every function here accepts inputs in any layout (it
copies where it must) and writes its output (the forward's result, the input gradient) in
the layout that ``channels_last`` asks for. A channels-last activation lets a convolution
read each output position's receptive field as one contiguous run of the storage, so
`positions` runs on it with no copy at all.

* ``onednn``: torch's convolution (oneDNN on CPU) over chunks of CHUNK samples;
* ``unfold``: im2col (``Tensor.unfold``) and one matrix product per chunk of samples;
* ``banded``: the convolution as one dense matrix (channels x positions in, out), a single
  matrix product over all samples; it multiplies the zeros outside the kernel's band too,
  so it is a candidate only where that at most triples the FLOPs;
* ``positions`` (channels-last): one matrix product per output position, whose input is the
  (samples, k x channels) window read in place from the channels-last storage and whose
  output is written in place, no im2col copy and no wasted FLOPs;
* ``sparse`` (forward and weight gradient, float32 on CPU): the C kernels of
  ``csrc/spike_conv.c`` list each sample's nonzero inputs and add only their weights (or
  output gradients), so the work scales with the number of spikes, not the FLOP count of
  the shapes (a Randman layer's input holds 1-6 % ones). An input denser than
  `max_density` (the density up to which `conv_algos` measured it faster than the dense
  algorithms) runs the dense algorithm `fallback` instead, so that a dense input never
  takes the slow path. Skipping zeros has one visible effect: where an output gradient is
  infinite and the input 0, a dense product gives 0 x inf = NaN, `sparse` nothing.

All of them equal ``F.conv1d`` and its gradients up to float rounding (tested).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from sgtheory.backends.native import build

ALGOS = ("onednn", "unfold", "banded", "positions", "sparse")
CHUNK = 512  # samples per oneDNN call: oneDNN is slower on one call over 10^5 samples
UNFOLD_BYTES = 16 << 20  # im2col buffer per chunk: stays in the allocator's reused heap
CAST_BYTES = 32 << 20  # a cast or re-laid-out copy of the input per chunk, at most
SPARSE_MAX_DENSITY = 0.1  # nonzero fraction up to which `sparse` runs at most (default)
SPARSE_MIN_PART = 256  # samples per thread of `sparse`, at least


# --- layouts -------------------------------------------------------------------------------


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether (samples, channels, positions) `t` is stored as (samples, positions, channels)."""
    return t.dim() == 3 and t.transpose(1, 2).is_contiguous()


def to_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`t` (samples, channels, positions) in the asked layout: itself if it already is."""
    if channels_last:
        return t if is_channels_last(t) else t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous()


def _empty(n: int, c: int, length: int, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An uninitialised (n, c, length) tensor in the asked layout, dtype and device of `like`."""
    if channels_last:
        return like.new_empty((n, length, c)).transpose(1, 2)
    return like.new_empty((n, c, length))


def _flat(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(samples, channels x positions) rows in the layout's order (a view where it already is)."""
    if channels_last:
        return t.transpose(1, 2).reshape(t.shape[0], -1)
    return t.reshape(t.shape[0], -1)


def _unflat(rows: torch.Tensor, c: int, length: int, channels_last: bool) -> torch.Tensor:
    """Inverse of `_flat` for contiguous rows: a (samples, c, length) view."""
    if channels_last:
        return rows.view(-1, length, c).transpose(1, 2)
    return rows.view(-1, c, length)


# --- oneDNN: torch's convolution over chunks of samples ----------------------------------


def _chunk(t: torch.Tensor) -> int:
    """oneDNN's chunk: CHUNK samples on CPU, the whole batch elsewhere (cuDNN)."""
    return CHUNK if t.device.type == "cpu" else max(1, t.shape[0])


def _onednn_forward(x, w, geo, channels_last: bool = False) -> torch.Tensor:
    n, step = x.shape[0], _chunk(x)
    if n <= step:
        out = F.conv1d(x.to(w.dtype), w, stride=geo.stride, padding=geo.padding)
        return to_layout(out, channels_last)
    out = _empty(n, geo.cout, geo.lout, w, channels_last)
    for i in range(0, n, step):
        out[i : i + step] = F.conv1d(
            x[i : i + step].to(w.dtype), w, stride=geo.stride, padding=geo.padding
        )
    return out


def _onednn_backward(x, w, grad_out, geo, mask: list[bool]):
    """aten's convolution backward of one chunk (x only for its shape if mask[1] is False)."""
    return torch.ops.aten.convolution_backward(
        grad_out, x, w, None, [geo.stride], [geo.padding], [1], False, [0], 1, [*mask, False]
    )


def _onednn_input_grad(g, w, geo, channels_last: bool = False) -> torch.Tensor:
    n, step = g.shape[0], _chunk(g)
    gx = _empty(n, geo.cin, geo.lin, w, channels_last)
    for i in range(0, n, step):
        shape_only = gx[i : i + step]  # convolution_backward reads only the shape of x
        gx[i : i + step] = _onednn_backward(shape_only, w, g[i : i + step], geo, [True, False])[0]
    return gx


def _onednn_weight_grad(x, g, geo, channels_last: bool = False) -> torch.Tensor:
    w = g.new_empty((geo.cout, geo.cin, geo.k))  # shape only
    acc = torch.zeros(w.shape, dtype=g.dtype, device=g.device)
    step = _chunk(g)
    for i in range(0, x.shape[0], step):
        part = x[i : i + step].to(g.dtype)
        acc += _onednn_backward(part, w, g[i : i + step], geo, [False, True])[1]
    return acc


# --- unfold: im2col and a matrix product per chunk ----------------------------------------


def _unfold_chunk(geo, itemsize: int) -> int:
    return max(1, UNFOLD_BYTES // (geo.lout * geo.cin * geo.k * itemsize))


def _patches(x: torch.Tensor, geo, dtype: torch.dtype) -> torch.Tensor:
    """(samples x lout, cin x k) im2col rows, ordered by (sample, output position)."""
    x = x.to(dtype)
    if geo.padding:
        x = F.pad(x, (geo.padding, geo.padding))
    cols = x.unfold(2, geo.k, geo.stride).transpose(1, 2)  # (n, lout, cin, k)
    return cols.reshape(-1, geo.cin * geo.k)


def _unfold_forward(x, w, geo, channels_last: bool = False) -> torch.Tensor:
    n, step = x.shape[0], _unfold_chunk(geo, w.element_size())
    w2 = w.reshape(geo.cout, -1).t()
    if channels_last:  # the product's rows are (sample, position): channels-last already
        out = w.new_empty((n, geo.lout, geo.cout))
        for i in range(0, n, step):
            rows = out[i : i + step].view(-1, geo.cout)
            torch.mm(_patches(x[i : i + step], geo, w.dtype), w2, out=rows)
        return out.transpose(1, 2)
    out = w.new_empty((n, geo.cout, geo.lout))
    for i in range(0, n, step):
        rows = torch.mm(_patches(x[i : i + step], geo, w.dtype), w2)
        out[i : i + step] = rows.view(-1, geo.lout, geo.cout).transpose(1, 2)
    return out


def _fold(cols: torch.Tensor, geo) -> torch.Tensor:
    """Adjoint of `_patches` for (n, lout, cin, k) columns: sum them into (n, cin, lin)."""
    n, s = cols.shape[0], geo.stride
    full = torch.zeros(
        (n, geo.cin, geo.lin + 2 * geo.padding), dtype=cols.dtype, device=cols.device
    )
    if geo.lout <= geo.k:
        for pos in range(geo.lout):
            full[:, :, pos * s : pos * s + geo.k] += cols[:, pos]
    else:
        span = s * (geo.lout - 1) + 1
        for j in range(geo.k):
            full[:, :, j : j + span : s] += cols[:, :, :, j].transpose(1, 2)
    return full[:, :, geo.padding : geo.padding + geo.lin]


def _unfold_input_grad(g, w, geo, channels_last: bool = False) -> torch.Tensor:
    n, step = g.shape[0], _unfold_chunk(geo, w.element_size())
    gx = _empty(n, geo.cin, geo.lin, w, channels_last)
    w2 = w.reshape(geo.cout, -1)
    for i in range(0, n, step):
        rows = g[i : i + step].transpose(1, 2).reshape(-1, geo.cout)
        cols = torch.mm(rows, w2).view(-1, geo.lout, geo.cin, geo.k)
        gx[i : i + step] = _fold(cols, geo)
    return gx


def _unfold_weight_grad(x, g, geo, channels_last: bool = False) -> torch.Tensor:
    step = _unfold_chunk(geo, g.element_size())
    acc = torch.zeros((geo.cout, geo.cin * geo.k), dtype=g.dtype, device=g.device)
    for i in range(0, x.shape[0], step):
        rows = g[i : i + step].transpose(1, 2).reshape(-1, geo.cout)
        acc += torch.mm(rows.t(), _patches(x[i : i + step], geo, g.dtype))
    return acc.view(geo.cout, geo.cin, geo.k)


# --- banded: the convolution as one dense matrix ------------------------------------------


@lru_cache(maxsize=64)
def _band(geo, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, index): which (cout, cin, k, lout) taps fall inside the input, and where each
    lands in the dense (inputs, outputs) matrix, flattened; rows and columns are ordered
    (channel, position) in the standard layout and (position, channel) in channels-last."""
    o = torch.arange(geo.cout).view(-1, 1, 1, 1)
    c = torch.arange(geo.cin).view(1, -1, 1, 1)
    j = torch.arange(geo.k).view(1, 1, -1, 1)
    p = torch.arange(geo.lout).view(1, 1, 1, -1)
    pos = p * geo.stride - geo.padding + j
    valid = ((pos >= 0) & (pos < geo.lin)).expand(geo.cout, geo.cin, geo.k, geo.lout)
    if channels_last:
        row, col = pos * geo.cin + c, p * geo.cout + o
    else:
        row, col = c * geo.lin + pos, o * geo.lout + p
    index = row * (geo.cout * geo.lout) + col
    return valid.contiguous(), index.expand(valid.shape)[valid]


def _dense(w: torch.Tensor, geo, channels_last: bool) -> torch.Tensor:
    valid, index = _band(geo, channels_last)
    dense = torch.zeros(geo.cin * geo.lin * geo.cout * geo.lout, dtype=w.dtype, device=w.device)
    dense[index] = w.unsqueeze(-1).expand(valid.shape)[valid]
    return dense.view(geo.cin * geo.lin, geo.cout * geo.lout)


def _banded_forward(x, w, geo, channels_last: bool = False) -> torch.Tensor:
    rows = torch.mm(_flat(x.to(w.dtype), channels_last), _dense(w, geo, channels_last))
    return _unflat(rows, geo.cout, geo.lout, channels_last)


def _banded_input_grad(g, w, geo, channels_last: bool = False) -> torch.Tensor:
    rows = torch.mm(_flat(g, channels_last), _dense(w, geo, channels_last).t())
    return _unflat(rows, geo.cin, geo.lin, channels_last)


def _banded_weight_grad(x, g, geo, channels_last: bool = False) -> torch.Tensor:
    step = max(CHUNK, UNFOLD_BYTES // (geo.cin * geo.lin * g.element_size()))
    acc = torch.zeros((geo.cin * geo.lin, geo.cout * geo.lout), dtype=g.dtype, device=g.device)
    for i in range(0, x.shape[0], step):
        xs = _flat(x[i : i + step].to(g.dtype), channels_last)
        acc += torch.mm(xs.t(), _flat(g[i : i + step], channels_last))
    valid, index = _band(geo, channels_last)
    taps = torch.zeros(valid.shape, dtype=acc.dtype, device=acc.device)
    taps[valid] = acc.view(-1)[index]
    return taps.sum(-1)


# --- positions: a matrix product per output position on channels-last storage -------------


@lru_cache(maxsize=64)
def _windows(geo) -> tuple[tuple[int, int, int, int], ...]:
    """Per output position p: (p, first tap, end tap, first input position) of the taps that
    fall inside the input (padding contributes nothing); end <= first when none does."""
    out = []
    for p in range(geo.lout):
        start = p * geo.stride - geo.padding
        first, end = max(0, -start), min(geo.k, geo.lin - start)
        out.append((p, first, end, start + first))
    return tuple(out)


def _tap_rows(w: torch.Tensor) -> torch.Tensor:
    """The weight as (k x cin, cout) rows ordered (tap, channel), matching a window's storage."""
    return w.permute(2, 1, 0).reshape(-1, w.shape[0])


def _positions_forward(x, w, geo, channels_last: bool = True) -> torch.Tensor:
    xs, taps = _flat(x.to(w.dtype), True), _tap_rows(w)
    out = w.new_empty((x.shape[0], geo.lout, geo.cout))
    cin = geo.cin
    for p, first, end, at in _windows(geo):
        if end <= first:
            out[:, p].zero_()
        else:
            window = xs[:, at * cin : (at + end - first) * cin]
            torch.mm(window, taps[first * cin : end * cin], out=out[:, p])
    return out.transpose(1, 2) if channels_last else out.transpose(1, 2).contiguous()


def _positions_input_grad(g, w, geo, channels_last: bool = True) -> torch.Tensor:
    gs, taps = _flat(g.to(w.dtype), True), _tap_rows(w).t().contiguous()
    gx = w.new_zeros((g.shape[0], geo.lin * geo.cin))
    cin, cout = geo.cin, geo.cout
    for p, first, end, at in _windows(geo):
        if end > first:
            window = gx[:, at * cin : (at + end - first) * cin]
            window.addmm_(gs[:, p * cout : (p + 1) * cout], taps[:, first * cin : end * cin])
    gx = gx.view(-1, geo.lin, geo.cin).transpose(1, 2)
    return gx if channels_last else gx.contiguous()


def _positions_weight_grad(x, g, geo, channels_last: bool = True) -> torch.Tensor:
    acc = g.new_zeros((geo.k * geo.cin, geo.cout))
    cin, cout = geo.cin, geo.cout
    step = max(CHUNK, CAST_BYTES // (geo.cin * geo.lin * g.element_size()))
    for i in range(0, x.shape[0], step):
        xs, gs = _flat(x[i : i + step].to(g.dtype), True), _flat(g[i : i + step], True)
        for p, first, end, at in _windows(geo):
            if end > first:
                window = xs[:, at * cin : (at + end - first) * cin]
                acc[first * cin : end * cin].addmm_(window.t(), gs[:, p * cout : (p + 1) * cout])
    return acc.view(geo.k, geo.cin, geo.cout).permute(2, 1, 0).contiguous()


# --- sparse: only the nonzero inputs' weights, by the C kernels of csrc/spike_conv.c --------


def sparse_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `sparse` can run on `device` in `dtype` (CPU, float32, the C kernels built)."""
    return device.type == "cpu" and dtype == torch.float32 and build.library() is not None


def _sparse_rows(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x's samples as contiguous rows of float32 or uint8 in x's layout, channels-last?)."""
    channels_last = is_channels_last(x) and not x.is_contiguous()
    rows = _flat(x, channels_last).contiguous()
    if rows.dtype == torch.bool:
        return rows.view(torch.uint8), channels_last
    return rows.to(torch.float32), channels_last


def _sparse_run(fn, rows, layouts, geo, pointers, max_density: float) -> bool:
    """fn on every part of the samples, one thread each (the C file deals chunks of samples
    out to the parts in turn); False if some part was too dense (then nothing is valid).
    `layouts`: whether the input rows and the output (gradient) are channels-last."""
    shape = (geo.cin, geo.lin, geo.cout, geo.k, geo.stride, geo.padding, geo.lout)
    shape += (int(layouts[0]), int(rows.dtype == torch.uint8), int(layouts[1]), rows.shape[0])
    calls = [
        (*ptrs, *shape, part, len(pointers), max_density) for part, ptrs in enumerate(pointers)
    ]
    return min(build.parallel(fn, calls)) >= 0


def sparse_parts(samples: int) -> int:
    """Threads that share a sparse convolution of `samples` samples."""
    return max(1, min(torch.get_num_threads(), samples // SPARSE_MIN_PART))


def _sparse_forward(
    x, w, geo, channels_last=True, fallback="positions", max_density=SPARSE_MAX_DENSITY
):
    if not sparse_usable(x.device, w.dtype):
        return FUNCTIONS["forward", fallback](x, w, geo, channels_last)
    rows, layout = _sparse_rows(x)
    taps = _tap_rows(w).contiguous()
    out = _empty(x.shape[0], geo.cout, geo.lout, w, channels_last)  # written in place
    pointers = [(rows.data_ptr(), taps.data_ptr(), out.data_ptr())] * sparse_parts(len(rows))
    lib = build.library()
    layouts = (layout, channels_last)
    if not _sparse_run(lib.spike_conv_forward, rows, layouts, geo, pointers, max_density):
        return FUNCTIONS["forward", fallback](x, w, geo, channels_last)
    return out


def _sparse_weight_grad(
    x, g, geo, channels_last=True, fallback="positions", max_density=SPARSE_MAX_DENSITY
):
    if not sparse_usable(x.device, g.dtype):
        return FUNCTIONS["weight_grad", fallback](x, g, geo, channels_last)
    rows, layout = _sparse_rows(x)
    g_last = is_channels_last(g) and not g.is_contiguous()
    gs = _flat(g, g_last).contiguous()  # rows in g's own layout (a copy only if neither)
    acc = g.new_empty((sparse_parts(len(rows)), geo.k * geo.cin, geo.cout))  # one per thread
    pointers = [(rows.data_ptr(), gs.data_ptr(), part.data_ptr()) for part in acc]
    lib = build.library()
    layouts = (layout, g_last)
    if not _sparse_run(lib.spike_conv_weight_grad, rows, layouts, geo, pointers, max_density):
        return FUNCTIONS["weight_grad", fallback](x, g, geo, channels_last)
    return acc.sum(0).view(geo.k, geo.cin, geo.cout).permute(2, 1, 0).contiguous()


FUNCTIONS = {
    ("forward", "onednn"): _onednn_forward,
    ("forward", "unfold"): _unfold_forward,
    ("forward", "banded"): _banded_forward,
    ("forward", "positions"): _positions_forward,
    ("forward", "sparse"): _sparse_forward,
    ("input_grad", "onednn"): _onednn_input_grad,
    ("input_grad", "unfold"): _unfold_input_grad,
    ("input_grad", "banded"): _banded_input_grad,
    ("input_grad", "positions"): _positions_input_grad,
    ("weight_grad", "onednn"): _onednn_weight_grad,
    ("weight_grad", "unfold"): _unfold_weight_grad,
    ("weight_grad", "banded"): _banded_weight_grad,
    ("weight_grad", "positions"): _positions_weight_grad,
    ("weight_grad", "sparse"): _sparse_weight_grad,
}
