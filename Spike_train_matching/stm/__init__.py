"""Spike-train matching (Gygax & Zenke, arXiv:2404.14964): a one-hidden-layer LIF network
learns to emit a target spike raster with SuperSpike-style rules.

``stm.core`` holds the model, the learning rule, the losses and the data set-up; the Hydra
entry point is ``experiments/run_image_task_1hid.py``.
"""
