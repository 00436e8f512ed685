"""Learning on the exact expected loss: does an estimator's bias or variance matter?

Small stochastic networks learn a task whose optimum is known (infimum E[L] = 0) by plain
gradient descent, theta <- theta - lr g, where g is one of the estimators of
`estimators` averaged over a fixed number of sampled trials per step (the same for every
estimator), or the exact gradient. Every estimator starts from the same initialisations,
and after each step the exact E[L] is computed by enumerating every spike pattern (all
initialisations side by side, one batch).

Tasks (loss "error": the number of read-out spikes that differ from the target, linear in
the spikes, so the output layer's own SG is unbiased and any bias comes from depth):

* ``xor<d>``: `BinaryNet` (2, 3, ..., 3, 1) with d spiking layers; the four inputs (+-1,
  +-1), target their XOR. A deterministic network of this shape computes XOR, so the
  infimum of E[L] (mean over the four inputs) is 0, approached as the units become
  deterministic.
* ``lif``: `LIFNet` (2, 1, 1) over 6 steps with a constant bias current per layer and the
  leak reset (a spike removes the membrane, not the new input); input A drives channel 1,
  input B channel 2 (current 1 on every step); the output should fire on the last step
  for A and stay silent for B. Every layer's first two steps fire with a fixed probability
  (the membrane starts at 0), but their effect on the last output step decays with the
  synaptic and membrane leaks while the input-driven spikes become deterministic as the
  weights grow: hand-built networks reach E[L] < 1e-9 (a test), so the infimum is 0 too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sgtheory.spikes import SpikeFn
from sgtheory.theory.estimators import (
    reinforce_samples,
    sg_samples,
    smoothed_samples,
    stochad_samples,
)
from sgtheory.theory.exact import flat, pattern_probability, patterns
from sgtheory.theory.networks import BinaryNet, LIFNet
from sgtheory.theory.ops import OutputSmoothing, Replay, Sample, matched_pair

SIZES = ("small", "full", "off")
ESTIMATORS = (
    "exact",
    "surrogate_gradient",
    "smoothed_input",
    "smoothed_output",
    "stochastic_ad",
    "reinforce",
    "reinforce_baseline",
)
XOR_INPUTS = [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]
XOR_TARGET = [0.0, 1.0, 1.0, 0.0]
LR = 2.0  # step size of the small study, for every task and estimator


@dataclass(frozen=True)
class Task:
    """A network with its input rows and targets, how to initialise it, and its step size."""

    name: str
    net: BinaryNet | LIFNet
    nb_inputs: int
    init: Callable[[torch.Generator], dict]
    lr: float
    optimum: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """Steps of gradient descent, sampled trials per input and step, and the step sizes."""

    steps: int
    trials_per_input: int
    learning_rates: tuple[float, ...] = (LR,)


SCHEDULES = {"small": Schedule(40, 8), "full": Schedule(200, 8, (0.5, 2.0, 5.0))}


def xor_task(depth: int, width: int = 3) -> Task:
    """XOR on a binary network of `depth` spiking layers (width `width`, one output)."""
    net = BinaryNet(
        (2,) + (width,) * (depth - 1) + (1,),
        torch.tensor(XOR_INPUTS, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        loss="error",
        target=torch.tensor(XOR_TARGET, dtype=torch.float64),
    )
    return Task(f"xor{depth}", net, 4, lambda gen: net.init_params(gen, 1.0, 0.2), lr=LR)


def lif_task(nb_steps: int = 6) -> Task:
    """Fire on the last step for input A, stay silent for input B (LIF 2-1-1)."""
    current = torch.zeros(2, nb_steps, 2, dtype=torch.float64)
    current[0, :, 0] = 1.0
    current[1, :, 1] = 1.0
    net = LIFNet(
        (2, 1, 1),
        current,
        torch.ones(1, dtype=torch.float64),
        threshold=0.3,
        loss="error",
        target=torch.tensor([1.0, 0.0], dtype=torch.float64),
        reset="leak",
        bias=True,
        window=1,
    )
    return Task("lif", net, 2, lambda gen: net.init_params(gen, 1.0), lr=LR)


def tasks_for(size: str) -> list[Task]:
    """The tasks of a study size: XOR at depth 3 and the LIF task; `full` adds depths 2, 4."""
    if size == "full":
        return [xor_task(2), xor_task(3), xor_task(4), lif_task()]
    return [xor_task(3), lif_task()]


def _with_rows(net, inputs: torch.Tensor, target: torch.Tensor):
    """A copy of `net` whose input rows (and targets) are the given ones, one per trial."""
    if isinstance(net, BinaryNet):
        return dataclasses.replace(net, inputs=inputs, target=target)
    return dataclasses.replace(net, current=inputs, target=target)


def _net_inputs(net) -> torch.Tensor:
    return net.inputs if isinstance(net, BinaryNet) else net.current


def exact_batch(task: Task, params: dict, escape, gradient: bool = False):
    """Exact E[L] (R,) of R parameter sets (leading dimension R), mean over the inputs, by
    enumerating every spike pattern of every input; with `gradient` also d E[L] (R, P)."""
    nb_sets = next(iter(params.values())).shape[0]
    sizes = task.net.stage_sizes()
    nb_patterns, k = 1 << sum(sizes), task.nb_inputs
    repeat = nb_patterns * k
    rows = nb_sets * repeat  # order: set, pattern, input
    inputs = _net_inputs(task.net).repeat(
        nb_sets * nb_patterns, *[1] * (_net_inputs(task.net).dim() - 1)
    )
    target = task.net.target.repeat(nb_sets * nb_patterns)
    net = _with_rows(task.net, inputs, target)
    spikes = [p.repeat_interleave(k, 0).repeat(nb_sets, 1) for p in patterns(sizes, 0, nb_patterns)]
    leaves = {name: v.detach().clone().requires_grad_(gradient) for name, v in params.items()}
    with torch.set_grad_enabled(gradient):
        per_row = {name: v.repeat_interleave(repeat, 0) for name, v in leaves.items()}
        op = Replay(spikes)
        loss = net.forward(per_row, op, rows)
        prob = pattern_probability(escape, op.inputs, spikes)
        expected = (prob * loss).reshape(nb_sets, repeat).sum(1) / k
        if not gradient:
            return expected.detach(), None
        grads = torch.autograd.grad(expected.sum(), list(leaves.values()))
    return expected.detach(), flat(grads)


def estimate(
    name: str, task: Task, params: dict, escape, surrogate, trials: int, gen: torch.Generator
) -> torch.Tensor:
    """One step's gradient estimate (R, P) for R parameter sets: the mean over `trials`
    sampled trials of each input (rows ordered set, input, trial)."""
    nb_sets = next(iter(params.values())).shape[0]
    k = task.nb_inputs
    n = nb_sets * k * trials
    base = _net_inputs(task.net)
    inputs = base.repeat_interleave(trials, 0).repeat(nb_sets, *[1] * (base.dim() - 1))
    target = task.net.target.repeat_interleave(trials).repeat(nb_sets)
    net = _with_rows(task.net, inputs, target)
    rows = {key: v.detach().repeat_interleave(k * trials, 0) for key, v in params.items()}
    if name == "surrogate_gradient":
        samples = sg_samples(net, rows, escape, surrogate, n, gen)
    elif name == "smoothed_output":
        samples = sg_samples(net, rows, escape, OutputSmoothing(escape), n, gen)
    elif name == "smoothed_input":  # the SG's own draws (same generator, same calls)
        op = Sample(SpikeFn(escape, surrogate, gen))
        with torch.no_grad():
            net.forward(rows, op, n)
        samples = smoothed_samples(net, rows, escape, op.detached_spikes())
    elif name == "stochastic_ad":
        samples = stochad_samples(net, rows, escape, n, gen)
    else:
        baseline = name == "reinforce_baseline"
        samples = reinforce_samples(net, rows, escape, n, gen, baseline, groups=nb_sets * k)
    return samples.values.reshape(nb_sets, k * trials, -1).mean(1)


def _unflatten(vector: torch.Tensor, params: dict) -> dict:
    """(R, P) back into the shapes of params (R, ...)."""
    out, start = {}, 0
    for key, v in params.items():
        size = v[0].numel()
        out[key] = vector[:, start : start + size].reshape(v.shape)
        start += size
    return out


def train(
    task: Task, estimator: str, inits: dict, escape, surrogate, schedule: Schedule, seed: int
) -> dict:
    """Gradient descent from the initialisations `inits` (R, ...) with one estimator; the
    exact E[L] of every initialisation after every step, and the steps that increased it.

    The input-conditioned smoothing's every step is compared with the SG's on the same
    trials (claim (c)); the runs themselves separate once a rounding-level difference in the
    parameters flips a sampled spike.
    """
    params = {k: v.clone() for k, v in inits.items()}
    gen = torch.Generator().manual_seed(seed)
    losses, sg_difference = [], 0.0
    trials = schedule.trials_per_input
    for _ in range(schedule.steps):
        expected, grad = exact_batch(task, params, escape, gradient=estimator == "exact")
        losses.append(expected)
        if estimator != "exact":
            state = gen.get_state()
            grad = estimate(estimator, task, params, escape, surrogate, trials, gen)
        if estimator == "smoothed_input":  # claim (c): the SG's step on the same trials
            replay = torch.Generator()
            replay.set_state(state)
            sg = estimate("surrogate_gradient", task, params, escape, surrogate, trials, replay)
            sg_difference = max(sg_difference, float((grad - sg).abs().max()))
        step = _unflatten(grad, params)
        params = {k: v - task.lr * step[k] for k, v in params.items()}
    losses.append(exact_batch(task, params, escape)[0])
    curve = torch.stack(losses, dim=1)  # (R, steps + 1)
    increases = curve[:, 1:] > curve[:, :-1] + 1e-12
    return {"curve": curve, "increases": increases, "max_step_difference_from_sg": sg_difference}


def _band(curve: torch.Tensor) -> dict:
    q = torch.quantile(curve, torch.tensor([0.25, 0.5, 0.75], dtype=curve.dtype), dim=0)
    return {
        "mean": curve.mean(0).tolist(),
        "std": curve.std(0).tolist(),
        "q25": q[0].tolist(),
        "median": q[1].tolist(),
        "q75": q[2].tolist(),
    }


def task_study(task: Task, nb_inits: int, beta: float, schedule: Schedule, seed: int) -> dict:
    """Every estimator on one task from the same `nb_inits` initialisations."""
    escape, surrogate = matched_pair("sigmoid", beta, 2 / 3, 0.133)
    gen = torch.Generator().manual_seed(seed)
    sets = [task.init(gen) for _ in range(nb_inits)]
    inits = {k: torch.cat([p[k] for p in sets]) for k in sets[0]}
    trials = schedule.trials_per_input * task.nb_inputs
    out = {
        "task": task.name,
        "nb_spike_variables": int(sum(task.net.stage_sizes())),
        "nb_parameters": int(sum(v[0].numel() for v in inits.values())),
        "nb_inputs": task.nb_inputs,
        "learning_rate": task.lr,
        "optimum": task.optimum,
        "trials_per_step": trials,
        "samples_used": [step * trials for step in range(schedule.steps + 1)],
        "estimators": {},
    }
    for index, name in enumerate(tqdm(ESTIMATORS, desc=task.name, leave=False)):
        run = train(task, name, inits, escape, surrogate, schedule, seed + 1000 * (index + 1))
        curve, increases = run["curve"], run["increases"]
        final = curve[:, -1]
        out["estimators"][name] = {
            "expected_loss": _band(curve),
            "final_mean": float(final.mean()),
            "final_standard_error": float(final.std() / math.sqrt(nb_inits)),
            "final_median": float(final.median()),
            "final_per_init": final.tolist(),
            "fraction_of_steps_increasing": float(increases.to(torch.float64).mean()),
        }
        if name == "smoothed_input":
            out["estimators"][name]["max_step_difference_from_sg"] = run[
                "max_step_difference_from_sg"
            ]
    out["initial_expected_loss_mean"] = out["estimators"]["exact"]["expected_loss"]["mean"][0]
    return out


def learning_study(
    size: str, nb_inits: int, beta: float, seed: int, steps: int | None = None
) -> dict:
    """The tasks of `size` (none when "off"), `steps` steps each if given; JSON-ready."""
    if size == "off":
        return {}
    schedule = SCHEDULES[size]
    if steps is not None:
        schedule = dataclasses.replace(schedule, steps=steps)
    out = {
        "size": size,
        "steps": schedule.steps,
        "trials_per_input": schedule.trials_per_input,
        "nb_inits": nb_inits,
        "beta": beta,
        "tasks": {},
    }
    for index, task in enumerate(tasks_for(size)):
        for lr in schedule.learning_rates:
            key = task.name if len(schedule.learning_rates) == 1 else f"{task.name} lr={lr:g}"
            task_lr = dataclasses.replace(task, lr=lr)
            out["tasks"][key] = task_study(task_lr, nb_inits, beta, schedule, seed + index)
    return out


def main(argv: list[str]) -> None:
    """`python3 -m sgtheory.theory.learning SIZE OUT.json`: the learning part of a run of
    that size (the study's defaults: 20 initialisations, beta 5, seed 500), timed."""
    import json
    import time

    from sgtheory.files import write_json_atomic

    size, out = argv
    if size not in SIZES:
        raise SystemExit(f"error: size={size} is not valid; choose one of: {', '.join(SIZES)}")
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    record = learning_study(size, 20, 5.0, 500)
    record["total_time_s"] = time.perf_counter() - start
    record["total_cpu_time_s"] = time.process_time() - cpu
    record["command"] = f"python3 -m sgtheory.theory.learning {size} {out}"
    write_json_atomic(out, record)
    print(json.dumps({k: record[k] for k in ("total_time_s", "total_cpu_time_s")}))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
