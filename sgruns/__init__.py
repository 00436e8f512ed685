"""Running experiments: the run folder, the command-line convention, wandb, sweeps and collecting.

Separate from the science library `sgtheory`, which never reads a config or a command line.
"""
