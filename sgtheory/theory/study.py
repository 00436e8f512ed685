"""The experiments of Theory/: bias of E[SG] against depth and beta, estimator variances,
the single-neuron panel. Plain settings in, a JSON-ready dict out (no plotting here).

Named networks (used by the tests and the README):

* ``deep3``: `BinaryNet` (2, 3, 3, 1), inputs (1, -0.5), readout 1, loss = the output
  spike, weights of seed 0 (gain 0.5, bias std 0.2); with the sigmoid pair at beta = 5
  every unit's spike probability stays within [0.013, 0.992];
* ``lif``: `LIFNet` (2, 2, 1) over 6 steps (18 spike variables), threshold 0.3, full
  reset through which the SG flows (diff_reset), loss = output spike count; weights of
  seed 1 (gain 1); spike probabilities within [0.006, 0.992] with the same pair.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, check_choice, check_positive
from .estimators import (
    reinforce_samples,
    sg_samples,
    smoothed_samples,
    stochad_samples,
)
from .exact import exact_moments, patterns
from .networks import BinaryNet, LIFNet
from .ops import PAIRS, Replay, library_pair, matched_pair

GAIN, BIAS = 0.5, 0.2  # weight std gain / sqrt(fan_in), bias std, of the binary networks
LIF_CURRENT = [[2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


@dataclass
class StudySettings:
    """Every setting of the study; defaults are the committed run of Theory/."""

    seed: int = 0
    pair: str = "sigmoid"  # escape noise with its matched surrogate, for depth/beta/variance
    beta: float = 5.0
    p0: float = 2.0 / 3.0
    delta_u: float = 0.133
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    width: int = 3
    nb_networks: int = 200  # random networks per depth / beta
    betas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0])
    beta_depth: int = 3
    nb_samples: int = 20000  # trials per estimator in the variance table
    nb_single: int = 20000  # trials per point of the single-neuron panel
    single_points: int = 13

    def validate(self) -> StudySettings:
        check_choice("pair", self.pair, PAIRS)
        for name in ("beta", "p0", "delta_u"):
            check_positive(name, getattr(self, name))
        for name in ("width", "nb_networks", "beta_depth", "nb_samples", "nb_single"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("single_points", self.single_points - 1, integer=True)
        for depth in self.depths:
            check_positive("depths", depth, integer=True)
        for beta in self.betas:
            check_positive("betas", beta)
        if self.nb_samples < 2:
            raise ConfigError(f"nb_samples={self.nb_samples!r} is not valid; it must be >= 2")
        return self


def deep3() -> tuple[BinaryNet, dict]:
    """The named 3-layer binary network `deep3` and its parameters."""
    net = BinaryNet((2, 3, 3, 1), torch.tensor([1.0, -0.5]), torch.tensor([1.0]))
    return net, net.init_params(torch.Generator().manual_seed(0), GAIN, BIAS)


def lif() -> tuple[LIFNet, dict]:
    """The named LIF network `lif` (2 inputs, 2 hidden, 1 output, 6 steps)."""
    current = torch.tensor(LIF_CURRENT, dtype=torch.float64)
    net = LIFNet((2, 2, 1), current, torch.tensor([1.0]), threshold=0.3)
    return net, net.init_params(torch.Generator().manual_seed(1), gain=1.0)


def random_binary(
    depth: int, width: int, loss: str, gen: torch.Generator
) -> tuple[BinaryNet, dict]:
    """A random BinaryNet of `depth` spiking layers (width `width`, 2 outputs)."""
    inputs = torch.randn(width, generator=gen, dtype=torch.float64)
    net = BinaryNet(
        (width,) + (width,) * (depth - 1) + (2,),
        inputs,
        torch.tensor([1.0, 0.5], dtype=torch.float64),
        loss=loss,
        target=1.0,
    )
    return net, net.init_params(gen, GAIN, BIAS)


def bias_metrics(gradient: torch.Tensor, expected_sg: torch.Tensor) -> dict:
    """Cosine similarity of E[SG] with the gradient, and ||E[SG] - grad|| / ||grad||."""
    cos = torch.nn.functional.cosine_similarity(gradient, expected_sg, dim=0)
    rel = (expected_sg - gradient).norm() / gradient.norm()
    return {"cosine": float(cos), "relative_error": float(rel)}


def _summary(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2]), "mean": float(t.mean())}


def _bias_over_networks(s: StudySettings, depth: int, beta: float, loss: str, seed: int):
    escape, surrogate = matched_pair(s.pair, beta, s.p0, s.delta_u)
    gen = torch.Generator().manual_seed(seed)
    cos, rel = [], []
    for _ in range(s.nb_networks):
        net, params = random_binary(depth, s.width, loss, gen)
        ex = exact_moments(net, params, escape, surrogate)
        metrics = bias_metrics(ex.gradient, ex.expected_sg)
        cos.append(metrics["cosine"])
        rel.append(metrics["relative_error"])
    return {"cosine": _summary(cos), "relative_error": _summary(rel)}


def depth_study(s: StudySettings) -> dict:
    """Exact E[SG] against the exact gradient, random networks of each depth, both losses."""
    out = {}
    for loss in ("output", "mse"):
        rows = {}
        for depth in tqdm(s.depths, desc=f"depth ({loss})", leave=False):
            rows[str(depth)] = _bias_over_networks(s, depth, s.beta, loss, s.seed + depth)
        out[loss] = rows
    return out


def beta_study(s: StudySettings) -> dict:
    """The same at depth `beta_depth` against beta (escape noise and surrogate together)."""
    rows = {}
    for beta in tqdm(s.betas, desc="beta", leave=False):
        rows[f"{beta:g}"] = _bias_over_networks(s, s.beta_depth, beta, "output", s.seed + 100)
    return rows


def estimator_row(samples, expected: torch.Tensor, gradient: torch.Tensor) -> dict:
    """Variance, bias and agreement of one estimator's samples (N, P)."""
    n = samples.values.shape[0]
    var = samples.values.var(0)
    bias = expected - gradient
    z = (samples.mean - expected) / samples.standard_error.clamp(min=1e-300)
    return {
        "variance_per_trial_mean_over_params": float(var.mean()),
        "variance_per_trial_sum_over_params": float(var.sum()),
        "exact_bias_relative": float(bias.norm() / gradient.norm()),
        "cosine_of_mean_with_gradient": bias_metrics(gradient, samples.mean)["cosine"],
        "mse_of_mean_of_n": float(var.sum() / n + bias.pow(2).sum()),
        "max_abs_z_of_mean_vs_its_expectation": float(z.abs().max()),
        "max_exact_bias_in_standard_errors_of_mean": float(
            (bias.abs() / samples.standard_error.clamp(min=1e-300)).max()
        ),
    }


