"""Helpers of the evaluation tests: a tiny saved model, an identity "separator", WAV writing, a speech-like signal
and an independent numpy SI-SDR."""

from __future__ import annotations

import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tiny_configs import TINY_CONVTASNET

from polsess_hf.models.outputs import SeparationOutput


def save_tiny_model(path: Path, *, n_src: int = 2, sampling_rate: int = 8000, seed: int = 0) -> Path:
    from polsess_hf.models.convtasnet import ConvTasNetConfig, ConvTasNetModel

    torch.manual_seed(seed)
    model = ConvTasNetModel(ConvTasNetConfig(**TINY_CONVTASNET, n_src=n_src, sampling_rate=sampling_rate))
    model.save_pretrained(path)
    return path


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


def numpy_si_sdr(estimate: np.ndarray, target: np.ndarray, eps: float = 1e-8) -> float:
    """Independent float64 zero-mean SI-SDR (asteroid's formula), for one pair of 1-D signals."""
    estimate = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    target = np.asarray(target, dtype=np.float64) - np.mean(target)
    projection = np.dot(estimate, target) / (np.dot(target, target) + eps) * target
    noise = estimate - projection
    return float(10 * np.log10(np.dot(projection, projection) / (np.dot(noise, noise) + eps) + eps))
