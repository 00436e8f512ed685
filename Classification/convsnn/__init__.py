"""Deep convolutional spiking networks trained with surrogate gradients (Randman, SHD).

Small modules with one job each: `settings` (validate a config), `data` (datasets as
batches), `model` (network and spike operations), `metrics` (loss, accuracy, rates, Fano
factors), `checkpoint` (state and RNGs), `plots` (figures), `training` (the epoch loop) and
`experiment` (one run, start to end).
"""
