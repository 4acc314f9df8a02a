"""Conv-TasNet (Luo & Mesgarani 2019), numerically identical to the PolSESS thesis network (SpeechBrain lobes).

Layout of the computation (asteroid's named steps):

``input_values (batch_size, time_steps)`` → :meth:`ConvTasNetModel.forward_encoder` → ``(batch_size, n_filters,
frames)`` → :meth:`~ConvTasNetModel.forward_masker` → masks ``(batch_size, n_src, n_filters, frames)`` →
:meth:`~ConvTasNetModel.apply_masks` → :meth:`~ConvTasNetModel.forward_decoder` → ``(batch_size, n_src,
time_steps)``.

What differs from the thesis code, and why:

* **Exact length.** The waveform is zero-padded to whole frames (:func:`frame_padding`) and the output is cropped
  back, so every ``T ≥ 1`` gives exactly ``T`` samples. When ``(T − 16)`` is a multiple of 8 (1 s and 4 s clips
  at 8 kHz) nothing is padded and the output equals the thesis network's.
* **Reflect padding for short inputs.** SpeechBrain pads every depthwise convolution with ``F.pad(mode="reflect")``
  by ``dilation·(P − 1)/2`` frames, which fails when that is ≥ the number of frames (T < 1040 samples with the
  thesis sizes). Here the padded frames are taken from the *periodic* mirror extension of the sequence (mirror
  about the first and last frame, repeated with period ``2·(frames − 1)``; a single frame is repeated), see
  :func:`reflect_index`. Whenever ``F.pad(mode="reflect")`` is valid the two are identical, so outputs for valid
  lengths do not change.
* **Speed and memory.** The temporal blocks work channels-last, ``(batch_size, frames, channels)``: the 1×1
  convolutions are then single GEMMs with the frames as rows (measured ~20 % faster than channels-first GEMMs on
  MKL CPUs, and the weight gradient is one GEMM over batch·frames) and the depthwise convolution is three shifted
  multiply-adds over contiguous rows. Each block runs as one autograd function (:class:`_FusedTemporalBlock`)
  that folds each gLN's per-utterance statistics and affine parameters into the adjacent linear operation (the
  depthwise taps, the output GEMM's per-utterance weights), so no normalised tensor is ever materialised, and
  keeps only the block input and the two pre-PReLU tensors for backward (SpeechBrain's autograd graph keeps
  about ten hidden-size tensors per block). With ``gradient_checkpointing_enable()`` only the block input is
  kept and the rest is recomputed in backward. Under autocast the big tensors are in the autocast dtype and the
  norm statistics in float32. ``model.masker.use_fused_blocks = False`` runs the same math as ordinary autograd
  ops (:func:`temporal_block_reference`), the readable reference the fused function is tested against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init

from ..filterbanks import WaveformDecoder, WaveformEncoder, frame_padding
from ..modeling_separation import SeparationPreTrainedModel
from ..outputs import SeparationOutput
from .configuration_convtasnet import ConvTasNetConfig

__all__ = ["ConvTasNetPreTrainedModel", "ConvTasNetModel", "reflect_index", "temporal_block_reference"]


# ------------------------------------------------------------------------------------------------------------
# Reflect padding that is defined for every length
# ------------------------------------------------------------------------------------------------------------


def reflect_index(positions: torch.Tensor, length: int) -> torch.Tensor:
    """Map frame positions (any integers) into ``[0, length)`` by mirror reflection about the first and the last
    frame, repeated with period ``2·(length − 1)`` (a single frame maps everything to 0).

    For ``−length < p < 2·length − 1`` this is exactly the index ``F.pad(mode="reflect")`` reads, so padding with
    it equals reflect padding whenever reflect padding is valid (pad < length) and extends it sensibly otherwise.
    """
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    positions = positions.remainder(period)
    return torch.where(positions < length, positions, period - positions)


@dataclass(frozen=True)
class _TapPlan:
    """Where depthwise tap ``k`` (offset ``offset`` frames) reads for each output frame ``t``.

    Output frames ``start ≤ t < stop`` read frame ``t + offset`` directly (one slice); the few remaining frames
    ``edge_frames`` read the reflected frames ``edge_sources``.
    """

    offset: int
    start: int
    stop: int
    edge_frames: torch.Tensor | None
    edge_sources: torch.Tensor | None


@functools.lru_cache(maxsize=512)
def _tap_plans(length: int, kernel_size: int, dilation: int, device: torch.device) -> tuple[_TapPlan, ...]:
    half = (kernel_size - 1) // 2
    frames = torch.arange(length)
    plans = []
    for tap in range(kernel_size):
        offset = (tap - half) * dilation
        start, stop = max(0, -offset), min(length, length - offset)
        if stop <= start:  # the tap lies entirely outside the sequence: every frame reads a reflection
            start = stop = 0
        inside = (frames >= start) & (frames < stop)
        edge_frames = frames[~inside]
        if edge_frames.numel():
            edge_sources = reflect_index(edge_frames + offset, length)
            plans.append(_TapPlan(offset, start, stop, edge_frames.to(device), edge_sources.to(device)))
        else:
            plans.append(_TapPlan(offset, start, stop, None, None))
    return tuple(plans)


def _depthwise_forward(hidden: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, plans) -> torch.Tensor:
    """Dilated depthwise convolution with reflect("same") padding, channels-last.

    ``hidden`` ``(batch_size, frames, channels)``; ``taps`` ``(batch_size, kernel_size, channels)`` and ``bias``
    ``(batch_size, channels)`` are per-utterance (the gLN before the convolution is folded into them).
    """
    center = len(plans) // 2
    output = torch.addcmul(bias.unsqueeze(1), hidden, taps[:, center : center + 1])
    for tap, plan in enumerate(plans):
        if tap == center:
            continue
        weight = taps[:, tap : tap + 1]
        if plan.stop > plan.start:
            output[:, plan.start : plan.stop].addcmul_(
                hidden[:, plan.start + plan.offset : plan.stop + plan.offset], weight
            )
        if plan.edge_frames is not None:
            output.index_add_(1, plan.edge_frames, hidden.index_select(1, plan.edge_sources) * weight)
    return output


def _depthwise_backward(grad: torch.Tensor, hidden: torch.Tensor, taps: torch.Tensor, plans):
    """Gradients of :func:`_depthwise_forward` w.r.t. ``hidden``, ``taps`` and ``bias``."""
    center = len(plans) // 2
    grad_hidden = grad * taps[:, center : center + 1]
    grad_taps = []
    for tap, plan in enumerate(plans):
        if tap == center:
            grad_taps.append(torch.linalg.vecdot(grad, hidden, dim=1))
            continue
        weight = taps[:, tap : tap + 1]
        grad_tap = torch.zeros_like(taps[:, tap])
        if plan.stop > plan.start:
            source = slice(plan.start + plan.offset, plan.stop + plan.offset)
            grad_slice = grad[:, plan.start : plan.stop]
            grad_hidden[:, source].addcmul_(grad_slice, weight)
            grad_tap += torch.linalg.vecdot(grad_slice, hidden[:, source], dim=1)
        if plan.edge_frames is not None:
            grad_edges = grad.index_select(1, plan.edge_frames)
            grad_hidden.index_add_(1, plan.edge_sources, grad_edges * weight)
            grad_tap += torch.linalg.vecdot(grad_edges, hidden.index_select(1, plan.edge_sources), dim=1)
        grad_taps.append(grad_tap)
    return grad_hidden, torch.stack(grad_taps, dim=1), grad.sum(dim=1)


# ------------------------------------------------------------------------------------------------------------
# gLN folded into the neighbouring linear operations
# ------------------------------------------------------------------------------------------------------------


def _statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norm statistics are never computed in fp16/bf16 (sums over 10⁶ values); float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _global_statistics(hidden: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance mean and 1/√(var + eps) over (frames, channels), in ≥ float32; each ``(batch_size,)``.

    Sum and sum of squares (two cascade-summed reductions) instead of ``torch.var_mean``: as accurate here (the
    mean is about the size of the standard deviation after a PReLU) and ~4× faster on CPU.
    """
    count = hidden[0].numel()
    hidden = hidden.to(_statistics_dtype(hidden.dtype))
    mean = hidden.sum(dim=(1, 2)) / count
    mean_square = (hidden * hidden).sum(dim=(1, 2)) / count
    variance = (mean_square - mean * mean).clamp_min(0.0)
    return mean, torch.rsqrt(variance + eps)


