"""Reference DPRNN/SepFormer networks built exactly like the thesis wrappers (test and benchmark use only).

``build_speechbrain_dprnn(config)`` and ``build_speechbrain_sepformer(config)`` rebuild the thesis' ``models/dprnn.py``
and ``models/sepformer.py`` from SpeechBrain 1.1.2 parts, with the thesis attribute names (``encoder``,
``separator``/``masknet``, ``decoder``), so their ``state_dict()`` has the thesis checkpoint key names. Their
``forward`` returns ``(batch_size, n_src, time_steps_out)`` for every ``n_src`` (the thesis squeezed the source axis
when ``n_src == 1`` and, for SepFormer, mangled batches of one; the network math is unchanged). Like the thesis,
they drop the up-to-``stride − 1`` trailing samples that do not fill a frame.

``build_asteroid_dprnn(config)`` builds asteroid 0.7.0's ``DPRNNTasNet`` at the same sizes, for speed comparisons
only (its masker differs: gLN, a bottleneck and a different output head). It exists only if asteroid imports.
"""

from __future__ import annotations

import torch
from torch import nn

from speechbrain_reference import import_speechbrain_module

__all__ = [
    "ThesisDPRNN",
    "ThesisSepFormer",
    "build_speechbrain_dprnn",
    "build_speechbrain_sepformer",
    "build_asteroid_dprnn",
    "asteroid_available",
]


def _dual_path():
    return import_speechbrain_module("lobes.models.dual_path")


