"""sgtheory: stochastic spiking neurons and surrogate gradients in pure PyTorch.

Core library for reproducing Gygax & Zenke, "Elucidating the theoretical
underpinnings of surrogate gradient learning in spiking neural networks"
(Neural Computation 37(5), 2025; arXiv:2404.14964).
"""

__version__ = "0.1.0"