def _depthwise_coefficients(depthwise_weight, norm_weight, norm_bias, mean, rstd):
    """Taps ``(batch_size, P, channels)`` and bias ``(batch_size, channels)`` of ``depthwise(gLN(a))`` as an
    affine function of ``a``: gLN is ``scale·a + shift`` per utterance and channel, and reflect padding repeats a
    constant, so ``depthwise(scale·a + shift) = Σ_k (w_k·scale)·a[t + o_k] + shift·Σ_k w_k``."""
    scale = norm_weight.unsqueeze(0) * rstd.unsqueeze(1)  # [batch, channels]
    shift = norm_bias.unsqueeze(0) - scale * mean.unsqueeze(1)
    weight = depthwise_weight.squeeze(1)  # [channels, P]
    taps = weight.t().unsqueeze(0) * scale.unsqueeze(1)  # [batch, P, channels]
    return taps, shift * weight.sum(dim=1).unsqueeze(0)


def _output_coefficients(out_weight, norm_weight, norm_bias, mean, rstd):
    """Per-utterance weight ``(batch_size, channels, out)`` and bias ``(batch_size, out)`` of
    ``gLN(a) @ out_weightᵀ`` as an affine function of ``a``."""
    scale = norm_weight.unsqueeze(0) * rstd.unsqueeze(1)  # [batch, channels]
    shift = norm_bias.unsqueeze(0) - scale * mean.unsqueeze(1)
    weight = out_weight.t().unsqueeze(0) * scale.unsqueeze(2)  # [batch, channels, out]
    # Not `shift @ out_weightᵀ`: a BLAS mat-vec rounds differently depending on the weight's memory alignment
    # (weights loaded from safetensors are not 64-byte aligned), which made reloaded models differ in the last bit.
    bias = (shift.unsqueeze(2) * out_weight.t().unsqueeze(0)).sum(dim=1)  # [batch, out]
    return weight, bias