def _decode(decoder: nn.Module, mixture_w: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask and decode every source like the thesis wrappers; returns ``(batch_size, n_src, time_steps_out)``."""
    batch_size = mixture_w.shape[0]
    estimates = [decoder(mixture_w * masks[i]).reshape(batch_size, -1) for i in range(masks.shape[0])]
    return torch.stack(estimates, dim=1)


class ThesisDPRNN(nn.Module):
    """The thesis ``models/dprnn.py`` DPRNN (same attributes and SpeechBrain arguments)."""

    def __init__(self, N=64, kernel_size=16, stride=8, C=1, num_layers=6, chunk_size=100, rnn_type="LSTM",
                 hidden_size=128, num_rnn_layers=1, dropout=0.0, bidirectional=True, norm_type="ln"):
        super().__init__()
        dp = _dual_path()
        self.encoder = dp.Encoder(kernel_size=kernel_size, out_channels=N, in_channels=1)
        intra_block = dp.SBRNNBlock(input_size=N, hidden_channels=hidden_size, num_layers=num_rnn_layers,
                                    rnn_type=rnn_type, dropout=dropout, bidirectional=True)
        inter_block = dp.SBRNNBlock(input_size=N, hidden_channels=hidden_size, num_layers=num_rnn_layers,
                                    rnn_type=rnn_type, dropout=dropout, bidirectional=bidirectional)
        self.separator = dp.Dual_Path_Model(in_channels=N, out_channels=N, intra_model=intra_block,
                                            inter_model=inter_block, num_layers=num_layers, norm=norm_type,
                                            K=chunk_size, num_spks=C, skip_around_intra=True,
                                            linear_layer_after_inter_intra=True)
        self.decoder = dp.Decoder(in_channels=N, out_channels=1, kernel_size=kernel_size, stride=stride, bias=False)
        self.C = C

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() == 3:
            mixture = mixture.squeeze(1)
        mixture_w = self.encoder(mixture)
        return _decode(self.decoder, mixture_w, self.separator(mixture_w))


class ThesisSepFormer(nn.Module):
    """The thesis ``models/sepformer.py`` SepFormer (same attributes and SpeechBrain arguments)."""

    def __init__(self, N=256, kernel_size=16, stride=8, C=2, causal=False, num_blocks=2, num_layers=8, d_model=256,
                 nhead=8, d_ffn=1024, dropout=0.0, chunk_size=250, hop_size=125, use_positional_encoding=True):
        super().__init__()
        dp = _dual_path()
        self.encoder = dp.Encoder(kernel_size=kernel_size, out_channels=N, in_channels=1)

        def stack():
            # SpeechBrain's option is `use_positional_encoding`; `norm_before=True` is the pre-LN the thesis used.
            return dp.SBTransformerBlock(num_layers=num_layers, d_model=d_model, nhead=nhead, d_ffn=d_ffn,
                                         dropout=dropout, use_positional_encoding=use_positional_encoding,
                                         norm_before=True)

        self.masknet = dp.Dual_Path_Model(num_spks=C, in_channels=N, out_channels=d_model, num_layers=num_blocks,
                                          K=chunk_size, intra_model=stack(), inter_model=stack(), norm="ln",
                                          linear_layer_after_inter_intra=False, skip_around_intra=True)
        self.decoder = dp.Decoder(in_channels=N, out_channels=1, kernel_size=kernel_size, stride=stride, bias=False)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() == 3:
            mixture = mixture.squeeze(1)
        mixture_w = self.encoder(mixture)
        return _decode(self.decoder, mixture_w, self.masknet(mixture_w))


def thesis_dprnn_kwargs(config) -> dict:
    """The thesis ``DPRNN(**kwargs)`` arguments equivalent to a :class:`DPRNNConfig`."""
    return {
        "N": config.n_filters, "kernel_size": config.kernel_size, "stride": config.stride, "C": config.n_src,
        "num_layers": config.n_blocks, "chunk_size": config.chunk_size, "rnn_type": config.rnn_type,
        "hidden_size": config.hidden_size, "num_rnn_layers": config.num_rnn_layers, "dropout": float(config.dropout),
        "bidirectional": config.bidirectional, "norm_type": "ln",
    }


def thesis_sepformer_kwargs(config) -> dict:
    """The thesis ``SepFormer(**kwargs)`` arguments equivalent to a :class:`SepFormerConfig`."""
    if config.intra_layers != config.inter_layers:
        raise ValueError(
            f"the thesis SepFormer has one `num_layers` for both stacks; got intra_layers={config.intra_layers}, "
            f"inter_layers={config.inter_layers}"
        )
    return {
        "N": config.n_filters, "kernel_size": config.kernel_size, "stride": config.stride, "C": config.n_src,
        "causal": False, "num_blocks": config.n_blocks, "num_layers": config.intra_layers, "d_model": config.d_model,
        "nhead": config.n_heads, "d_ffn": config.d_ffn, "dropout": float(config.dropout),
        "chunk_size": config.chunk_size, "hop_size": config.hop_size,
        "use_positional_encoding": config.use_positional_encoding,
    }


def build_speechbrain_dprnn(config) -> ThesisDPRNN:
    """The thesis DPRNN (SpeechBrain parts) at the sizes of ``config`` (a ``DPRNNConfig``)."""
    return ThesisDPRNN(**thesis_dprnn_kwargs(config))


def build_speechbrain_sepformer(config) -> ThesisSepFormer:
    """The thesis SepFormer (SpeechBrain parts) at the sizes of ``config`` (a ``SepFormerConfig``)."""
    return ThesisSepFormer(**thesis_sepformer_kwargs(config))


def asteroid_available() -> bool:
    try:
        import asteroid.models  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available" for benchmarking
        return False
    return True


def build_asteroid_dprnn(config) -> nn.Module:
    """asteroid 0.7.0 ``DPRNNTasNet`` at the sizes of ``config`` (benchmark only; not numerically comparable).

    Install with ``.venv/bin/pip install --no-deps asteroid==0.7.0 asteroid-filterbanks==0.4.0``.
    """
    from asteroid.models import DPRNNTasNet

    return DPRNNTasNet(
        n_src=config.n_src,
        n_filters=config.n_filters,
        kernel_size=config.kernel_size,
        stride=config.stride,
        bn_chan=config.n_filters,
        hid_size=config.hidden_size,
        chunk_size=config.chunk_size,
        hop_size=config.hop_size,
        n_repeats=config.n_blocks,
        norm_type="gLN",
        mask_act="relu",
        bidirectional=config.bidirectional,
        rnn_type=config.rnn_type,
        num_layers=config.num_rnn_layers,
        dropout=float(config.dropout),
    )
