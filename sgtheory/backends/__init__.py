"""Accelerators of the model: each computes what the reference recursion defines, faster.

Nothing in the model layer imports this package; the dispatch chooses among its backends.
"""
