"""The experiments of Theory/: bias of E[SG] and of the output-conditioned smoothing against
depth and beta, estimator variances, the single-neuron panel, claim (c), and the learning
study (`learning`). Plain settings in, a JSON-ready dict out (no plotting here).

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

from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.theory import learning
from sgtheory.theory.estimators import (
    reinforce_samples,
    sg_samples,
    smoothed_samples,
    stochad_samples,
)
from sgtheory.theory.exact import MAX_VARIABLES, exact_moments, patterns
from sgtheory.theory.networks import BinaryNet, LIFNet
from sgtheory.theory.ops import PAIRS, OutputSmoothing, Replay, library_pair, matched_pair

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
    named_networks: list[str] = field(default_factory=lambda: ["deep3", "lif"])
    learning: str = "small"  # size of the learning study: small, full or off
    learning_inits: int = 20  # initialisations per task (the same for every estimator)
    learning_steps: int | None = None  # steps per run; None: the size's own (small 40)

    def validate(self) -> StudySettings:
        """Raise a ConfigError naming the first setting whose value cannot work."""
        _check_int("seed", self.seed, 0)
        check_choice("pair", self.pair, PAIRS)
        for name in ("beta", "p0", "delta_u"):
            check_positive(name, getattr(self, name))
        if self.p0 > 1:
            raise ConfigError(f"p0={self.p0!r} is not valid; it must lie in (0, 1]")
        for name, (low, high) in INTEGER_RANGES.items():
            _check_int(name, getattr(self, name), low, high)
        check_choice("learning", self.learning, learning.SIZES)
        names = self.named_networks
        if not isinstance(names, (list, tuple)) or not names:
            raise ConfigError(
                f"named_networks={names!r} is not valid; give a non-empty list of: "
                f"{', '.join(NAMED)}"
            )
        for name in names:
            if name not in NAMED:
                raise ConfigError(
                    f"named_networks={list(names)!r} is not valid; {name!r} is not one of: "
                    f"{', '.join(NAMED)}"
                )
        if self.learning_steps is not None:
            _check_int("learning_steps", self.learning_steps, 1, 10_000)
        _check_list("depths", self.depths, integer=True)
        _check_list("betas", self.betas, integer=False)
        cases = [("depths", self.depths, d) for d in self.depths]
        for name, typed, depth in cases + [("beta_depth", self.beta_depth, self.beta_depth)]:
            nb_vars = self.width * (depth - 1) + 2
            if nb_vars > MAX_VARIABLES:
                raise ConfigError(
                    f"{name}={typed!r} is not valid with width={self.width}: depth {depth} has "
                    f"{nb_vars} spike variables, at most {MAX_VARIABLES} can be enumerated "
                    "(width x (depth - 1) + 2)"
                )
        return self


# integer settings: (smallest, largest) allowed value
INTEGER_RANGES = {
    "width": (1, MAX_VARIABLES),
    "nb_networks": (1, 100_000),
    "beta_depth": (1, MAX_VARIABLES),
    "nb_samples": (2, 200_000),
    "nb_single": (2, 1_000_000),
    "single_points": (2, 10_000),
    "learning_inits": (1, 200),
}


def _check_int(setting: str, value, low: int, high: int | None = None) -> None:
    """A whole number (an int, not 2.0 or True) within [low, high], else a ConfigError."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        within = f">= {low}" if high is None else f"from {low} to {high}"
        raise ConfigError(
            f"{setting}={value!r} is not valid; it must be a whole number {within} "
            "(written without a decimal point)"
        )


def _check_list(setting: str, values, integer: bool) -> None:
    """A non-empty list of positive numbers (whole numbers if `integer`), else a ConfigError."""
    kind = "positive whole numbers" if integer else "positive finite numbers"
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(
            f"{setting}={values!r} is not valid; give a non-empty list of {kind}, e.g. "
            f"{setting}=[1,2]"
        )
    for value in values:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        valid = number and math.isfinite(value) and value > 0
        if not valid or (integer and not isinstance(value, int)):
            raise ConfigError(
                f"{setting}={list(values)!r} is not valid; {value!r} is not one of the {kind} "
                "it must hold"
            )


