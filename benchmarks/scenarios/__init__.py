"""Experiment scenarios: learnware markets built from real data, searched and reused as users
would, with our numbers next to the reference engine's where it is installed.

Each scenario is a module runnable as ``python -m benchmarks.scenarios.<name>`` (``--quick`` for
a smoke run); shared report helpers live in :mod:`benchmarks.scenarios.common`.
"""
