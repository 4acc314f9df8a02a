"""Output dataclasses shared by every separator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

__all__ = ["SeparationOutput"]


@dataclass
class SeparationOutput(ModelOutput):
    """Output of every polsess_hf separator.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Permutation-invariant negative SI-SDR in dB (mean over the batch), see `polsess_hf.losses`.
        estimates (`torch.FloatTensor` of shape `(batch_size, n_src, time_steps)`):
            Separated waveforms, exactly as many samples as the input. With `labels` given they are returned in
            the network's own order (not reordered by the PIT permutation).
    """

    loss: torch.FloatTensor | None = None
    estimates: torch.FloatTensor | None = None
