"""Deep convolutional spiking networks trained with surrogate gradients (Randman, SHD).

Small modules with one job each: `schema` (the settings' types, a Hydra structured config),
`checks` (their ranges and the rules joining them), `data` (datasets as batches), `model`
(network shape, initial weights and spike operations), `memory` (what a run needs),
`metrics` (loss, accuracy, rates, Fano factors), `checkpoint` (state and RNGs), `plots`
(figures), `training` (the epoch loop) and `experiment` (one run, start to end).
"""
