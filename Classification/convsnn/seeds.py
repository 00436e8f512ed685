"""Independent random streams derived from the config seed, one per purpose and layer.

The spikes of each hidden layer come from a counter-based stream (`sgtheory.random.Stream`)
keyed by the seed and named (purpose, *keys, layer): the same numbers on CPU and CUDA.
Other draws (initialisation, shuffling) come from a torch.Generator seeded from
(seed, purpose, *keys) through numpy's SeedSequence. So draws of one layer never depend on
how many draws another layer made, and evaluations (seeded by epoch) never shift the
training streams.
"""

from __future__ import annotations

import numpy as np
import torch

from sgtheory.random import Stream, make_generator

PURPOSES = {"init": 0, "train_spikes": 1, "shuffle": 2, "eval": 3, "test": 4, "other": 5}


def derived_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for stream `purpose` (see PURPOSES) and integer `keys`."""
    entropy = [int(seed), PURPOSES[purpose], *map(int, keys)]
    return int(
        np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).view(np.uint64)[0]
        >> np.uint64(1)
    )


def generator(seed: int, purpose: str, *keys: int, device: str = "cpu") -> torch.Generator:
    """torch.Generator of stream (seed, purpose, *keys) on `device`."""
    return make_generator(derived_seed(seed, purpose, *keys), device)


def layer_generators(
    seed: int, purpose: str, nb_layers: int, *keys: int, device: str = "cpu"
) -> list[Stream]:
    """One stream of spike draws per hidden layer, the same on every `device`."""
    return [Stream(seed, purpose, *keys, layer) for layer in range(nb_layers)]