def variance_table(net, params, escape, surrogate, n: int, gen: torch.Generator) -> dict:
    """Every estimator on `n` trials of one network; SG and smoothed against exact E[SG]."""
    ex = exact_moments(net, params, escape, surrogate)
    sg = sg_samples(net, params, escape, surrogate, n, gen)
    runs = {
        "surrogate_gradient": (sg, ex.expected_sg),
        "smoothed_stochastic_derivative": (
            smoothed_samples(net, params, escape, sg.spikes),
            ex.expected_sg,
        ),
        "stochastic_ad": (stochad_samples(net, params, escape, n, gen), ex.gradient),
        "reinforce": (reinforce_samples(net, params, escape, n, gen), ex.gradient),
        "reinforce_baseline": (
            reinforce_samples(net, params, escape, n, gen, baseline=True),
            ex.gradient,
        ),
    }
    rows = {name: estimator_row(smp, exp, ex.gradient) for name, (smp, exp) in runs.items()}
    return {
        "nb_samples": n,
        "nb_parameters": int(ex.gradient.numel()),
        "nb_spike_variables": int(sum(net.stage_sizes())),
        "expected_loss": ex.expected_loss,
        "expected_loss_monte_carlo": float(sg.losses.mean()),
        "expected_loss_standard_error": float(sg.losses.std() / math.sqrt(n)),
        "estimators": rows,
    }


def variance_study(s: StudySettings) -> dict:
    escape, surrogate = matched_pair(s.pair, s.beta, s.p0, s.delta_u)
    gen = torch.Generator().manual_seed(s.seed + 200)
    out = {}
    for name, build in tqdm((("deep3", deep3), ("lif", lif)), desc="variance", leave=False):
        net, params = build()
        out[name] = variance_table(net, params, escape, surrogate, s.nb_samples, gen)
    return out


