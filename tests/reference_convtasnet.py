"""Reference Conv-TasNets for parity tests and benchmarks (never imported by the polsess_hf package).

* :func:`build_speechbrain_convtasnet` builds the network exactly as the thesis wrapper did (SpeechBrain 1.1.2
  ``dual_path.Encoder`` + ``conv_tasnet.MaskNet`` + ``dual_path.Decoder``), with the thesis state-dict prefixes
  ``encoder.``, ``mask_net.``, ``decoder.``. Its forward patches SpeechBrain's module-global
  ``conv_tasnet.EPS`` to the config's ``norm_eps`` (the thesis trained with 1e-4) and restores it afterwards.
* :func:`build_asteroid_convtasnet` builds asteroid 0.7.0's ``ConvTasNet`` at the same sizes (benchmarks only;
  install with ``make bench-deps``); it returns ``None`` when asteroid is not importable.
"""

from __future__ import annotations

import torch
from torch import nn

from speechbrain_reference import import_speechbrain_module


class SpeechBrainConvTasNet(nn.Module):
    """The thesis ``ConvTasNet`` wrapper: ``forward(x (batch, time)) → (batch, n_src, (L − 1)·8 + 16)``."""

    def __init__(self, config):
        super().__init__()
        if config.skip_channels != 0 or config.mask_activation != "relu":
            raise ValueError(
                "SpeechBrain's MaskNet has no skip path and the thesis used ReLU masks; got "
                f"skip_channels={config.skip_channels}, mask_activation={config.mask_activation!r}"
            )
        dual_path = import_speechbrain_module("lobes.models.dual_path")
        self._conv_tasnet = import_speechbrain_module("lobes.models.conv_tasnet")
        self.eps = config.norm_eps
        self.n_src = config.n_src
        self.encoder = dual_path.Encoder(kernel_size=config.kernel_size, out_channels=config.n_filters)
        # SpeechBrain infers each appended block's input shape by running every block appended so far on a dummy
        # (1, 256, B) input: O(blocks²) forwards, minutes at thesis size on 2 busy cores. A temporal block maps
        # (M, K, B) → (M, K, B) (it is residual), so the stack's output shape is its input shape; skipping the
        # dummy forwards changes neither the modules built nor the random-number stream (they draw no numbers).
        stack = self._conv_tasnet.TemporalBlocksSequential
        original = stack.get_output_shape
        stack.get_output_shape = lambda sequential: torch.Size(sequential.input_shape)
        try:
            self.mask_net = self._conv_tasnet.MaskNet(
                config.n_filters,
                config.bottleneck_channels,
                config.hidden_channels,
                config.conv_kernel_size,
                config.n_blocks,
                config.n_repeats,
                config.n_src,
                norm_type="gLN",
                causal=False,
                mask_nonlinear="relu",
            )
        finally:
            stack.get_output_shape = original
        self.decoder = dual_path.Decoder(
            in_channels=config.n_filters,
            out_channels=1,
            kernel_size=config.kernel_size,
            stride=config.stride,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = self._conv_tasnet.EPS
        self._conv_tasnet.EPS = self.eps
        try:
            w = self.encoder(x)  # [B, N, L]
            masks = self.mask_net(w)  # [C, B, N, L]
            masked = torch.stack([w * masks[c] for c in range(self.n_src)])  # [C, B, N, L]
            # Decoder squeezes away size-1 dims, so restore the batch dimension explicitly.
            estimates = [self.decoder(masked[c]).reshape(x.shape[0], -1) for c in range(self.n_src)]
        finally:
            self._conv_tasnet.EPS = previous
        return torch.stack(estimates, dim=1)  # [B, C, T']


def build_speechbrain_convtasnet(config) -> SpeechBrainConvTasNet:
    """The thesis network at ``config``'s sizes (``ConvTasNetConfig``; skip path off, ReLU masks)."""
    return SpeechBrainConvTasNet(config)


def build_asteroid_convtasnet(config):
    """asteroid 0.7.0 ``ConvTasNet`` at ``config``'s sizes, or ``None`` when asteroid is not installed.

    asteroid's network differs in details (biases in every convolution, zero padding, skip path unless
    ``skip_chan=0``), so it is a speed/memory reference only, never a numerical one.
    """
    try:
        from asteroid.models import ConvTasNet
    except Exception:  # noqa: BLE001 - any import failure means "not available" for the benchmark
        return None
    return ConvTasNet(
        n_src=config.n_src,
        n_blocks=config.n_blocks,
        n_repeats=config.n_repeats,
        bn_chan=config.bottleneck_channels,
        hid_chan=config.hidden_channels,
        skip_chan=config.skip_channels,
        conv_kernel_size=config.conv_kernel_size,
        norm_type="gLN",
        mask_act=config.mask_activation,
        fb_name="free",
        kernel_size=config.kernel_size,
        n_filters=config.n_filters,
        stride=config.stride,
        sample_rate=config.sampling_rate,
    )
