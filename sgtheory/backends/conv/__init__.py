"""Convolutions over (batch, time): algorithms, the sparse-input kernels and the measured choice."""
