"""Shared facts of the theory tests: the two-unit chain's moments, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

BETA = 5.0
W1, B1, W2, B2, X0 = 0.7, -0.2, -0.9, 0.4, 1.3  # `two_unit_chain()`'s defaults


def sig(u: float) -> float:
    return 1 / (1 + math.exp(-BETA * u))


def dsig(u: float) -> float:
    return BETA * sig(u) * (1 - sig(u))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: the networks are small, and on a shared machine a second
    thread only spins (restored afterwards for the other test folders)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def chain_means() -> dict[str, torch.Tensor]:
    """(w1, b1, w2, b2) of s1 -> s2, L = s2 (sigmoid escape, beta = 5): the exact gradient,
    E[SG] (input-conditioned) and the output-conditioned mean, by hand.

    The gradient needs q(w2 + b2) - q(b2); the input-conditioned smoothing uses w2 times
    p1 q'(w2 + b2) + (1 - p1) q'(b2); the output-conditioned one weights the silent outcome
    by 1 / (2 (1 - p1)) and the firing one by 1 / (2 p1), so it uses w2 times the average
    slope (q'(w2 + b2) + q'(b2)) / 2 (the trapezoid rule for the jump).
    """
    p1, dp1 = sig(W1 * X0 + B1), dsig(W1 * X0 + B1)
    q1, q0, dq1, dq0 = sig(W2 + B2), sig(B2), dsig(W2 + B2), dsig(B2)
    last = [p1 * dq1, p1 * dq1 + (1 - p1) * dq0]  # the output unit's own: all agree
    jumps = {
        "gradient": q1 - q0,
        "input": W2 * (p1 * dq1 + (1 - p1) * dq0),
        "output": W2 * (dq1 + dq0) / 2,
    }
    return {
        k: torch.tensor([X0 * dp1 * j, dp1 * j, *last], dtype=torch.float64)
        for k, j in jumps.items()
    }
