"""SepFormer (Subakan et al. 2021, https://arxiv.org/abs/2010.13154) as a Hugging Face model, numerically identical
to the PolSESS thesis network (SpeechBrain ``Encoder`` + ``Dual_Path_Model(SBTransformerBlock ×2)`` + ``Decoder``).

Speed and memory: attention runs through ``F.scaled_dot_product_attention`` (fused kernels; the ``(length, length)``
score matrices are never stored, where SpeechBrain's ``nn.MultiheadAttention(need_weights=True)`` materialises and
head-averages them), the query/key/value projection is one matrix product, and every tensor stays batch-first, so
no ``(time, batch, feature)`` permute copies are made. Gradient checkpointing recomputes one transformer layer at a
time.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from ..dual_path import DualPathBlock, DualPathMasker, DualPathPreTrainedModel
from .configuration_sepformer import SepFormerConfig

__all__ = [
    "SepFormerPreTrainedModel",
    "SepFormerModel",
    "SepFormerLayer",
    "SepFormerStack",
    "sinusoidal_positional_encoding",
]

# SpeechBrain's TransformerEncoderLayer/-Encoder LayerNorms use eps 1e-6.
LAYER_NORM_EPS = 1e-6
# SpeechBrain's PositionalEncoding table length; longer sequences are computed on the fly (same formula).
POSITIONAL_ENCODING_MAX_LEN = 2500


def sinusoidal_positional_encoding(
    length: int, d_model: int, *, offset: int = 0, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Positions ``offset … offset+length−1`` → ``(length, d_model)``: even dims ``sin(pos/10000^(2i/d))``, odd
    dims ``cos``; computed in float32 exactly as SpeechBrain's ``PositionalEncoding`` table."""
    positions = torch.arange(offset, offset + length, device=device).unsqueeze(1).float()
    inverse_frequency = torch.exp(
        torch.arange(0, d_model, 2, device=device).float() * -(math.log(10000.0) / d_model)
    )
    table = torch.zeros(length, d_model, device=device)
    table[:, 0::2] = torch.sin(positions * inverse_frequency)
    table[:, 1::2] = torch.cos(positions * inverse_frequency)
    return table.to(dtype)


class SepFormerPositionalEncoding(nn.Module):
    """Adds the sinusoidal encoding to ``(n_sequences, length, d_model)``.

    The first 2500 positions are a non-persistent buffer (not saved: it is a pure function of ``d_model``, and
    legacy checkpoints with or without SpeechBrain's ``pos_enc.pe`` buffers convert alike); longer sequences (the
    inter-chunk stack beyond ~5 min of 8 kHz audio) get the extra positions computed on the fly instead of failing.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.register_buffer(
            "table", sinusoidal_positional_encoding(POSITIONAL_ENCODING_MAX_LEN, d_model), persistent=False
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[1]
        table = self.table[:length]
        if length > table.shape[0]:
            extra = sinusoidal_positional_encoding(
                length - table.shape[0], self.d_model, offset=table.shape[0], device=table.device
            )
            table = torch.cat([table, extra])
        return hidden_states + table.to(hidden_states.dtype)


class SepFormerAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters (packed ``in_proj_weight``/
    ``in_proj_bias`` for q, k, v, and ``out_proj``), computed by ``F.scaled_dot_product_attention`` on batch-first
    input."""

    def __init__(self, config: SepFormerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = float(config.dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * config.d_model, config.d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * config.d_model))
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(n_sequences, length, d_model)`` → same shape."""
        n_sequences, length, d_model = hidden_states.shape
        qkv = F.linear(hidden_states, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(n_sequences, length, 3, self.n_heads, d_model // self.n_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (n_sequences, n_heads, length, head_dim), views
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0
        )
        # the CPU/GPU kernels return (n_sequences, length, n_heads, head_dim) memory order: this is a view
        return self.out_proj(attended.transpose(1, 2).reshape(n_sequences, length, d_model))


class SepFormerFeedForward(nn.Module):
    """``Linear(d_model → d_ffn) → ReLU → Dropout → Linear(d_ffn → d_model)``."""

    def __init__(self, config: SepFormerConfig):
        super().__init__()
        self.dropout = float(config.dropout)
        self.fc1 = nn.Linear(config.d_model, config.d_ffn)
        self.fc2 = nn.Linear(config.d_ffn, config.d_model)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(n_sequences, length, d_model)`` → same shape."""
        batch_shape = hidden_states.shape[:-1]
        # fc1 as one 2-D addmm so the ReLU can run in place on a tensor that is not a view (an in-place op on a
        # view makes autograd copy slices back); fc1's backward does not need its output, so this saves one
        # (tokens × d_ffn) buffer.
        hidden = torch.addmm(self.fc1.bias, hidden_states.reshape(-1, hidden_states.shape[-1]), self.fc1.weight.t())
        hidden = F.dropout(hidden.relu_(), self.dropout, self.training)
        return self.fc2(hidden).view(*batch_shape, -1)


