"""The learning study: its batched enumeration against per-input enumeration, the tasks'
known optimum (hand-built networks reach it), and a few points of the learning curves
recomputed independently."""

from __future__ import annotations

import pytest
import torch

from sgtheory.theory import exact_moments, matched_pair
from sgtheory.theory import learning as lrn

ESCAPE, SURROGATE = matched_pair("sigmoid", 5.0, 2 / 3, 0.133)


def stacked(task: lrn.Task, nb: int, seed: int = 0) -> tuple[list[dict], dict]:
    gen = torch.Generator().manual_seed(seed)
    sets = [task.init(gen) for _ in range(nb)]
    return sets, {k: torch.cat([p[k] for p in sets]) for k in sets[0]}


def per_input(task: lrn.Task, params: dict) -> tuple[float, torch.Tensor]:
    """E[L] and its gradient as the mean over inputs of single-input enumerations."""
    inputs = lrn._net_inputs(task.net)
    total, grad = 0.0, 0.0
    for k in range(task.nb_inputs):
        net = lrn._with_rows(task.net, inputs[k : k + 1], task.net.target[k : k + 1])
        ex = exact_moments(net, params, ESCAPE)
        total, grad = total + ex.expected_loss / task.nb_inputs, grad + ex.gradient / task.nb_inputs
    return total, grad


@pytest.mark.parametrize("task", [lrn.xor_task(2), lrn.xor_task(3), lrn.lif_task()])
def test_batched_enumeration_equals_one_input_and_one_network_at_a_time(task):
    sets, params = stacked(task, 3)
    expected, grad = lrn.exact_batch(task, params, ESCAPE, gradient=True)
    for r, one in enumerate(sets):
        value, g = per_input(task, one)
        assert float(expected[r]) == pytest.approx(value, abs=1e-14)
        torch.testing.assert_close(grad[r], g, rtol=1e-12, atol=1e-15)
    assert (expected > 0.1).all()  # random initialisations are far from the optimum


def xor_solution(scale: float) -> dict:
    """OR and AND units, then OR-and-not-AND, read out: XOR of (+-1, +-1); unused units
    silenced by a negative bias; every input scaled by `scale`."""
    t = lambda rows: scale * torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    return {
        "W1": t([[1, 1], [1, 1], [0, 0]])[None],
        "b1": t([1, -1, -1])[None],
        "W2": t([[1, -1, 0], [0, 0, 0], [0, 0, 0]])[None],
        "b2": t([-0.5, -1, -1])[None],
        "W3": t([[1, 0, 0]])[None],
        "b3": t([-0.5])[None],
    }


def lif_solution(scale: float) -> dict:
    """Hidden unit driven by input A, inhibited by B; the output follows the hidden unit."""
    t = lambda rows: scale * torch.tensor(rows, dtype=torch.float64).reshape(1, 1, -1)  # noqa: E731
    return {"W1": t([1, -1]), "b1": t([0]), "W2": t([1]), "b2": t([-0.4])}


def test_tasks_reach_their_known_optimum_of_zero():
    """Hand-built networks: E[L] falls towards 0 as their weights grow (the infimum)."""
    for task, solution in ((lrn.xor_task(3), xor_solution), (lrn.lif_task(), lif_solution)):
        values = [per_input(task, solution(scale))[0] for scale in (2.0, 5.0, 20.0)]
        assert values[0] > values[1] > values[2], task.name
        assert values[2] < 1e-9, task.name
        assert task.optimum == 0.0


def test_learning_curves_recomputed_independently():
    """The recorded exact E[L] after one step of each estimator equals per-input
    enumeration at the parameters that step reached; the exact gradient's step with a small
    rate never increases E[L]; the SG and the input-conditioned smoothing take the same steps
    (claim (c)); every estimator starts from the same E[L]."""
    task = lrn.xor_task(2)
    _, inits = stacked(task, 2, seed=3)
    schedule = lrn.Schedule(steps=1, trials_per_input=4)
    for name in lrn.ESTIMATORS:
        run = lrn.train(task, name, inits, ESCAPE, SURROGATE, schedule, seed=7)
        gen = torch.Generator().manual_seed(7)
        if name == "exact":
            step = lrn.exact_batch(task, inits, ESCAPE, gradient=True)[1]
        else:
            step = lrn.estimate(name, task, inits, ESCAPE, SURROGATE, 4, gen)
        moved = lrn._unflatten(-task.lr * step, inits)
        for r in range(2):
            after = {k: inits[k][r : r + 1] + moved[k][r : r + 1] for k in inits}
            assert float(run["curve"][r, 1]) == pytest.approx(per_input(task, after)[0], abs=1e-13)
            assert float(run["curve"][r, 0]) == pytest.approx(
                per_input(task, {k: v[r : r + 1] for k, v in inits.items()})[0], abs=1e-13
            )
    small = lrn.Task(task.name, task.net, task.nb_inputs, task.init, lr=0.05)
    exact = lrn.train(small, "exact", inits, ESCAPE, SURROGATE, lrn.Schedule(5, 4), seed=1)
    assert not exact["increases"].any()
    runs = {
        name: lrn.train(task, name, inits, ESCAPE, SURROGATE, lrn.Schedule(3, 4), seed=5)["curve"]
        for name in ("surrogate_gradient", "smoothed_input")
    }
    torch.testing.assert_close(runs["surrogate_gradient"], runs["smoothed_input"])


def test_learning_study_record_is_complete():
    record = lrn.learning_study("small", nb_inits=2, beta=5.0, seed=0, steps=2)
    assert set(record["tasks"]) == {"xor3", "lif"}
    for task in record["tasks"].values():
        assert task["samples_used"] == [0, task["trials_per_step"], 2 * task["trials_per_step"]]
        starts = {row["expected_loss"]["mean"][0] for row in task["estimators"].values()}
        assert len(starts) == 1  # the same initialisations for every estimator
        assert set(task["estimators"]) == set(lrn.ESTIMATORS)
        for row in task["estimators"].values():
            assert len(row["expected_loss"]["mean"]) == 3
            assert 0.0 <= row["fraction_of_steps_increasing"] <= 1.0
        assert task["estimators"]["smoothed_input"]["max_step_difference_from_sg"] < 1e-12
    assert lrn.learning_study("off", 2, 5.0, 0) == {}
    assert [t.name for t in lrn.tasks_for("full")] == ["xor2", "xor3", "xor4", "lif"]
    assert len(lrn.SCHEDULES["full"].learning_rates) > 1
