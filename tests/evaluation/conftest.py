"""Shared fixtures of the evaluation tests: a mini corpus with a test split, a tiny saved model, a Libri2Mix-layout
tree, an identity "separator" (every output = its input) and a numpy SI-SDR reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # evaluation_helpers

from evaluation_helpers import save_tiny_model, speech_like, write_wav  # noqa: E402

from polsess_hf.data import make_mini_polsess  # noqa: E402
from polsess_hf.models.outputs import SeparationOutput

N_TRAIN, N_VAL, N_TEST = 2, 2, 6  # the generator alternates indoor/outdoor rows: test = 3 indoor + 3 outdoor


@pytest.fixture(autouse=True)
def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    yield


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    """A 2/2/6-row mini corpus (polsess_hf.data.make_mini_polsess, as tests/data/conftest.py). Do not modify."""
    return make_mini_polsess(tmp_path_factory.mktemp("evaluation") / "mini_polsess", N_TRAIN, N_VAL, N_TEST, seed=7)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained two-output Conv-TasNet saved with save_pretrained (no training_config.yaml: task SB)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny_convtasnet")


@pytest.fixture
def libri_root(tmp_path) -> Path:
    """A Libri2Mix tree (wav8k/min/test) of three utterances of different lengths, Clean and Noisy."""
    root = tmp_path / "Libri2Mix"
    rng = np.random.default_rng(0)
    split = root / "wav8k" / "min" / "test"
    for name, length in (("a_01.wav", 8800), ("b_02.wav", 6400), ("c_03.wav", 8800)):
        s1 = np.round(speech_like(rng, length) * 20000).astype(np.int64)
        s2 = np.round(speech_like(rng, length) * 20000).astype(np.int64)
        write_wav(split / "s1" / name, s1)
        write_wav(split / "s2" / name, s2)
        write_wav(split / "mix_clean" / name, (s1 + s2) // 2)
        write_wav(split / "mix_both" / name, (s1 + s2) // 2 + rng.integers(-300, 300, length))
    return root
