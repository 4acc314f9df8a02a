"""Shared fixtures of the training tests: a very small generated corpus and a tiny model config."""

from __future__ import annotations

import pytest

from tiny_configs import TINY_CONVTASNET  # noqa: F401  (re-exported for older imports)


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory):
    """A mini PolSESS corpus: 8 train rows, 4 val rows (half indoor, half outdoor)."""
    from polsess_hf.data import make_mini_polsess

    return make_mini_polsess(tmp_path_factory.mktemp("training") / "mini_polsess", 8, 4, 0, seed=3)
