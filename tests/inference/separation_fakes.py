"""Separators for the inference tests: tiny real models, and fakes whose answers are known (imported by the tests)."""

from __future__ import annotations

import types
import weakref

import numpy as np
import torch

import polsess_hf  # noqa: F401  (registers the architectures)
from polsess_hf.models import MODEL_CLASSES

# Small enough that 3 minutes of 8 kHz audio separate in about a second on one core.
TINY_CONFIGS = {
    "convtasnet": dict(n_filters=16, bottleneck_channels=16, hidden_channels=32, n_blocks=2, n_repeats=1),
    "dprnn": dict(n_filters=8, kernel_size=4, chunk_size=10, n_blocks=2, hidden_size=6),
    "sepformer": dict(n_filters=8, kernel_size=4, chunk_size=10, n_blocks=1, intra_layers=1, inter_layers=2,
                      d_model=8, n_heads=2, d_ffn=16),
    "spmamba": dict(n_fft=32, hop_length=8, num_blocks=1, emb_dim=4, emb_ks=2, attn_n_head=2, attn_approx_qk_dim=16,
                    d_state=4, expand=2, mamba_backend="torch"),
}


def make_tiny(model_type: str = "convtasnet", **overrides):
    config_class, model_class = MODEL_CLASSES[model_type]
    torch.manual_seed(0)
    return model_class(config_class(**{**TINY_CONFIGS[model_type], **overrides})).eval()


class CallRecorder:
    """Wraps a separator's forward: records each call's input shape and whether the model was in eval mode, and
    holds weak references to the returned estimates so a test can see how many are still alive at each call."""

    def __init__(self, model):
        self.model = model
        self.shapes: list[tuple[int, ...]] = []
        self.eval_mode: list[bool] = []
        self.alive_at_call: list[int] = []
        self._outputs: list[weakref.ref] = []
        self._forward = model.forward
        model.forward = self._wrapped

    def _wrapped(self, *args, **kwargs):
        import gc

        gc.collect()
        self.alive_at_call.append(sum(ref() is not None for ref in self._outputs))
        inputs = kwargs.get("input_values", args[0] if args else None)
        self.shapes.append(tuple(inputs.shape))
        self.eval_mode.append(not self.model.training)
        output = self._forward(*args, **kwargs)
        self._outputs.append(weakref.ref(output.estimates))
        return output


class OracleSeparator(torch.nn.Module):
    """A "separator" that knows the answer: it finds where each chunk lies in ``mixture`` (by its samples) and
    returns the true ``sources`` there, in the order ``order_for_chunk(start)`` — so the correct order of every
    chunk is known to the test. ``forward(input_values=(batch, time))`` returns ``.estimates (batch, n_src, time)``.
    """

    def __init__(self, mixture: np.ndarray, sources: np.ndarray, order_for_chunk, sampling_rate: int = 8000):
        super().__init__()
        self.mixture, self.sources, self.order_for_chunk = mixture, sources, order_for_chunk
        self.config = types.SimpleNamespace(sampling_rate=sampling_rate, n_src=sources.shape[0])
        self.starts: list[int] = []

    def _locate(self, chunk: np.ndarray) -> int:
        for start in np.flatnonzero(self.mixture == chunk[0]):
            if np.array_equal(self.mixture[start : start + chunk.size], chunk):
                return int(start)
        raise AssertionError("chunk not found in the mixture")

    def forward(self, input_values: torch.Tensor):
        estimates = []
        for chunk in input_values.numpy():
            start = self._locate(chunk)
            self.starts.append(start)
            order = list(self.order_for_chunk(start))
            estimates.append(self.sources[order, start : start + chunk.size])
        return types.SimpleNamespace(estimates=torch.from_numpy(np.stack(estimates)))


class IdentitySeparator(torch.nn.Module):
    """One "source": the input itself (overlap-add must then give back the input exactly)."""

    def __init__(self, sampling_rate: int = 8000):
        super().__init__()
        self.config = types.SimpleNamespace(sampling_rate=sampling_rate, n_src=1)
        self.calls = 0

    def forward(self, input_values: torch.Tensor):
        self.calls += 1
        return types.SimpleNamespace(estimates=input_values.unsqueeze(1).clone())


def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise with a syllable-rate envelope and a pitch-like tone: non-stationary, band-limited to 3.5 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)) ** 2
    tone = np.sin(2 * np.pi * rng.uniform(100, 250) * t * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t)))
    noise = np.convolve(rng.standard_normal(t.size), np.ones(3) / 3, mode="same")
    return (0.1 * envelope * (tone + 0.5 * noise)).astype(np.float32)
