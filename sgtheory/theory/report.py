"""The numbers of Theory/README.md (and the top-level README's Theory paragraph), rendered
from the record the notebook writes (`Plots/theory_numbers.json`).

Every result number in those READMEs is one of these blocks: `write_readme` replaces each
block of Theory/README.md between its markers ``<!-- numbers:NAME -->`` and
``<!-- /numbers -->``, and a test renders them again from the JSON and compares.

    python3 -m sgtheory.theory.report Theory/Plots/theory_numbers.json Theory/README.md

The block `learning_full` comes from `learning_full.json` next to the record (the learning
part of a `full` run, written by ``python3 -m sgtheory.theory.learning full <file>``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from sgtheory.files import write_text_atomic

MARKER = re.compile(r"(<!-- numbers:(\w+) -->\n)(.*?)(<!-- /numbers -->)", re.S)
NAMES = {
    "surrogate_gradient": "SG",
    "smoothed_stochastic_derivative": "smoothed, input-conditioned",
    "smoothed_output_conditioned": "smoothed, output-conditioned",
    "stochastic_ad": "stochastic AD (pruned)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
    "exact": "exact gradient",
    "smoothed_input": "smoothed, input-conditioned",
    "smoothed_output": "smoothed, output-conditioned",
}


def sig(x: float, digits: int = 2) -> str:
    """x to `digits` significant digits: plain for 1e-3 <= |x| < 1e5, else a.be-N."""
    if x == 0:
        return "0"
    if math.isnan(x):
        return "undefined"
    if 1e-3 <= abs(x) < 1e5:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
        text = f"{x:.{decimals}f}"
        return text if abs(float(text)) < 10**digits or decimals else f"{round(x):d}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fixed(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _quartiles(row: dict, decimals: int) -> str:
    return (
        f"{fixed(row['median'], decimals)} [{fixed(row['q25'], decimals)}, "
        f"{fixed(row['q75'], decimals)}]"
    )


def single_block(record: dict) -> str:
    rows = record["single_neuron"]
    n = len(next(iter(rows.values()))["w"])

    def worst(row: dict) -> int:
        return max(range(n), key=lambda i: abs(row["sg"][i] - row["dp"][i]))

    def miss(row: dict, i: int) -> float:
        return abs(row["sg"][i] - row["dp"][i])

    matched = ", ".join(
        f"{sig(miss(rows[f'{p}+{p}'], worst(rows[f'{p}+{p}'])))} ({label})"
        for p, label in (
            ("sigmoid", "sigmoid"),
            ("exponential", "exponential"),
            ("superspike", "SuperSpike x beta/2"),
        )
    )
    row = rows["sigmoid+superspike"]
    i = worst(row)
    zero = min(range(n), key=lambda j: abs(row["w"][j] - 0.5))
    return (
        f"max |E[SG] - p'| over {n} points: {matched}. The mismatched pair (sigmoid escape, "
        f"SuperSpike surrogate) misses by up to {sig(miss(row, i))} (at x = "
        f"{row['w'][i] - 0.5:+.2f}: p' = {sig(row['dp'][i])}, SG {sig(row['sg'][i])}); at "
        f"x = 0 by {sig(miss(row, zero))} (p'(0) = {sig(row['dp'][zero], 3)}, SG "
        f"{sig(row['sg'][zero])})."
    )


def depth_block(record: dict) -> str:
    lines = [
        "| spiking layers | loss | cos E[SG] | rel. error E[SG] | rel. error output-cond. "
        "| opposite signs E[SG] | opposite signs output-cond. |",
        "|---|---|---|---|---|---|---|",
    ]
    for loss, rows in record["depth"].items():
        for depth, row in rows.items():
            out = row["output_smoothing"]
            lines.append(
                f"| {depth} | {loss} | {fixed(row['cosine']['median'], 4)} | "
                f"{_quartiles(row['relative_error'], 3)} | "
                f"{_quartiles(out['relative_error'], 3)} | "
                f"{fixed(row['sign_disagreement']['mean'], 3)} | "
                f"{fixed(out['sign_disagreement']['mean'], 3)} |"
            )
    return "\n".join(lines)


def beta_block(record: dict) -> str:
    lines = [
        "| beta | cos E[SG] | cos output-cond. | rel. error E[SG] | rel. error output-cond. "
        "| opposite signs E[SG] | opposite signs output-cond. |",
        "|---|---|---|---|---|---|---|",
    ]
    for beta, row in record["beta"].items():
        out = row["output_smoothing"]
        lines.append(
            f"| {beta} | {fixed(row['cosine']['median'], 4)} | "
            f"{fixed(out['cosine']['median'], 4)} | "
            f"{sig(row['relative_error']['median'])} | {sig(out['relative_error']['median'])} | "
            f"{fixed(row['sign_disagreement']['mean'], 3)} | "
            f"{fixed(out['sign_disagreement']['mean'], 3)} |"
        )
    smallest = min(row["smallest_gradient_norm"] for row in record["beta"].values())
    lines.append("")
    lines.append(
        f"The smallest exact gradient norm among these networks is {sig(smallest)}; the cosine "
        "is computed without clamping (`study.cosine`)."
    )
    return "\n".join(lines)


def named_block(record: dict) -> str:
    parts = []
    for name, table in record["variance"].items():
        rows = table["estimators"]
        sg, out = rows["surrogate_gradient"], rows["smoothed_output_conditioned"]
        parts.append(
            f"`{name}`: E[SG] relative bias {fixed(sg['exact_bias_relative'], 3)}, "
            f"output-conditioned {fixed(out['exact_bias_relative'], 3)}; worst parameter "
            f"{sig(sg['max_exact_bias_in_standard_errors_of_mean'], 3)} / "
            f"{sig(out['max_exact_bias_in_standard_errors_of_mean'], 3)} standard errors of a "
            f"{table['nb_samples']}-trial mean; each sample mean within "
            f"{fixed(sg['max_abs_z_of_mean_vs_its_expectation'], 1)} / "
            f"{fixed(out['max_abs_z_of_mean_vs_its_expectation'], 1)} SE of its enumerated mean."
        )
    return "\n".join(parts)


def variance_block(record: dict) -> str:
    out = []
    for name, table in record["variance"].items():
        out.append(
            f"| `{name}` ({table['nb_spike_variables']} spikes, {table['nb_parameters']} params)"
            " | var / trial | bias | MSE of mean | max \\|z\\| |"
        )
        out.append("|---|---|---|---|---|")
        for key, row in table["estimators"].items():
            bias = row["exact_bias_relative"]
            out.append(
                f"| {NAMES[key]} | {sig(row['variance_per_trial_sum_over_params'], 3)} | "
                f"{'0' if bias == 0 else fixed(bias, 3)} | {sig(row['mse_of_mean_of_n'])} | "
                f"{fixed(row['max_abs_z_of_mean_vs_its_expectation'], 1)} |"
            )
        out.append("")
    lines = []
    for name, table in record["variance"].items():
        rows = table["estimators"]
        lines.append(
            f"`{name}`: E[L] {fixed(table['expected_loss'], 5)} by enumeration, "
            f"{fixed(table['expected_loss_monte_carlo'], 4)} +- "
            f"{fixed(table['expected_loss_standard_error'], 4)} by Monte Carlo; the baseline "
            f"lowers REINFORCE's variance from "
            f"{sig(rows['reinforce']['variance_per_trial_sum_over_params'], 3)} to "
            f"{sig(rows['reinforce_baseline']['variance_per_trial_sum_over_params'], 3)} "
            f"({fixed(table['baseline_variance_reduction_in_standard_errors'], 0)} standard "
            "errors of the difference)."
        )
    return "\n".join(out + lines)


def claim_c_block(record: dict) -> str:
    labels = {
        "sigmoid+matched": "sigmoid",
        "exponential+matched": "exponential (unsaturated)",
        "superspike+matched": "fast sigmoid with SuperSpike x beta/2",
        "sigmoid+superspike": "sigmoid escape, SuperSpike surrogate (mismatched)",
    }
    lines = [
        "| escape / surrogate | max \\|SG - input-cond.\\| deep3 / lif "
        "| max \\|SG - output-cond.\\| deep3 / lif | max \\|SG\\| deep3 / lif |",
        "|---|---|---|---|",
    ]
    for case, rows in record["claim_c"].items():
        d, lf = rows["deep3"], rows["lif"]
        lines.append(
            f"| {labels.get(case, case)} | {sig(d['max_abs_difference'])} / "
            f"{sig(lf['max_abs_difference'])} | "
            f"{sig(d['max_abs_difference_output_conditioned'], 3)} / "
            f"{sig(lf['max_abs_difference_output_conditioned'], 3)} | "
            f"{sig(d['max_abs_sg'], 3)} / {sig(lf['max_abs_sg'], 3)} |"
        )
    n = next(iter(record["claim_c"].values()))["deep3"]["nb_trials"]
    lines.append("")
    text = f"({n} sampled trials per network and case."
    exp = record["claim_c"].get("exponential+matched")
    if exp is not None:
        text += (
            " The exponential pair's largest unit input over every pattern: "
            f"{sig(exp['deep3']['max_unit_input'])} (deep3), {sig(exp['lif']['max_unit_input'])}"
            f" (lif), below saturation at {sig(exp['deep3']['saturation_input'])}."
        )
    lines.append(text + ")")
    return "\n".join(lines)


def learning_block(record: dict) -> str:
    study = record.get("learning") or {}
    if not study:
        return "(learning study off)"
    lines = [
        f"Size `{study['size']}`: {study['nb_inits']} initialisations per task, "
        f"{study['steps']} steps, {study['trials_per_input']} sampled trials per input and step, "
        f"beta = {study['beta']:g}.",
        "",
    ]
    for name, task in study["tasks"].items():
        lines.append(
            f"| `{name}` ({task['nb_spike_variables']} spikes, {task['nb_parameters']} params, "
            f"lr {task['learning_rate']:g}, {task['trials_per_step']} trials / step; start "
            f"E[L] {fixed(task['initial_expected_loss_mean'], 3)}) | final E[L], mean +- SE "
            "| median | steps that increased E[L] |"
        )
        lines.append("|---|---|---|---|")
        for key, row in task["estimators"].items():
            lines.append(
                f"| {NAMES[key]} | {fixed(row['final_mean'], 3)} +- "
                f"{fixed(row['final_standard_error'], 3)} | {fixed(row['final_median'], 3)} | "
                f"{fixed(100 * row['fraction_of_steps_increasing'], 0)} % |"
            )
        lines.append("")
    worst = max(
        task["estimators"]["smoothed_input"]["max_step_difference_from_sg"]
        for task in study["tasks"].values()
    )
    lines.append(
        "On every step the input-conditioned smoothing's estimate equals the SG's on the same "
        f"trials to {sig(worst)} (claim (c)); the two runs separate once such a rounding-level "
        "difference in the parameters flips a sampled spike."
    )
    return "\n".join(lines)


def timing_block(record: dict) -> str:
    parts = ", ".join(f"{k} {sig(v)}" for k, v in record["timing_s"].items())
    cpu = record.get("total_cpu_time_s")
    cpu_text = f", {sig(cpu)} s of CPU" if cpu is not None else ""
    return f"The study took {sig(record['total_time_s'])} s wall{cpu_text} ({parts}; seconds)."


FULL = "learning_full.json"  # next to the record: the learning part of a `full` run
COLUMNS = (
    "exact",
    "surrogate_gradient",
    "smoothed_input",
    "smoothed_output",
    "stochastic_ad",
    "reinforce",
    "reinforce_baseline",
)


def learning_full_block(study: dict) -> str:
    """Final E[L] (mean over initialisations) and the share of steps that increased it, for
    every task and step size of the full learning study."""
    lines = [
        f"Size `{study['size']}`: {study['nb_inits']} initialisations per task, "
        f"{study['steps']} steps, {study['trials_per_input']} sampled trials per input and step; "
        f"{sig(study['total_time_s'])} s wall, {sig(study['total_cpu_time_s'])} s of CPU "
        "(one process, niced, on the shared machine). Final E[L] (steps that increased it):",
        "",
        "| task | " + " | ".join(NAMES[k] for k in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, task in study["tasks"].items():
        cells = [
            f"{fixed(task['estimators'][k]['final_mean'], 3)} "
            f"({fixed(100 * task['estimators'][k]['fraction_of_steps_increasing'], 0)} %)"
            for k in COLUMNS
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[dict], str]] = {
    "single": single_block,
    "depth": depth_block,
    "beta": beta_block,
    "named": named_block,
    "variance": variance_block,
    "claim_c": claim_c_block,
    "learning": learning_block,
    "timing": timing_block,
}


def top_paragraph(record: dict) -> str:
    """The top-level README's Theory paragraph."""
    depth = record["depth"]["output"]
    rel = ", ".join(fixed(row["relative_error"]["median"], 3) for row in depth.values())
    betas = record["beta"]
    first, last = next(iter(betas)), list(betas)[-1]
    deep3 = record["variance"]["deep3"]
    rows = deep3["estimators"]
    var = ", ".join(
        f"{NAMES[k]} {sig(rows[k]['variance_per_trial_sum_over_params'], 3)}"
        for k in ("surrogate_gradient", "stochastic_ad", "reinforce", "reinforce_baseline")
    )
    single = record["single_neuron"]
    worst = max(
        max(abs(a - b) for a, b in zip(r["sg"], r["dp"]))
        for k, r in single.items()
        if k != "sigmoid+superspike"
    )
    identity = max(
        max(r["max_abs_difference"] for r in rows_.values())
        for case, rows_ in record["claim_c"].items()
        if case.endswith("+matched")
    )
    learning = record.get("learning", {}).get("tasks", {})
    learn = ""
    if "xor3" in learning:
        est = learning["xor3"]["estimators"]
        learn = (
            " Learning XOR (3 spiking layers, exact E[L] after every step, "
            f"{record['learning']['nb_inits']} initialisations, equal sample budgets): final "
            f"E[L] exact gradient {fixed(est['exact']['final_mean'], 3)}, SG "
            f"{fixed(est['surrogate_gradient']['final_mean'], 3)}, output-conditioned "
            f"smoothing {fixed(est['smoothed_output']['final_mean'], 3)}, stochastic AD "
            f"{fixed(est['stochastic_ad']['final_mean'], 3)}, REINFORCE "
            f"{fixed(est['reinforce']['final_mean'], 3)} (with baseline "
            f"{fixed(est['reinforce_baseline']['final_mean'], 3)})."
        )
    return (
        "**Theory** ([Theory](Theory/README.md); exact enumeration, float64). Single neuron: "
        f"E[SG] equals ∂E[S]/∂w to {sig(worst)} for the three matched pairs (sigmoid, "
        "exponential, fast sigmoid with SuperSpike × β/2). Deep networks: E[SG] is biased: "
        f"median relative error {rel} for {next(iter(depth))}-{list(depth)[-1]} spiking layers "
        "(loss = output, β = "
        f"{record['settings']['beta']:g}), and {sig(betas[first]['relative_error']['median'])} "
        f"to {sig(betas[last]['relative_error']['median'])} as β grows from {first} to {last} "
        f"({record['settings']['beta_depth']} layers); on `deep3` the relative bias is "
        f"{fixed(rows['surrogate_gradient']['exact_bias_relative'], 3)}, "
        f"{fixed(rows['smoothed_output_conditioned']['exact_bias_relative'], 3)} for the "
        "output-conditioned smoothing of StochasticAD.jl. On every sampled trial the SG equals "
        f"the input-conditioned smoothed stochastic derivative to {sig(identity)}. Variance per "
        f"trial (`deep3`, summed over parameters): {var}." + learn
    )


def render_block(name: str, record: dict, full: dict | None) -> str:
    """Block `name` from the record (or, for `learning_full`, the full learning record)."""
    if name == "learning_full":
        return learning_full_block(full) if full else "(no full learning study recorded)"
    return BLOCKS[name](record)


def write_readme(record: dict, path: str | Path, full: dict | None = None) -> None:
    """Replace every numbers block of the README at `path` by its rendering (atomic)."""
    text = Path(path).read_text()

    def render(match: re.Match) -> str:
        return f"{match.group(1)}{render_block(match.group(2), record, full)}\n{match.group(4)}"

    write_text_atomic(path, MARKER.sub(render, text))


def readme_blocks(text: str) -> dict[str, str]:
    """The blocks of a README: name -> its text (without the trailing newline)."""
    return {m.group(2): m.group(3).rstrip("\n") for m in MARKER.finditer(text)}


if __name__ == "__main__":
    numbers = Path(sys.argv[1])
    full_path = numbers.parent / FULL
    full_record = json.loads(full_path.read_text()) if full_path.exists() else None
    write_readme(json.loads(numbers.read_text()), sys.argv[2], full_record)
    print(top_paragraph(json.loads(numbers.read_text())))
