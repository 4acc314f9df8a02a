"""Dual-path separation shared by DPRNN and SepFormer: segmentation, overlap-add, the mask head and the base model.

Both thesis networks are SpeechBrain's ``Dual_Path_Model`` with different intra/inter sequence models. This module
reproduces it exactly (same arithmetic, same padding) but lays the chunked features out channels-last,
``(batch_size, n_chunks, chunk_size, channels)``, so that the intra-chunk path sees a free view
``(batch_size·n_chunks, chunk_size, channels)`` and 1×1 convolutions become plain matrix products; SpeechBrain
permutes and copies the ``(batch, channels, chunk, n_chunks)`` tensor four times per block.

SpeechBrain's segmentation, which must be reproduced exactly because the zero padding changes what a bidirectional
RNN or attention sees (``L`` frames, chunk ``K``, ``P = K // 2``)::

    gap = K − ((P + L mod K) mod K)          # 1 … K, ALWAYS appended (even when L is a multiple of K)
    padded = [P zeros | L frames | gap zeros | P zeros]
    stream A = padded[0 : L+gap+P]   cut into K-frame chunks  A0 A1 A2 …
    stream B = padded[P : L+gap+2P]  cut into K-frame chunks  B0 B1 B2 …
    chunks   = A0 B0 A1 B1 …  (S = 2·(L+gap+P)/K chunks)

For even ``K`` the interleaved chunks are simply every window of ``K`` frames at hop ``P``. Overlap-add inverts it:
flatten stream A and stream B, shift them by ``P`` against each other, add, and keep ``L`` frames.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from .filterbanks import WaveformDecoder, WaveformEncoder, frame_padding
from .modeling_separation import SeparationPreTrainedModel
from .outputs import SeparationOutput

__all__ = [
    "GROUP_NORM_EPS",
    "segment",
    "overlap_add",
    "ChannelsLastGroupNorm",
    "DualPathBlock",
    "CheckpointedDualPathBlock",
    "DualPathMasker",
    "DualPathPreTrainedModel",
    "convert_dual_path_state_dict",
]

# SpeechBrain's "ln" norm in Dual_Path_Model is GroupNorm(1, C, eps=1e-8); the thesis' AMP eps patch (1e-4) reached
# only ConvTasNet's norms, never these.
GROUP_NORM_EPS = 1e-8


def segment(features: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, int]:
    """Cut ``features`` ``(batch_size, channels, frames)`` into 50 %-overlapping chunks, SpeechBrain-exact.

    Returns ``(chunks, gap)``: ``chunks`` ``(batch_size, n_chunks, chunk_size, channels)`` (contiguous) and the
    number of zero frames appended at the end (1 … ``chunk_size``), needed by :func:`overlap_add`.
    """
    batch_size, channels, frames = features.shape
    hop = chunk_size // 2
    gap = chunk_size - (hop + frames % chunk_size) % chunk_size
    padded = F.pad(features, (hop, gap + hop))  # (batch_size, channels, hop + frames + gap + hop)
    if chunk_size % 2 == 0:
        # every K-frame window at hop K/2: stream A and stream B chunks alternate by construction
        windows = padded.unfold(-1, chunk_size, hop)  # (batch_size, channels, n_chunks, chunk_size), a view
    else:
        stream_length = frames + gap + hop
        stream_a = padded[..., :stream_length].unflatten(-1, (-1, chunk_size))
        stream_b = padded[..., hop : hop + stream_length].unflatten(-1, (-1, chunk_size))
        windows = torch.stack([stream_a, stream_b], dim=3).flatten(2, 3)
    return windows.permute(0, 2, 3, 1).contiguous(), gap


def overlap_add(chunks: torch.Tensor, frames: int) -> torch.Tensor:
    """Invert :func:`segment`: ``chunks`` ``(batch_size, n_chunks, chunk_size, channels)`` → ``(batch_size, frames,
    channels)``, summing the two overlapping streams like SpeechBrain's ``_over_add`` (no normalisation)."""
    batch_size, n_chunks, chunk_size, channels = chunks.shape
    hop = chunk_size // 2
    stream_a = chunks[:, 0::2].reshape(batch_size, -1, channels)  # frames hop … of stream A start at frame 0
    stream_b = chunks[:, 1::2].reshape(batch_size, -1, channels)
    return stream_a[:, hop : hop + frames] + stream_b[:, :frames]


