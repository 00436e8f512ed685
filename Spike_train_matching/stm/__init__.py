"""Spike-train matching (Gygax & Zenke, arXiv:2404.14964): a one-hidden-layer LIF network
learns to emit a target spike raster with SuperSpike-style rules.

``schema`` types the settings (a Hydra structured config), ``checks`` checks their ranges
and the rules between them; ``model``, ``learning``, ``methods`` and ``data`` hold the
network, its learning rule, the spike methods and the input and target; ``training`` runs
the epochs. The Hydra entry point is ``experiments/run_image_task_1hid.py``.
"""