def _statistics_backward(grad_mean, grad_rstd, mean, rstd, count):
    """``(slope, offset)``, each ``(batch_size,)``: the gradient reaching ``a`` through its own statistics is
    ``offset + slope·a`` (∂mean/∂a = 1/n, ∂rstd/∂a = −rstd³·(a − mean)/n)."""
    slope = -grad_rstd * rstd.pow(3) / count
    return slope, grad_mean / count - slope * mean


@dataclass(frozen=True)
class _BlockLayout:
    """Static description of one temporal block for :class:`_FusedTemporalBlock`.

    The running ``state`` is ``(batch_size, frames, state_channels)``: the residual path in columns
    ``[0, bottleneck_channels)`` and, with a skip path, the running skip sum after it. The block reads the residual
    columns and adds its output convolution to columns ``[out_start, state_channels)``.
    """

    dilation: int
    kernel_size: int
    eps: float
    bottleneck_channels: int
    out_start: int
    recompute: bool


def _prelu_backward(grad, inputs, weight):
    grad_inputs, grad_weight = torch.ops.aten._prelu_kernel_backward(grad, inputs, weight)
    return grad_inputs, grad_weight.sum().reshape(weight.shape)


class _FusedTemporalBlock(torch.autograd.Function):
    """One temporal block ``state + out_conv(gLN(PReLU(depthwise(gLN(PReLU(in_conv(x)))))))`` with a hand-written
    backward. Saves ``state``, the two pre-PReLU tensors (or only ``state`` when ``layout.recompute``) and the four
    per-utterance statistics; everything else is recomputed."""

    @staticmethod
    def forward(ctx, state, in_weight, in_alpha, in_norm_weight, in_norm_bias, depthwise_weight, out_alpha,
                out_norm_weight, out_norm_bias, out_weight, layout: _BlockLayout):  # fmt: skip
        # Big tensors are computed in the dtype of `state` (the autocast dtype under autocast, see
        # ConvTasNetTemporalBlock.forward); statistics and per-utterance coefficients in ≥ float32.
        dtype = state.dtype
        frames = state.shape[1]
        plans = _tap_plans(frames, layout.kernel_size, layout.dilation, state.device)
        inputs = state[..., : layout.bottleneck_channels]
        with torch.autocast(state.device.type, enabled=False):
            pre_depthwise = F.linear(inputs, in_weight.to(dtype))  # [batch, frames, hidden]
            activated = F.prelu(pre_depthwise, in_alpha.to(dtype))
            mean_in, rstd_in = _global_statistics(activated, layout.eps)
            taps, bias = _depthwise_coefficients(depthwise_weight, in_norm_weight, in_norm_bias, mean_in, rstd_in)
            pre_out = _depthwise_forward(activated, taps.to(dtype), bias.to(dtype), plans)
            del activated
            activated = F.prelu(pre_out, out_alpha.to(dtype))
            mean_out, rstd_out = _global_statistics(activated, layout.eps)
            weight, bias = _output_coefficients(out_weight, out_norm_weight, out_norm_bias, mean_out, rstd_out)
            output = state.clone()
            target = output[..., layout.out_start :]
            target += bias.to(dtype).unsqueeze(1)
            target.baddbmm_(activated, weight.to(dtype))
        saved = (state,) if layout.recompute else (state, pre_depthwise, pre_out)
        ctx.save_for_backward(
            *saved, in_weight, in_alpha, in_norm_weight, in_norm_bias, depthwise_weight, out_alpha,
            out_norm_weight, out_norm_bias, out_weight, mean_in, rstd_in, mean_out, rstd_out,
        )  # fmt: skip
        ctx.layout = layout
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        with torch.autocast(grad_output.device.type, enabled=False):
            return _FusedTemporalBlock._backward(ctx, grad_output)

    @staticmethod
    def _backward(ctx, grad_output):
        layout: _BlockLayout = ctx.layout
        saved = ctx.saved_tensors
        if layout.recompute:
            (state,), parameters = saved[:1], saved[1:]
        else:
            (state, pre_depthwise, pre_out), parameters = saved[:3], saved[3:]
        (in_weight, in_alpha, in_norm_weight, in_norm_bias, depthwise_weight, out_alpha, out_norm_weight,
         out_norm_bias, out_weight, mean_in, rstd_in, mean_out, rstd_out) = parameters  # fmt: skip
        dtype = state.dtype
        frames = state.shape[1]
        count = frames * in_weight.shape[0]
        plans = _tap_plans(frames, layout.kernel_size, layout.dilation, state.device)
        inputs = state[..., : layout.bottleneck_channels]
        grad_output = grad_output.contiguous()

        # The per-utterance coefficients are tiny; their gradients come from autograd on a small graph.
        with torch.enable_grad():
            small_in = [t.detach().requires_grad_() for t in (depthwise_weight, in_norm_weight, in_norm_bias, mean_in, rstd_in)]
            taps, bias_in = _depthwise_coefficients(*small_in)
            small_out = [t.detach().requires_grad_() for t in (out_weight, out_norm_weight, out_norm_bias, mean_out, rstd_out)]
            weight_out, bias_out = _output_coefficients(*small_out)
        taps_data = taps.detach().to(dtype)
        in_weight_c, in_alpha_c, out_alpha_c = (t.to(dtype) for t in (in_weight, in_alpha, out_alpha))

        if layout.recompute:
            pre_depthwise = F.linear(inputs, in_weight_c)
            activated = F.prelu(pre_depthwise, in_alpha_c)
            pre_out = _depthwise_forward(activated, taps_data, bias_in.detach().to(dtype), plans)
            del activated

        # Output convolution (with the second gLN folded in): out += a2 @ W_b + c_b.
        grad_target = grad_output[..., layout.out_start :]
        activated = F.prelu(pre_out, out_alpha_c)
        grad_weight_out = torch.bmm(activated.transpose(1, 2), grad_target)  # [batch, hidden, out]
        grad_bias_out = grad_target.sum(dim=1)
        grad_small_out = torch.autograd.grad((weight_out, bias_out), small_out, (grad_weight_out.to(mean_out.dtype), grad_bias_out.to(mean_out.dtype)))
        slope, offset = _statistics_backward(grad_small_out[3], grad_small_out[4], mean_out, rstd_out, count)
        grad_activated = torch.addcmul(offset.to(dtype)[:, None, None], activated, slope.to(dtype)[:, None, None])
        grad_activated.baddbmm_(grad_target, weight_out.detach().to(dtype).transpose(1, 2))
        del activated, grad_weight_out
        grad_pre_out, grad_out_alpha = _prelu_backward(grad_activated, pre_out, out_alpha_c)
        del grad_activated, pre_out

        # Depthwise convolution (with the first gLN folded into its taps).
        activated = F.prelu(pre_depthwise, in_alpha_c)
        grad_activated, grad_taps, grad_bias_in = _depthwise_backward(grad_pre_out, activated, taps_data, plans)
        del grad_pre_out
        grad_small_in = torch.autograd.grad((taps, bias_in), small_in, (grad_taps.to(mean_in.dtype), grad_bias_in.to(mean_in.dtype)))
        slope, offset = _statistics_backward(grad_small_in[3], grad_small_in[4], mean_in, rstd_in, count)
        grad_activated.addcmul_(activated, slope.to(dtype)[:, None, None]).add_(offset.to(dtype)[:, None, None])
        del activated
        grad_pre_depthwise, grad_in_alpha = _prelu_backward(grad_activated, pre_depthwise, in_alpha_c)
        del grad_activated, pre_depthwise

        # Input convolution and the residual connection.
        hidden = in_weight.shape[0]
        grad_in_weight = grad_pre_depthwise.reshape(-1, hidden).t() @ inputs.reshape(-1, inputs.shape[-1])
        grad_state = grad_output.clone()
        grad_state[..., : layout.bottleneck_channels] += grad_pre_depthwise @ in_weight_c

        # Parameter gradients in the parameters' own dtype (float32 under autocast).
        grads = (grad_in_weight, grad_in_alpha, grad_small_in[1], grad_small_in[2], grad_small_in[0], grad_out_alpha,
                 grad_small_out[1], grad_small_out[2], grad_small_out[0])  # fmt: skip
        parameters = (in_weight, in_alpha, in_norm_weight, in_norm_bias, depthwise_weight, out_alpha, out_norm_weight,
                      out_norm_bias, out_weight)  # fmt: skip
        return (grad_state, *(g.to(p.dtype) for g, p in zip(grads, parameters)), None)


