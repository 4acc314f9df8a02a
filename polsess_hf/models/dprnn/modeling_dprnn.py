"""DPRNN (Luo et al. 2020, https://arxiv.org/abs/1910.06379) as a Hugging Face model, numerically identical to the
PolSESS thesis network (SpeechBrain ``Encoder`` + ``Dual_Path_Model(SBRNNBlock, SBRNNBlock)`` + ``Decoder``).

The RNNs are plain ``torch.nn.LSTM``/``GRU`` modules (oneDNN on CPU, cuDNN on GPU), run time-major (see
:class:`DPRNNPath`); a hand-written CPU LSTM that advanced both directions in one batched product per step was
measured slower than oneDNN (7.1 vs 5.3 s per training step, 2 threads) and dropped.
"""

import torch
from torch import nn
from transformers import initialization as init

from ..dual_path import CheckpointedDualPathBlock, DualPathMasker, DualPathPreTrainedModel
from .configuration_dprnn import DPRNNConfig

__all__ = ["DPRNNPreTrainedModel", "DPRNNModel", "DPRNNPath"]


class DPRNNPath(nn.Module):
    """Intra- or inter-chunk path: RNN over ``(n_sequences, length, n_filters)`` then ``Linear(directions·hidden →
    n_filters)``; SpeechBrain's ``SBRNNBlock`` followed by the ``intra_linear``/``inter_linear`` of its block.

    The RNN runs time-major (``batch_first=False``): the oneDNN/cuDNN kernels work time-major, so a batch-first
    call (SpeechBrain's) transposes the input and, worse, the ``2·hidden``-wide output — and the projection then
    copies that output again. Here only the narrow ``n_filters``-wide input is transposed and the projection
    reads the RNN output in place.
    """

    def __init__(self, config: DPRNNConfig, bidirectional: bool):
        super().__init__()
        rnn_class = {"LSTM": nn.LSTM, "GRU": nn.GRU}[config.rnn_type]
        self.rnn = rnn_class(
            config.n_filters,
            config.hidden_size,
            num_layers=config.num_rnn_layers,
            dropout=float(config.dropout) if config.num_rnn_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        directions = 2 if bidirectional else 1
        self.projection = nn.Linear(directions * config.hidden_size, config.n_filters)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """``(n_sequences, length, n_filters)`` → ``(n_sequences, length, n_filters)`` (a transposed view)."""
        inputs = sequences.transpose(0, 1).contiguous()
        if inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no low-precision LSTM/GRU on CPUs without AVX-512 BF16 and fails with an opaque "could not
            # create a primitive descriptor" error: the recurrence runs in fp32, the projection stays autocast.
            with torch.autocast("cpu", enabled=False):
                hidden_states = self.rnn(inputs.float())[0]
        else:
            hidden_states = self.rnn(inputs)[0]  # (length, n_sequences, dirs·hidden)
        return self.projection(hidden_states).transpose(0, 1)


class DPRNNPreTrainedModel(DualPathPreTrainedModel):
    config_class = DPRNNConfig
    base_model_prefix = "dprnn"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.LSTM, nn.GRU)):
            # SpeechBrain's RNN wrappers: PyTorch's U(±1/√hidden) for everything, then `rnn_init` makes every
            # recurrent matrix orthogonal (speechbrain.nnet.RNN.rnn_init).
            bound = 1 / module.hidden_size**0.5
            for name, parameter in module.named_parameters():
                init.uniform_(parameter, -bound, bound)
                if "weight_hh" in name:
                    init.orthogonal_(parameter)
        else:
            super()._init_weights(module)


class DPRNNModel(DPRNNPreTrainedModel):
    r"""
    DPRNN separator: learned encoder → dual-path BLSTM mask network → shared decoder.

    Input `input_values` `(batch_size, time_steps)` (or `(batch_size, 1, time_steps)`), output
    [`SeparationOutput`] with `estimates` `(batch_size, n_src, time_steps)`.

    Example:

    ```python
    >>> import torch
    >>> from polsess_hf.models.dprnn import DPRNNConfig, DPRNNModel
    >>> model = DPRNNModel(DPRNNConfig(n_src=2)).eval()
    >>> model(torch.randn(1, 8003)).estimates.shape
    torch.Size([1, 2, 8003])
    ```
    """

    def __init__(self, config: DPRNNConfig):
        super().__init__(config)
        self._build_codec(config)
        blocks = [
            CheckpointedDualPathBlock(
                DPRNNPath(config, bidirectional=True),  # intra-chunk: always bidirectional
                DPRNNPath(config, bidirectional=config.bidirectional),
                config.n_filters,
            )
            for _ in range(config.n_blocks)
        ]
        self.masker = DualPathMasker(config.n_filters, config.n_filters, config.chunk_size, config.n_src, blocks)
        self.post_init()
