"""C kernels (compiled on first use, cached per CPU) and their torch wrappers."""