# ------------------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------------------


class ConvTasNetChannelLayerNorm(nn.Module):
    """Channel-wise layer norm (cLN) of ``(batch_size, frames, channels)`` over the channels of each frame:
    ``weight·(y − mean)/√(var + eps) + bias`` with the biased variance (SpeechBrain ``ChannelwiseLayerNorm``)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(hidden_states, (hidden_states.shape[-1],), self.weight, self.bias, self.eps)


class ConvTasNetGlobalLayerNorm(nn.Module):
    """Global layer norm (gLN) of ``(batch_size, frames, channels)``: mean and biased variance over frames and
    channels of each utterance, then a per-channel affine (SpeechBrain ``GlobalLayerNorm``).

    This module is the reference form (``use_fused_blocks=False``); the fused block folds the same math into its
    neighbours. The statistics are computed in float32 even under fp16/bf16 autocast.
    """

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states.to(_statistics_dtype(hidden_states.dtype))
        mean = hidden.mean(dim=(1, 2), keepdim=True)
        variance = (hidden - mean).square().mean(dim=(1, 2), keepdim=True)
        normalized = (hidden - mean) * torch.rsqrt(variance + self.eps)
        return (normalized * self.weight + self.bias).to(hidden_states.dtype)


class ConvTasNetTemporalBlock(nn.Module):
    """One TCN block: 1×1 conv B→H, PReLU, gLN, depthwise conv (kernel P, dilation d, reflect "same" padding),
    PReLU, gLN, 1×1 conv H→B (residual) and/or H→Sc (skip).

    Works channels-last: the 1×1 convolutions are stored as ``nn.Linear`` weights ``(out, in)``; the depthwise
    convolution keeps ``nn.Conv1d``'s ``(H, 1, P)`` weight but is computed by :func:`_depthwise_forward`
    (reflect padding extended to every length, see :func:`reflect_index`).

    Input/output ``state``: ``(batch_size, frames, B [+ Sc])`` — the residual stream followed by the running skip
    sum when the network has a skip path.
    """

    def __init__(self, config: ConvTasNetConfig, dilation: int, has_residual: bool = True):
        super().__init__()
        bottleneck, hidden, skip = config.bottleneck_channels, config.hidden_channels, config.skip_channels
        self.dilation = dilation
        self.kernel_size = config.conv_kernel_size
        self.eps = config.norm_eps
        self.bottleneck_channels = bottleneck
        self.in_conv = nn.Linear(bottleneck, hidden, bias=False)
        self.in_act = nn.PReLU()
        self.in_norm = ConvTasNetGlobalLayerNorm(hidden, config.norm_eps)
        self.depthwise_conv = nn.Conv1d(
            hidden, hidden, config.conv_kernel_size, dilation=dilation, groups=hidden, bias=False
        )
        self.out_act = nn.PReLU()
        self.out_norm = ConvTasNetGlobalLayerNorm(hidden, config.norm_eps)
        self.res_conv = nn.Linear(hidden, bottleneck, bias=False) if has_residual else None
        self.skip_conv = nn.Linear(hidden, skip, bias=False) if skip > 0 else None
        # Columns of the state the output convolution adds to: [residual | skip] or only the skip sum.
        self.out_start = 0 if has_residual else bottleneck

    def _out_weight(self) -> torch.Tensor:
        weights = [conv.weight for conv in (self.res_conv, self.skip_conv) if conv is not None]
        return weights[0] if len(weights) == 1 else torch.cat(weights, dim=0)

    def forward(self, state: torch.Tensor, fused: bool = True, recompute: bool = False) -> torch.Tensor:
        if not fused:
            return temporal_block_reference(self, state)
        if torch.is_autocast_enabled(state.device.type):
            # The residual stream runs in the autocast dtype, as the thesis network's convolutions produced it.
            state = state.to(torch.get_autocast_dtype(state.device.type))
        layout = _BlockLayout(
            self.dilation, self.kernel_size, self.eps, self.bottleneck_channels, self.out_start, recompute
        )
        return _FusedTemporalBlock.apply(
            state, self.in_conv.weight, self.in_act.weight, self.in_norm.weight, self.in_norm.bias,
            self.depthwise_conv.weight, self.out_act.weight, self.out_norm.weight, self.out_norm.bias,
            self._out_weight(), layout,
        )  # fmt: skip


def temporal_block_reference(block: ConvTasNetTemporalBlock, state: torch.Tensor) -> torch.Tensor:
    """The block with ordinary autograd ops, written the way the thesis network computes it (the reference the
    fused function is tested against). ``state`` ``(batch_size, frames, channels)``."""
    frames = state.shape[1]
    hidden = F.linear(state[..., : block.bottleneck_channels], block.in_conv.weight)
    hidden = block.in_norm(F.prelu(hidden, block.in_act.weight))
    pad = block.dilation * (block.kernel_size - 1) // 2
    positions = torch.arange(-pad, frames + pad, device=state.device)
    padded = hidden.index_select(1, reflect_index(positions, frames))  # [batch, frames + 2·pad, hidden]
    weight = block.depthwise_conv.weight.squeeze(1).t()  # [P, hidden]
    hidden = sum(
        padded[:, tap * block.dilation : tap * block.dilation + frames] * weight[tap] for tap in range(block.kernel_size)
    )
    hidden = block.out_norm(F.prelu(hidden, block.out_act.weight))
    update = F.linear(hidden, block._out_weight())
    return state + F.pad(update, (block.out_start, 0))


class ConvTasNetMasker(nn.Module):
    """Mask estimator (temporal convolutional network) of Conv-TasNet.

    cLN over the encoder filters, 1×1 bottleneck conv N→B, ``n_repeats × n_blocks`` temporal blocks with dilations
    1, 2, …, 2^(n_blocks−1), then a 1×1 conv to ``n_src·N`` mask scores (speaker-major channel index
    ``c·N + n``) and the mask activation. With a skip path the mask convolution reads PReLU(Σ skip outputs);
    without one (thesis) it reads the last block's output directly, with no activation in between.
    """

    def __init__(self, config: ConvTasNetConfig):
        super().__init__()
        self.n_src = config.n_src
        self.n_filters = config.n_filters
        self.skip_channels = config.skip_channels
        self.bottleneck_channels = config.bottleneck_channels
        self.mask_activation = config.mask_activation
        self.input_norm = ConvTasNetChannelLayerNorm(config.n_filters, config.norm_eps)
        self.bottleneck = nn.Linear(config.n_filters, config.bottleneck_channels, bias=False)
        n_layers = config.n_repeats * config.n_blocks
        self.blocks = nn.ModuleList(
            ConvTasNetTemporalBlock(
                config, dilation=2 ** (index % config.n_blocks), has_residual=config.skip_channels == 0 or index < n_layers - 1
            )
            for index in range(n_layers)
        )
        self.skip_act = nn.PReLU() if config.skip_channels > 0 else None
        mask_in = config.skip_channels if config.skip_channels > 0 else config.bottleneck_channels
        self.mask_conv = nn.Linear(mask_in, config.n_src * config.n_filters, bias=False)
        # Runtime switches (not configuration): False runs the autograd reference blocks (same results, slower).
        self.use_fused_blocks = True
        self.gradient_checkpointing = False

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        """``encoded`` ``(batch_size, n_filters, frames)`` → masks ``(batch_size, n_src, n_filters, frames)``."""
        batch_size, _, frames = encoded.shape
        state = self.bottleneck(self.input_norm(encoded.transpose(1, 2)))  # [batch, frames, B]
        if self.skip_channels:
            state = F.pad(state, (0, self.skip_channels))  # the running skip sum starts at zero
        fused = self.use_fused_blocks
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute and not fused:
                checkpoint_func = getattr(self, "_gradient_checkpointing_func", None) or functools.partial(
                    checkpoint, use_reentrant=False
                )
                state = checkpoint_func(block, state, False)
            else:
                state = block(state, fused=fused, recompute=recompute)
        if self.skip_channels:
            features = self.skip_act(state[..., self.bottleneck_channels :])
        else:
            features = state
        scores = torch.matmul(self.mask_conv.weight, features.transpose(1, 2))  # [batch, n_src·N, frames]
        masks = torch.relu_(scores) if self.mask_activation == "relu" else torch.sigmoid_(scores)
        return masks.view(batch_size, self.n_src, self.n_filters, frames)


# ------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------


class ConvTasNetPreTrainedModel(SeparationPreTrainedModel):
    config_class = ConvTasNetConfig
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConvTasNetTemporalBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's own defaults, as the thesis network started from: kaiming-uniform(a=√5) for every convolution
        (U(±1/√fan_in); the 1×1 convolutions are Linear weights with the same fan-in), PReLU slopes 0.25,
        norms γ=1, β=0. (transformers' generic N(0, 0.02) would start a different network.)"""
        if isinstance(module, (nn.Linear, nn.Conv1d, WaveformDecoder)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, (ConvTasNetGlobalLayerNorm, ConvTasNetChannelLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class ConvTasNetModel(ConvTasNetPreTrainedModel):
    """Conv-TasNet separator: ``model(input_values, labels=None)`` → :class:`SeparationOutput`.

    ``input_values`` ``(batch_size, time_steps)`` or ``(batch_size, 1, time_steps)``; ``estimates``
    ``(batch_size, n_src, time_steps)`` for every ``time_steps ≥ 1``; ``loss`` = negative PIT SI-SDR when
    ``labels`` ``(batch_size, n_src, time_steps)`` is given.
    """

    def __init__(self, config: ConvTasNetConfig):
        super().__init__(config)
        self.encoder = WaveformEncoder(config.n_filters, config.kernel_size, config.stride)
        self.masker = ConvTasNetMasker(config)
        self.decoder = WaveformDecoder(config.n_filters, config.kernel_size, config.stride)
        self.post_init()

    def forward_encoder(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch_size, padded_time_steps)`` → ``(batch_size, n_filters, frames)`` (non-negative)."""
        return self.encoder(waveform)

    def forward_masker(self, encoded: torch.Tensor) -> torch.Tensor:
        """``(batch_size, n_filters, frames)`` → masks ``(batch_size, n_src, n_filters, frames)``."""
        return self.masker(encoded)

    def apply_masks(self, encoded: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Masked representations ``(batch_size, n_src, n_filters, frames)``."""
        return masks * encoded.unsqueeze(1)

    def forward_decoder(self, masked: torch.Tensor) -> torch.Tensor:
        """``(batch_size, n_src, n_filters, frames)`` → ``(batch_size, n_src, (frames − 1)·stride + kernel_size)``."""
        return self.decoder(masked)

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None) -> SeparationOutput:
        waveform = self._check_input(input_values)
        time_steps = waveform.shape[-1]
        padding = frame_padding(time_steps, self.config.kernel_size, self.config.stride)
        if padding:
            waveform = F.pad(waveform, (0, padding))
        encoded = self.forward_encoder(waveform)
        masks = self.forward_masker(encoded)
        estimates = self.forward_decoder(self.apply_masks(encoded, masks))[..., :time_steps]
        return SeparationOutput(loss=self._compute_loss(estimates, labels), estimates=estimates)


__all__ += ["ConvTasNetMasker", "ConvTasNetTemporalBlock", "ConvTasNetGlobalLayerNorm", "ConvTasNetChannelLayerNorm"]