def single_neuron(s: StudySettings, name: str, surrogate_name: str, gen) -> dict:
    """One neuron x = w - 0.5 (input 1): E[S], d E[S]/dw exact vs E[SG] and REINFORCE."""
    escape, surrogate, factor = library_pair(name, s.beta, s.p0, s.delta_u)
    if surrogate_name != name:
        surrogate = library_pair(surrogate_name, s.beta, s.p0, s.delta_u)[1]
        factor = 1.0
    lo, hi = (-0.6, 0.05) if name == "exponential" else (-1.0, 2.0)
    ws = torch.linspace(lo, hi, s.single_points, dtype=torch.float64) + 0.5
    net = BinaryNet((1, 1), torch.ones(1, dtype=torch.float64), torch.ones(1))
    rows = {"w": ws.tolist(), "factor": factor, "surrogate": surrogate_name}
    keys = ("p", "dp", "mc_p", "mc_p_se", "sg", "sg_se", "rf", "rf_se")
    rows.update({k: [] for k in keys})
    for w in ws:
        params = {"W1": w.reshape(1, 1, 1), "b1": torch.full((1, 1), -0.5, dtype=torch.float64)}
        x = (w - 0.5).reshape(1).requires_grad_()
        p = escape.prob(x)
        (dp,) = torch.autograd.grad(p.sum(), x)
        sg = sg_samples(net, params, escape, surrogate, s.nb_single, gen)
        rf = reinforce_samples(net, params, escape, s.nb_single, gen, baseline=True)
        rows["p"].append(float(p.detach()))
        rows["dp"].append(float(dp))
        rows["mc_p"].append(float(sg.losses.mean()))
        rows["mc_p_se"].append(float(sg.losses.std() / math.sqrt(s.nb_single)))
        rows["sg"].append(float(sg.mean[0]) * factor)
        rows["sg_se"].append(float(sg.standard_error[0]) * factor)
        rows["rf"].append(float(rf.mean[0]))
        rows["rf_se"].append(float(rf.standard_error[0]))
    dense = torch.linspace(lo, hi, 201, dtype=torch.float64).requires_grad_()
    p = escape.prob(dense)
    (dp,) = torch.autograd.grad(p.sum(), dense)
    rows["dense"] = {"x": dense.detach().tolist(), "p": p.detach().tolist(), "dp": dp.tolist()}
    return rows


def single_neuron_study(s: StudySettings) -> dict:
    gen = torch.Generator().manual_seed(s.seed + 300)
    cases = [(name, name) for name in PAIRS] + [("sigmoid", "superspike")]
    return {f"{e}+{g}": single_neuron(s, e, g, gen) for e, g in tqdm(cases, desc="single")}


def below_saturation(net, params: dict, scale: float = 0.2, shift: float = -0.3) -> dict:
    """Weights times `scale`, biases plus `shift`: keeps the exponential escape unsaturated."""
    return {k: scale * v + (shift if k.startswith("b") else 0.0) for k, v in params.items()}


def max_unit_input(net, params: dict) -> float:
    """The largest input x of any unit over every spike pattern (by enumeration)."""
    sizes = net.stage_sizes()
    op = Replay(patterns(sizes, 0, 1 << sum(sizes)))
    with torch.no_grad():
        net.forward(params, op, 1 << sum(sizes))
    return max(float(x.max()) for x in op.inputs)


def claim_c_row(net, params, escape, surrogate, n: int, gen) -> dict:
    """max over n trials and all parameters of |SG - smoothed stochastic derivative|."""
    sg = sg_samples(net, params, escape, surrogate, n, gen)
    smooth = smoothed_samples(net, params, escape, sg.spikes)
    row = {
        "max_abs_difference": float((sg.values - smooth.values).abs().max()),
        "max_abs_sg": float(sg.values.abs().max()),
        "nb_trials": n,
    }
    if escape.name == "exponential":  # matched only below saturation: show that it holds
        row["max_unit_input"] = max_unit_input(net, params)
        row["saturation_input"] = escape.delta_u * math.log(1.0 / escape.p0)
    return row


def claim_c_study(s: StudySettings) -> dict:
    """SG vs smoothed stochastic derivative per trial: each matched pair, one mismatch."""
    gen = torch.Generator().manual_seed(s.seed + 400)
    n = min(s.nb_samples, 2000)
    cases = [(name, "matched") for name in PAIRS] + [("sigmoid", "superspike")]
    out = {}
    for escape_name, surrogate_name in tqdm(cases, desc="claim (c)", leave=False):
        escape, surrogate = matched_pair(escape_name, s.beta, s.p0, s.delta_u)
        if surrogate_name != "matched":
            surrogate = library_pair(surrogate_name, s.beta, s.p0, s.delta_u)[1]
        rows = {}
        for name, build in (("deep3", deep3), ("lif", lif)):
            net, params = build()
            if escape_name == "exponential":
                params = below_saturation(net, params)
            rows[name] = claim_c_row(net, params, escape, surrogate, n, gen)
        out[f"{escape_name}+{surrogate_name}"] = rows
    return out


def run_study(s: StudySettings) -> dict:
    """All parts of the study; returns the JSON-ready record (settings, numbers, timings)."""
    s.validate()
    record = {"settings": asdict(s), "timing_s": {}}
    for key, part in (
        ("single_neuron", single_neuron_study),
        ("depth", depth_study),
        ("beta", beta_study),
        ("variance", variance_study),
        ("claim_c", claim_c_study),
    ):
        start = time.perf_counter()
        record[key] = part(s)
        record["timing_s"][key] = time.perf_counter() - start
    return record