def deep3() -> tuple[BinaryNet, dict]:
    """The named 3-layer binary network `deep3` and its parameters."""
    net = BinaryNet((2, 3, 3, 1), torch.tensor([1.0, -0.5]), torch.tensor([1.0]))
    return net, net.init_params(torch.Generator().manual_seed(0), GAIN, BIAS)


def lif() -> tuple[LIFNet, dict]:
    """The named LIF network `lif` (2 inputs, 2 hidden, 1 output, 6 steps)."""
    current = torch.tensor(LIF_CURRENT, dtype=torch.float64)
    net = LIFNet((2, 2, 1), current, torch.tensor([1.0]), threshold=0.3)
    return net, net.init_params(torch.Generator().manual_seed(1), gain=1.0)


NAMED = {"deep3": deep3, "lif": lif}


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


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) = a.b / (|a| |b|) in float64, without clamping the norms.

    Each vector is divided by its largest entry first, so that norms far below 1e-8 (or
    near overflow) give the exact cosine; NaN when either vector is zero (undefined).
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    sa, sb = a.abs().max(), b.abs().max()
    if sa == 0 or sb == 0:
        return math.nan
    a, b = a / sa, b / sb
    return float((a @ b) / (a.norm() * b.norm()))


def sign_disagreement(gradient: torch.Tensor, estimate: torch.Tensor, rtol=1e-9) -> float:
    """Fraction of parameters where the estimate's sign is opposite to the gradient's.

    Entries smaller than rtol times the larger vector's largest entry count as zero (they
    agree with anything): rounding, not a sign.
    """
    scale = rtol * max(float(gradient.abs().max()), float(estimate.abs().max()))
    opposite = (gradient * estimate < 0) & (gradient.abs() > scale) & (estimate.abs() > scale)
    return float(opposite.to(torch.float64).mean())


def bias_metrics(gradient: torch.Tensor, expected_sg: torch.Tensor) -> dict:
    """Cosine with the gradient, ||E[SG] - grad|| / ||grad||, and the sign disagreement."""
    rel = (expected_sg - gradient).norm() / gradient.norm()
    return {
        "cosine": cosine(gradient, expected_sg),
        "relative_error": float(rel),
        "sign_disagreement": sign_disagreement(gradient, expected_sg),
    }


def _summary(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    t = t[~torch.isnan(t)]  # an undefined cosine (a zero gradient) is left out, and counted
    q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {
        "median": float(q[1]),
        "q25": float(q[0]),
        "q75": float(q[2]),
        "mean": float(t.mean()),
        "undefined": len(values) - int(t.numel()),
    }


def _bias_over_networks(s: StudySettings, depth: int, beta: float, loss: str, seed: int):
    """Bias metrics of E[SG] (input-conditioned) and of the output-conditioned smoothing."""
    escape, surrogate = matched_pair(s.pair, beta, s.p0, s.delta_u)
    others = {"output": OutputSmoothing(escape)}
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, dict[str, list[float]]] = {"input": {}, "output": {}}
    smallest = math.inf
    for _ in range(s.nb_networks):
        net, params = random_binary(depth, s.width, loss, gen)
        ex = exact_moments(net, params, escape, surrogate, others=others)
        smallest = min(smallest, float(ex.gradient.norm()))
        for key, mean in (("input", ex.expected_sg), ("output", ex.expected_others["output"])):
            for name, value in bias_metrics(ex.gradient, mean).items():
                rows[key].setdefault(name, []).append(value)
    out = {name: _summary(values) for name, values in rows["input"].items()}
    out["output_smoothing"] = {name: _summary(values) for name, values in rows["output"].items()}
    out["smallest_gradient_norm"] = smallest
    return out


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
    spread = (samples.values - samples.mean).pow(2).sum(1)  # per trial; its mean ~ sum var
    bias = expected - gradient
    z = (samples.mean - expected) / samples.standard_error.clamp(min=1e-300)
    return {
        "variance_per_trial_mean_over_params": float(var.mean()),
        "variance_per_trial_sum_over_params": float(var.sum()),
        "variance_sum_standard_error": float(spread.std() / math.sqrt(n)),
        "exact_bias_relative": float(bias.norm() / gradient.norm()),
        "cosine_of_mean_with_gradient": bias_metrics(gradient, samples.mean)["cosine"],
        "mse_of_mean_of_n": float(var.sum() / n + bias.pow(2).sum()),
        "max_abs_z_of_mean_vs_its_expectation": float(z.abs().max()),
        "max_exact_bias_in_standard_errors_of_mean": float(
            (bias.abs() / samples.standard_error.clamp(min=1e-300)).max()
        ),
    }


