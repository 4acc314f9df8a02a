"""Shared fixtures of the evaluation tests: a mini corpus with a test split, a tiny saved model, a Libri2Mix-layout
tree, an identity "separator" (every output = its input) and a numpy SI-SDR reference."""

from __future__ import annotations

import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from polsess_hf.data import make_mini_polsess
from polsess_hf.models.outputs import SeparationOutput

# The same tiny Conv-TasNet as the training tests (tests/training/conftest.py).
TINY_CONVTASNET = {"n_filters": 16, "bottleneck_channels": 16, "hidden_channels": 32, "n_blocks": 2, "n_repeats": 1}
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


def save_tiny_model(path: Path, *, n_src: int = 2, sampling_rate: int = 8000, seed: int = 0) -> Path:
    from polsess_hf.models.convtasnet import ConvTasNetConfig, ConvTasNetModel

    torch.manual_seed(seed)
    model = ConvTasNetModel(ConvTasNetConfig(**TINY_CONVTASNET, n_src=n_src, sampling_rate=sampling_rate))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained two-output Conv-TasNet saved with save_pretrained (no training_config.yaml: task SB)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny_convtasnet")


class IdentitySeparator(torch.nn.Module):
    """Returns the input as every source: estimates = mixture, so every improvement must be exactly 0."""

    def __init__(self, n_src: int = 2, sampling_rate: int = 8000):
        super().__init__()
        self.config = SimpleNamespace(n_src=n_src, sampling_rate=sampling_rate, model_type="identity")
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, input_values):
        return SeparationOutput(estimates=input_values.unsqueeze(1).repeat(1, self.config.n_src, 1))


def write_wav(path: Path, samples, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def speech_like(rng: np.random.Generator, n: int, rate: int = 8000) -> np.ndarray:
    """A voiced-speech stand-in PESQ accepts: a gliding harmonic complex with a syllable-rate envelope."""
    t = np.arange(n) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)), 0, None) ** 2
    return 0.2 * voiced * envelope + 0.002 * rng.standard_normal(n)


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


def numpy_si_sdr(estimate: np.ndarray, target: np.ndarray, eps: float = 1e-8) -> float:
    """Independent float64 zero-mean SI-SDR (asteroid's formula), for one pair of 1-D signals."""
    estimate = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    target = np.asarray(target, dtype=np.float64) - np.mean(target)
    projection = np.dot(estimate, target) / (np.dot(target, target) + eps) * target
    noise = estimate - projection
    return float(10 * np.log10(np.dot(projection, projection) / (np.dot(noise, noise) + eps) + eps))
