"""Triton kernels for CUDA devices: one launch per layer and direction."""
