"""Helpers of the data-layer tests: mini-corpus sizes and an independent WAV decoder."""

from __future__ import annotations

import numpy as np

N_TRAIN, N_VAL, N_TEST = 24, 8, 6


def read_f64(path) -> np.ndarray:
    """Independent reference decoder: soundfile int16 → float64 / 32768."""
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="int16")
    return data.astype(np.float64) / 32768.0