class SepFormerLayer(GradientCheckpointingLayer):
    """Pre-LN transformer layer (SpeechBrain ``TransformerEncoderLayer(normalize_before=True)``):
    ``z = z + Drop(MHA(LN₁(z)))``; ``z = z + Drop(FFN(LN₂(z)))``."""

    def __init__(self, config: SepFormerConfig):
        super().__init__()
        self.dropout = float(config.dropout)
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)
        self.self_attn = SepFormerAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)
        self.feed_forward = SepFormerFeedForward(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(n_sequences, length, d_model)`` → same shape."""
        attended = self.self_attn(self.self_attn_norm(hidden_states))
        hidden_states = hidden_states + F.dropout(attended, self.dropout, self.training)
        transformed = self.feed_forward(self.feed_forward_norm(hidden_states))
        return hidden_states + F.dropout(transformed, self.dropout, self.training)


class SepFormerStack(nn.Module):
    """Intra- or inter-chunk transformer (SpeechBrain ``SBTransformerBlock``): optional positional encoding,
    ``num_layers`` pre-LN layers, final LayerNorm."""

    def __init__(self, config: SepFormerConfig, num_layers: int):
        super().__init__()
        self.positional_encoding = (
            SepFormerPositionalEncoding(config.d_model) if config.use_positional_encoding else None
        )
        self.layers = nn.ModuleList([SepFormerLayer(config) for _ in range(num_layers)])
        self.final_norm = nn.LayerNorm(config.d_model, eps=LAYER_NORM_EPS)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(n_sequences, length, d_model)`` → same shape."""
        if self.positional_encoding is not None:
            hidden_states = self.positional_encoding(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.final_norm(hidden_states)


class SepFormerPreTrainedModel(DualPathPreTrainedModel):
    config_class = SepFormerConfig
    base_model_prefix = "sepformer"
    _no_split_modules = ["SepFormerLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SepFormerAttention):
            # nn.MultiheadAttention._reset_parameters: xavier-uniform packed projection, zero biases; out_proj keeps
            # nn.Linear's weight init (its child init ran first) but gets a zero bias.
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, SepFormerPositionalEncoding):
            init.copy_(module.table, sinusoidal_positional_encoding(module.table.shape[0], module.d_model))
        else:
            super()._init_weights(module)


class SepFormerModel(SepFormerPreTrainedModel):
    r"""
    SepFormer separator: learned encoder → dual-path transformer mask network → shared decoder.

    Input `input_values` `(batch_size, time_steps)` (or `(batch_size, 1, time_steps)`), output
    [`SeparationOutput`] with `estimates` `(batch_size, n_src, time_steps)`.

    Example:

    ```python
    >>> import torch
    >>> from polsess_hf.models.sepformer import SepFormerConfig, SepFormerModel
    >>> model = SepFormerModel(SepFormerConfig.from_preset("thesis")).eval()
    >>> model(torch.randn(1, 8003)).estimates.shape
    torch.Size([1, 2, 8003])
    ```
    """

    def __init__(self, config: SepFormerConfig):
        super().__init__(config)
        self._build_codec(config)
        blocks = [
            DualPathBlock(
                SepFormerStack(config, config.intra_layers), SepFormerStack(config, config.inter_layers), config.d_model
            )
            for _ in range(config.n_blocks)
        ]
        self.masker = DualPathMasker(config.n_filters, config.d_model, config.chunk_size, config.n_src, blocks)
        self.post_init()
