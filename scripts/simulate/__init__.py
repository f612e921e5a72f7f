"""A virtual-time simulator for the scheduling core, and the benchmarks it runs.

``benchmarks`` holds multi-fidelity test functions (Branin, Hartmann-6, Borehole, Park, Currin
in their published multi-fidelity forms, and a crossing-learning-curves variant); ``simulator``
runs a study on N virtual workers; ``optuna_adapter`` drives Optuna through the same interface.
"""
