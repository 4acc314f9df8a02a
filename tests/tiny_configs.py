"""Tiny model configs shared by tests (importable by name: tests/ is on sys.path via tests/conftest.py).

Helpers live in uniquely named modules, never in ``conftest.py``: ``from conftest import ...`` resolves to whichever
conftest pytest imported last, which depends on the paths given on the command line."""

TINY_CONVTASNET = {"n_filters": 16, "bottleneck_channels": 16, "hidden_channels": 32, "n_blocks": 2, "n_repeats": 1}
