"""Learned analysis/synthesis filterbanks shared by ConvTasNet, DPRNN and SepFormer.

The thesis networks (SpeechBrain ``dual_path.Encoder``/``Decoder``) frame the waveform with
``L = ⌊(T − K)/S⌋ + 1`` frames and decode ``(L − 1)·S + K`` samples, silently dropping up to ``S − 1`` trailing
samples and failing for ``T < K``. Here the waveform is right-padded with zeros to the next whole frame before
encoding and the decoded signal is cropped back, so a separator returns exactly ``T`` samples for every
``T ≥ 1``. When ``(T − K)`` is a multiple of ``S`` (e.g. 1 s or 4 s at 8 kHz with K=16, S=8) nothing is padded and
the output equals the thesis network's sample for sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WaveformEncoder", "WaveformDecoder", "frame_padding"]


def frame_padding(num_samples: int, kernel_size: int, stride: int) -> int:
    """Zeros to append so that ``num_samples`` is covered by whole frames (at least one frame)."""
    if num_samples <= kernel_size:
        return kernel_size - num_samples
    remainder = (num_samples - kernel_size) % stride
    return 0 if remainder == 0 else stride - remainder


class WaveformEncoder(nn.Module):
    """``Conv1d(1 → N, kernel K, stride S, no bias)`` followed by ReLU.

    Input ``(batch_size, time_steps)`` (already padded with :func:`frame_padding`), output
    ``(batch_size, N, frames)``. The parameter is stored as ``conv1d.weight`` like SpeechBrain's encoder.
    """

    def __init__(self, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv1d = nn.Conv1d(1, out_channels, kernel_size, stride=stride, bias=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1d(waveform.unsqueeze(1)))


class WaveformDecoder(nn.Module):
    """Shared synthesis filterbank ``ConvTranspose1d(N → 1, kernel K, stride S, no bias)``.

    Input ``(batch_size, n_src, N, frames)``, output ``(batch_size, n_src, (frames − 1)·S + K)``. All sources go
    through the same filters in one call (sources folded into the batch).
    """

    def __init__(self, in_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, 1, kernel_size))
        self.stride = stride
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        batch_size, n_src, channels, frames = masked.shape
        decoded = F.conv_transpose1d(masked.reshape(batch_size * n_src, channels, frames), self.weight, stride=self.stride)
        return decoded.reshape(batch_size, n_src, -1)
