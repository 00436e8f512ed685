"""Exact gradients of the expected loss of small stochastic spiking networks, and estimators.

Networks small enough (at most about 20 binary spike variables) to enumerate every spike
pattern: the exact E[L] and its gradient, the exact mean of the surrogate gradient (SG) and
of the output-conditioned smoothing, and per-trial estimators (SG, REINFORCE with and
without baseline, unbiased stochastic AD with pruning, the smoothed stochastic derivative
conditioned on each spike's input or on its outcome), all through the same network code and
the spike operations of `sgtheory.spikes`.

* `ops`        spike operations (callables x -> spikes) that sample, replay, couple or smooth;
* `networks`   memoryless binary units and LIF layers over a few steps;
* `exact`      enumeration of all spike patterns;
* `estimators` per-trial, per-parameter gradient estimates;
* `study`      the experiments of Theory/ (depth, beta, variance, single neuron, claim (c));
* `learning`   gradient descent with each estimator, the exact E[L] after every step;
* `figures`    their plots;
* `report`     the README numbers, rendered from the study's JSON.
"""

from sgtheory.theory.estimators import (
    Samples,
    reinforce_samples,
    sg_samples,
    smoothed_samples,
    stochad_samples,
)
from sgtheory.theory.exact import Exact, exact_moments
from sgtheory.theory.networks import BinaryNet, LIFNet
from sgtheory.theory.ops import (
    PAIRS,
    OutputSmoothing,
    ScaledSurrogate,
    coupled_sample,
    library_pair,
    matched_pair,
)

__all__ = [
    "PAIRS",
    "BinaryNet",
    "Exact",
    "LIFNet",
    "OutputSmoothing",
    "Samples",
    "ScaledSurrogate",
    "coupled_sample",
    "exact_moments",
    "library_pair",
    "matched_pair",
    "reinforce_samples",
    "sg_samples",
    "smoothed_samples",
    "stochad_samples",
]
