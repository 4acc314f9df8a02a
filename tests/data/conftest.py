"""Shared fixtures of the data-layer tests: small mini corpora (generated once per session) and helpers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_separator

from polsess_hf.data.mini import make_mini_polsess  # noqa: E402

from data_helpers import N_TEST, N_TRAIN, N_VAL  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    yield


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    """A 24/8/6-row mini corpus (34-column fork CSV). Tests must not modify it: copy it first (``corpus_copy``)."""
    return make_mini_polsess(tmp_path_factory.mktemp("corpora") / "mini_polsess", N_TRAIN, N_VAL, N_TEST, seed=7)


@pytest.fixture(scope="session")
def generator_root(tmp_path_factory) -> Path:
    """A 6/2/0-row mini corpus written in the generator's 31-column schema."""
    return make_mini_polsess(tmp_path_factory.mktemp("corpora") / "PolSESS_gen31", 6, 2, 0, seed=3, schema="generator")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One datasets cache for the session: the builder keys it by corpus path and CSV hash, so sharing is safe."""
    return tmp_path_factory.mktemp("hf_cache")


@pytest.fixture
def corpus_copy(mini_root, tmp_path):
    """``corpus_copy(name)``: a private copy of the mini corpus whose folder and CSVs are named ``name``."""

    def copy(name: str = "copied_corpus") -> Path:
        target = tmp_path / name
        shutil.copytree(mini_root, target)
        for csv in target.glob("*/corpus_*_final.csv"):
            split = csv.parent.name
            csv.rename(csv.with_name(f"corpus_{name}_{split}_final.csv"))
        return target

    return copy


