"""Difficulty of the default Randman task: 1-nearest-neighbour accuracy on the spike steps.

    python3 benchmarks/randman_difficulty.py [--seeds 1 2 3] [--weight randman|power]

For each seed, generates the paper's default Randman data (15 classes x 1000 samples, 20 units,
100 steps, alpha 0.5), splits it like the experiment (consecutive 0.8 / 0.1 / 0.1 blocks) and
classifies each test sample by its nearest training sample (Euclidean distance between the
20 spike steps). The original generator (randman + stork) scores 0.821 on this measure.
`--weight power` replaces randman's spectral weight 1 / ((k+1)^alpha + 1) by (k+1)^-alpha to
show how much easier that task is.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import sgtheory.data.randman as randman
from sgtheory.data import make_randman, split_dataset


def nearest_neighbour_accuracy(seed: int) -> float:
    """1-NN test accuracy on the spike steps of the default task generated from `seed`."""
    x, y = make_randman(seed=seed)
    parts = split_dataset(x.argmax(dim=1).float(), y)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    return float((ytr[torch.cdist(xte, xtr).argmin(1)] == yte).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--weight", choices=["randman", "power"], default="randman")
    args = parser.parse_args()
    if args.weight == "power":
        randman.spectral_weights = lambda alpha, n: (np.arange(n) + 1.0) ** -float(alpha)
    torch.set_num_threads(1)
    scores = []
    for seed in args.seeds:
        start = time.perf_counter()
        scores.append(nearest_neighbour_accuracy(seed))
        took = time.perf_counter() - start
        print(f"seed {seed}: 1-NN accuracy {scores[-1]:.3f} ({took:.1f} s)", flush=True)
    print(f"mean {np.mean(scores):.3f} over {len(scores)} seed(s), weight {args.weight}")


if __name__ == "__main__":
    main()
