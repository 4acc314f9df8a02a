"""A deliberately tiny Conv-TasNet used only to check that the mini corpus is learnable (tests and benchmarks).

It is independent of ``polsess_hf.models`` on purpose: the data layer's "a small model learns the mini corpus"
check must not depend on, or break with, the architecture code. Shapes: ``(batch_size, time_steps)`` in,
``(batch_size, n_src, time_steps)`` out.
"""

from __future__ import annotations

import torch
from torch import nn


class _TemporalBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, dilation: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, hidden, 1),
            nn.PReLU(),
            nn.GroupNorm(1, hidden),
            nn.Conv1d(hidden, hidden, 3, padding=dilation, dilation=dilation, groups=hidden),
            nn.PReLU(),
            nn.GroupNorm(1, hidden),
            nn.Conv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class TinyConvTasNet(nn.Module):
    """Encoder (N filters of length L, stride L/2) → TCN mask net (X dilated blocks × R) → decoder."""

    def __init__(
        self,
        n_src: int = 2,
        n_filters: int = 64,
        kernel: int = 16,
        bottleneck: int = 64,
        hidden: int = 128,
        blocks: int = 6,
        repeats: int = 2,
    ):
        super().__init__()
        self.n_src, self.n_filters, self.kernel = n_src, n_filters, kernel
        self.encoder = nn.Conv1d(1, n_filters, kernel, stride=kernel // 2, bias=False)
        layers = [nn.GroupNorm(1, n_filters), nn.Conv1d(n_filters, bottleneck, 1)]
        layers += [_TemporalBlock(bottleneck, hidden, 2**b) for _ in range(repeats) for b in range(blocks)]
        layers += [nn.PReLU(), nn.Conv1d(bottleneck, n_src * n_filters, 1)]
        self.masker = nn.Sequential(*layers)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel, stride=kernel // 2, bias=False)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        batch, length = mixture.shape
        stride = self.kernel // 2
        pad = (-(length - self.kernel) % stride) if length > self.kernel else self.kernel - length
        x = nn.functional.pad(mixture, (0, pad)).unsqueeze(1)
        features = torch.relu(self.encoder(x))  # (batch, n_filters, frames)
        masks = torch.sigmoid(self.masker(features)).view(batch, self.n_src, self.n_filters, -1)
        separated = (masks * features.unsqueeze(1)).view(batch * self.n_src, self.n_filters, -1)
        return self.decoder(separated).view(batch, self.n_src, -1)[..., :length]