def variance_table(net, params, escape, surrogate, n: int, seed: int) -> dict:
    """Every estimator on `n` trials of one network; the SG and both smoothings against
    their exact means (enumeration), the unbiased ones against the exact gradient. Each
    sampling estimator draws from its own generator (seed, seed + 1, ...)."""
    ex = exact_moments(net, params, escape, surrogate, others={"output": OutputSmoothing(escape)})
    gens = [torch.Generator().manual_seed(seed + k) for k in range(4)]
    sg = sg_samples(net, params, escape, surrogate, n, gens[0])
    runs = {
        "surrogate_gradient": (sg, ex.expected_sg),
        "smoothed_stochastic_derivative": (
            smoothed_samples(net, params, escape, sg.spikes),
            ex.expected_sg,
        ),
        "smoothed_output_conditioned": (
            smoothed_samples(net, params, escape, sg.spikes, "output"),
            ex.expected_others["output"],
        ),
        "stochastic_ad": (stochad_samples(net, params, escape, n, gens[1]), ex.gradient),
        "reinforce": (reinforce_samples(net, params, escape, n, gens[2]), ex.gradient),
        "reinforce_baseline": (
            reinforce_samples(net, params, escape, n, gens[3], baseline=True),
            ex.gradient,
        ),
    }
    rows = {name: estimator_row(smp, exp, ex.gradient) for name, (smp, exp) in runs.items()}
    plain, base = rows["reinforce"], rows["reinforce_baseline"]
    se = math.hypot(plain["variance_sum_standard_error"], base["variance_sum_standard_error"])
    gap = plain["variance_per_trial_sum_over_params"] - base["variance_per_trial_sum_over_params"]
    return {
        "nb_samples": n,
        "nb_parameters": int(ex.gradient.numel()),
        "nb_spike_variables": int(sum(net.stage_sizes())),
        "expected_loss": ex.expected_loss,
        "expected_loss_monte_carlo": float(sg.losses.mean()),
        "expected_loss_standard_error": float(sg.losses.std() / math.sqrt(n)),
        "estimators": rows,
        "baseline_variance_reduction_in_standard_errors": gap / se,
    }


def variance_study(s: StudySettings) -> dict:
    escape, surrogate = matched_pair(s.pair, s.beta, s.p0, s.delta_u)
    out = {}
    for name in tqdm(s.named_networks, desc="var", leave=False):
        net, params = NAMED[name]()
        seed = s.seed + 200 + 10 * list(NAMED).index(name)
        out[name] = variance_table(net, params, escape, surrogate, s.nb_samples, seed)
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
    output = smoothed_samples(net, params, escape, sg.spikes, "output")
    row = {
        "max_abs_difference": float((sg.values - smooth.values).abs().max()),
        "max_abs_difference_output_conditioned": float((sg.values - output.values).abs().max()),
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
        for name in s.named_networks:
            net, params = NAMED[name]()
            if escape_name == "exponential":
                params = below_saturation(net, params)
            rows[name] = claim_c_row(net, params, escape, surrogate, n, gen)
        out[f"{escape_name}+{surrogate_name}"] = rows
    return out


def learning_part(s: StudySettings) -> dict:
    """The learning study at size `s.learning` (empty when "off")."""
    return learning.learning_study(
        s.learning, s.learning_inits, s.beta, s.seed + 500, steps=s.learning_steps
    )


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
        ("learning", learning_part),
    ):
        start = time.perf_counter()
        record[key] = part(s)
        record["timing_s"][key] = time.perf_counter() - start
    return record