class ChannelsLastGroupNorm(nn.Module):
    """``GroupNorm(1, channels, eps=1e-8)`` for channels-last input ``(batch_size, ..., channels)``.

    One group means: normalise over everything but the batch axis, then a per-channel affine map. Parameters
    ``weight``/``bias`` ``(channels,)`` are those of the ``nn.GroupNorm`` it replaces.
    """

    def __init__(self, channels: int, eps: float = GROUP_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normalized = F.layer_norm(hidden_states, hidden_states.shape[1:], eps=self.eps)
        return torch.addcmul(self.bias, normalized, self.weight)


class DualPathBlock(nn.Module):
    """One dual-path block: intra-chunk path, then inter-chunk path, each followed by GroupNorm and a residual add.

    ``intra_path``/``inter_path`` map batch-first sequences ``(n_sequences, length, channels)`` to the same shape
    (DPRNN: an RNN and a linear projection; SepFormer: a transformer stack).
    """

    def __init__(self, intra_path: nn.Module, inter_path: nn.Module, channels: int):
        super().__init__()
        self.intra_path = intra_path
        self.intra_norm = ChannelsLastGroupNorm(channels)
        self.inter_path = inter_path
        self.inter_norm = ChannelsLastGroupNorm(channels)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks`` ``(batch_size, n_chunks, chunk_size, channels)`` → same shape."""
        batch_size, n_chunks, chunk_size, channels = chunks.shape
        # intra: every chunk is a sequence of chunk_size frames (a free view in this layout)
        intra = self.intra_path(chunks.view(batch_size * n_chunks, chunk_size, channels))
        intra = self.intra_norm(intra.view(batch_size, n_chunks, chunk_size, channels)) + chunks
        # inter: every position inside a chunk is a sequence over the n_chunks chunks
        # contiguous: with batch_size 1 the reshape is a strided view, and every op of the inter path (LayerNorm,
        # Linear) would then copy it again
        inter_input = intra.transpose(1, 2).reshape(batch_size * chunk_size, n_chunks, channels).contiguous()
        inter = self.inter_path(inter_input).view(batch_size, chunk_size, n_chunks, channels).transpose(1, 2)
        return self.inter_norm(inter) + intra


class CheckpointedDualPathBlock(GradientCheckpointingLayer, DualPathBlock):
    """A :class:`DualPathBlock` that ``model.gradient_checkpointing_enable()`` recomputes in the backward pass."""


class DualPathMasker(nn.Module):
    """SpeechBrain's ``Dual_Path_Model``: mask network ``(batch_size, n_filters, frames)`` → masks
    ``(batch_size, n_src, n_filters, frames)``.

    GroupNorm(1) → 1×1 conv ``n_filters → channels`` (no bias) → segmentation → blocks → PReLU → 1×1
    ``channels → channels·n_src`` (bias) → overlap-add → ``tanh(W·x) ⊙ sigmoid(W_g·x)`` → 1×1 ``channels →
    n_filters`` (no bias) → ReLU. Output channel index = ``source·channels + channel`` (speaker-major) as in
    SpeechBrain. The 1×1 convolutions after segmentation run channels-last as ``nn.Linear`` layers.
    """

    def __init__(self, n_filters: int, channels: int, chunk_size: int, n_src: int, blocks: list[nn.Module]):
        super().__init__()
        self.chunk_size = chunk_size
        self.n_src = n_src
        self.input_norm = nn.GroupNorm(1, n_filters, eps=GROUP_NORM_EPS)
        self.input_projection = nn.Conv1d(n_filters, channels, 1, bias=False)
        self.blocks = nn.ModuleList(blocks)
        self.prelu = nn.PReLU()
        self.mask_projection = nn.Linear(channels, channels * n_src)
        self.output = nn.Linear(channels, channels)
        self.output_gate = nn.Linear(channels, channels)
        self.output_projection = nn.Linear(channels, n_filters, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` ``(batch_size, n_filters, frames)`` → masks ``(batch_size, n_src, n_filters, frames)``."""
        batch_size, n_filters, frames = features.shape
        hidden_states = self.input_projection(self.input_norm(features))  # (batch_size, channels, frames)
        chunks, _ = segment(hidden_states, self.chunk_size)  # (batch_size, n_chunks, chunk_size, channels)
        for block in self.blocks:
            chunks = block(chunks)
        chunks = self.mask_projection(self.prelu(chunks))  # (batch_size, n_chunks, chunk_size, n_src·channels)
        hidden_states = overlap_add(chunks, frames)  # (batch_size, frames, n_src·channels)
        hidden_states = hidden_states.view(batch_size, frames, self.n_src, -1)
        gated = torch.tanh(self.output(hidden_states)) * torch.sigmoid(self.output_gate(hidden_states))
        masks = F.relu(self.output_projection(gated))  # (batch_size, frames, n_src, n_filters)
        return masks.permute(0, 2, 3, 1)


class DualPathPreTrainedModel(SeparationPreTrainedModel):
    """Encoder → :class:`DualPathMasker` → decoder; subclasses build ``self.masker``'s blocks from their config.

    ``forward`` pads the waveform to whole encoder frames (:func:`frame_padding`) and crops the decoded signal, so
    the estimates have exactly as many samples as the input; for ``T`` with ``(T − kernel) % stride == 0`` nothing
    is padded and the output equals the thesis network's sample for sample.
    """

    supports_gradient_checkpointing = True
    _no_split_modules = ["DualPathBlock", "CheckpointedDualPathBlock"]

    def _build_codec(self, config) -> None:
        self.encoder = WaveformEncoder(config.n_filters, config.kernel_size, config.stride)
        self.decoder = WaveformDecoder(config.n_filters, config.kernel_size, config.stride)

    # -- initialisation: what each reference module starts as (transformers' default N(0, 0.02) is wrong here) --
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            # PyTorch's own reset_parameters: kaiming-uniform(a=√5) weight, U(±1/√fan_in) bias
            init.kaiming_uniform_(module.weight, a=5**0.5)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / fan_in**0.5 if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, WaveformDecoder):
            init.kaiming_uniform_(module.weight, a=5**0.5)  # as nn.ConvTranspose1d
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm, ChannelsLastGroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)

    # -- named steps (asteroid's encoder → masker → apply masks → decoder) ------------------------------------
    def forward_encoder(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch_size, padded_time_steps)`` → ``(batch_size, n_filters, frames)``."""
        return self.encoder(waveform)

    def forward_masker(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch_size, n_filters, frames)`` → masks ``(batch_size, n_src, n_filters, frames)``."""
        return self.masker(features)

    def apply_masks(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``features`` ``(batch_size, n_filters, frames)`` ⊙ ``masks`` → ``(batch_size, n_src, n_filters, frames)``."""
        return features.unsqueeze(1) * masks

    def forward_decoder(self, masked: torch.Tensor, time_steps: int) -> torch.Tensor:
        """``(batch_size, n_src, n_filters, frames)`` → ``(batch_size, n_src, time_steps)`` (cropped)."""
        return self.decoder(masked)[..., :time_steps]

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None) -> SeparationOutput:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, time_steps)` or `(batch_size, 1, time_steps)`):
                Mixture waveforms at `config.sampling_rate`, any length ≥ 1 sample.
            labels (`torch.FloatTensor` of shape `(batch_size, n_src, time_steps)`, *optional*):
                Reference sources; when given, `loss` is the permutation-invariant negative SI-SDR.

        Returns:
            [`SeparationOutput`] with `estimates` of shape `(batch_size, n_src, time_steps)`.
        """
        waveform = self._check_input(input_values)
        time_steps = waveform.shape[-1]
        padding = frame_padding(time_steps, self.config.kernel_size, self.config.stride)
        if padding:
            waveform = F.pad(waveform, (0, padding))
        features = self.forward_encoder(waveform)
        masks = self.forward_masker(features)
        estimates = self.forward_decoder(self.apply_masks(features, masks), time_steps)
        return SeparationOutput(loss=self._compute_loss(estimates, labels), estimates=estimates)


# -- thesis checkpoint conversion (shared by convert_dprnn / convert_sepformer) ------------------------------------
# SpeechBrain Dual_Path_Model names below the masker prefix (`separator.` for DPRNN, `masknet.` for SepFormer) →
# ours below `masker.`. Entries ending in "(linear)" are 1×1 convolutions that run here as nn.Linear: their weight
# (out, in, 1[, 1]) is reshaped to (out, in).
DUAL_PATH_HEAD_KEYS = {
    "norm.weight": "input_norm.weight",
    "norm.bias": "input_norm.bias",
    "conv1d.weight": "input_projection.weight",
    "prelu.weight": "prelu.weight",
    "conv2d.weight": "mask_projection.weight (linear)",
    "conv2d.bias": "mask_projection.bias",
    "output.0.weight": "output.weight (linear)",
    "output.0.bias": "output.bias",
    "output_gate.0.weight": "output_gate.weight (linear)",
    "output_gate.0.bias": "output_gate.bias",
    "end_conv1x1.weight": "output_projection.weight (linear)",
}
DUAL_PATH_BLOCK_KEYS = {
    "intra_norm.weight": "intra_norm.weight",
    "intra_norm.bias": "intra_norm.bias",
    "inter_norm.weight": "inter_norm.weight",
    "inter_norm.bias": "inter_norm.bias",
}


def convert_dual_path_state_dict(state_dict: dict, masker_prefix: str, convert_path_key) -> dict:
    """Rename a thesis encoder/masker/decoder state dict to ours.

    ``convert_path_key(name)`` maps a key below ``dual_mdl.<i>.`` that belongs to the intra/inter sequence models
    (e.g. ``intra_mdl.mdl.rnn.weight_ih_l0``) to ours below ``blocks.<i>.`` (or returns ``None`` if it does not know
    it). Keys no rule knows are passed through unchanged, so that the strict load reports them by their original
    name as unexpected.
    """
    converted = {}
    for key, value in state_dict.items():
        new_key = None
        if key in ("encoder.conv1d.weight", "decoder.weight"):
            new_key = key
        elif key.startswith(masker_prefix):
            name = key[len(masker_prefix) :]
            if name in DUAL_PATH_HEAD_KEYS:
                new_key = "masker." + DUAL_PATH_HEAD_KEYS[name]
            elif name.startswith("dual_mdl."):
                _, index, rest = name.split(".", 2)
                target = DUAL_PATH_BLOCK_KEYS.get(rest) or convert_path_key(rest)
                if target is not None and index.isdigit():
                    new_key = f"masker.blocks.{index}.{target}"
        if new_key is None:
            converted[key] = value
            continue
        if new_key.endswith(" (linear)"):
            new_key = new_key[: -len(" (linear)")]
            value = value.reshape(value.shape[0], -1)
        converted[new_key] = value
    return converted
