"""Experiment scripts that regenerate the tables in ``experiments/results/`` (see README.md)."""
# refsnn before NumPy: it sets the thread wait policies (refsnn/__init__.py) that take effect
# only if set before NumPy and Numba load; every script imports this package first.
import refsnn  # noqa: F401
