"""Fixtures of the inference tests (the separators themselves live in ``separation_fakes``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # separation_fakes

from separation_fakes import make_tiny  # noqa: E402


@pytest.fixture
def tiny_convtasnet():
    return make_tiny("convtasnet")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny ConvTasNet (8 kHz, 2 sources)."""
    path = tmp_path_factory.mktemp("inference") / "tiny_convtasnet"
    make_tiny("convtasnet").save_pretrained(path)
    return path
