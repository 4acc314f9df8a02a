"""SPMamba (Li et al. 2024, ``JusperLee/SPMamba``; TF-GridNet with its BLSTMs replaced by bidirectional Mamba), the
PolSESS thesis' best separator, running everywhere: the Mamba scan is pure PyTorch unless mamba-ssm's CUDA kernels
are there to use (see :mod:`.mamba_mixer`).

Layout of the computation (``B`` batch, ``T'`` frames, ``F = n_fft/2 + 1`` bins, ``D = emb_dim``)::

    input_values (B, T) ─ ÷σ ─► STFT ─► (B, 2, T', F) real/imag
        ─► forward_encoder: Conv2d 3×3 (2 → D) + GroupNorm            ─► (B, D, T', F)
        ─► forward_masker: num_blocks × GridNet block                 ─► (B, D, T', F)
             intra path: LN4D → unfold emb_ks bins → BiMamba over frequency → ConvTranspose1d → + input
             inter path: LN4D → unfold emb_ks frames → BiMamba over time → ConvTranspose1d → + input
             full-band self-attention over frames (heads on the batch axis) → Conv1×1 → PReLU → LN4DCF → + input
        ─► forward_decoder: ConvTranspose2d 3×3 (D → 2·n_src) ─► complex spectrum per source ─► iSTFT ─► ×σ
    estimates (B, n_src, T)

The state-dict names are the thesis network's (``conv.{0,1}``, ``blocks.i.…``, ``deconv``; mamba_ssm's names inside
the Mamba blocks), so a thesis checkpoint loads without renaming.

What differs from the thesis code, and why:

* **No CUDA requirement.** The thesis imported mamba_ssm (``Mamba``, ``Block``, the Triton ``RMSNorm``) at import time
  and could not even be constructed without CUDA; here RMSNorm, the causal convolution and the scan are PyTorch.
* **Every length works.** The thesis failed for inputs of ≤ n_fft/2 samples (reflect padding of the centred STFT)
  and for fewer than ``emb_ks`` frames (the unfold); such inputs are now zero-padded (the waveform on the right to
  n_fft/2 + 1 samples, the frames to ``emb_ks``) and the output cropped, so every ``T ≥ 1`` gives exactly ``T``
  samples. Longer inputs take exactly the thesis path.
* **Silent or constant input gives zeros.** σ = std + 1e-8 as in the thesis (no division by zero); the output is
  additionally multiplied by ``std > 0`` so a signal without variance (and a 1-sample input) returns exact zeros.
* **Mixed precision as the thesis' 2026-03-29 fix, made explicit.** Under autocast the STFT/iSTFT, the GroupNorm,
  the 4-D layer norms, RMSNorm, ``A = −exp(A_log)``, ``D``, the Δ bias and the whole scan run in fp32; convolutions,
  projections and attention run in the autocast dtype.
* **Attention** uses ``F.scaled_dot_product_attention`` (same scale ``1/√(E·F)``): on CPU it does not materialise the
  ``T' × T'`` matrix, which matters for long inputs (60 s is 7,501 frames).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init

from ..modeling_separation import SeparationPreTrainedModel
from ..outputs import SeparationOutput
from .configuration_spmamba import SPMambaConfig
from .mamba_mixer import BidirectionalMamba, MambaMixer, MambaRMSNorm, _workspace, for_each_inference_tile

__all__ = [
    "SPMambaPreTrainedModel",
    "SPMambaModel",
    "SPMambaGridNetBlock",
    "SPMambaLayerNorm4D",
    "SPMambaLayerNorm4DCF",
]


class SPMambaLayerNorm4D(nn.Module):
    """Layer norm over the channels of ``(batch_size, channels, frames, freqs)`` at each (frame, bin); γ, β of shape
    ``(1, channels, 1, 1)``, biased variance, eps inside the root. Always fp32 (output float32)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            hidden_states = hidden_states.float()
            variance, mean = torch.var_mean(hidden_states, dim=1, unbiased=False, keepdim=True)
            return (hidden_states - mean) * torch.rsqrt(variance + self.eps) * self.gamma + self.beta

    def normalize_last(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same norm of float32 ``hidden_states`` ``(..., channels)`` with the channels on the LAST axis,
        outside autocast: ``torch.nn.functional.layer_norm`` (one fused pass over contiguous rows)."""
        channels = self.gamma.shape[1]
        return F.layer_norm(hidden_states, (channels,), self.gamma.view(channels), self.beta.view(channels), self.eps)


class SPMambaLayerNorm4DCF(nn.Module):
    """Layer norm over (channels, freqs) of ``(batch_size, channels, frames, freqs)`` at each frame; γ, β of shape
    ``(1, channels, 1, freqs)``. Always fp32 (output float32)."""

    def __init__(self, channels: int, freqs: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, freqs))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, freqs))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            hidden_states = hidden_states.float()
            variance, mean = torch.var_mean(hidden_states, dim=(1, 3), unbiased=False, keepdim=True)
            return (hidden_states - mean) * torch.rsqrt(variance + self.eps) * self.gamma + self.beta


def _projection(in_channels: int, out_channels: int, config: SPMambaConfig) -> nn.Sequential:
    """Conv 1×1 → PReLU (or ReLU) → LN4DCF: the attention's query/key/value and output projections."""
    activation = nn.PReLU() if config.activation == "prelu" else nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1),
        activation,
        SPMambaLayerNorm4DCF(out_channels, config.n_freqs, eps=config.eps),
    )


def _padded_length(length: int, kernel: int, hop: int) -> int:
    """Length covered by whole unfold windows (the thesis' padding), and at least one window."""
    if length <= kernel:
        return kernel
    return math.ceil((length - kernel) / hop) * hop + kernel


class SPMambaGridNetBlock(nn.Module):
    """One GridNet block: intra-frame (frequency) BiMamba, inter-frame (time) BiMamba, full-band frame attention.

    ``(batch_size, emb_dim, frames, freqs)`` → same shape.
    """

    def __init__(self, config: SPMambaConfig):
        super().__init__()
        emb_dim, emb_ks, emb_hs = config.emb_dim, config.emb_ks, config.emb_hs
        mamba_args = dict(
            d_model=config.mamba_d_model,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.mamba_dt_rank,
            norm_eps=config.rms_norm_eps,
            backend=config.mamba_backend,
        )
        self.intra_norm = SPMambaLayerNorm4D(emb_dim, eps=config.eps)
        self.intra_mamba = BidirectionalMamba(**mamba_args)
        self.intra_linear = nn.ConvTranspose1d(2 * config.mamba_d_model, emb_dim, emb_ks, stride=emb_hs)
        self.inter_norm = SPMambaLayerNorm4D(emb_dim, eps=config.eps)
        self.inter_mamba = BidirectionalMamba(**mamba_args)
        self.inter_linear = nn.ConvTranspose1d(2 * config.mamba_d_model, emb_dim, emb_ks, stride=emb_hs)
        qk_channels = config.attn_qk_channels
        for head in range(config.attn_n_head):
            self.add_module(f"attn_conv_Q_{head}", _projection(emb_dim, qk_channels, config))
            self.add_module(f"attn_conv_K_{head}", _projection(emb_dim, qk_channels, config))
            self.add_module(f"attn_conv_V_{head}", _projection(emb_dim, emb_dim // config.attn_n_head, config))
        self.attn_concat_proj = _projection(emb_dim, emb_dim, config)
        self.emb_dim, self.emb_ks, self.emb_hs = emb_dim, emb_ks, emb_hs
        self.n_head = config.attn_n_head

    def _sequence_path(self, hidden: torch.Tensor, norm, mamba, linear) -> torch.Tensor:
        """BiMamba along the last axis of ``hidden`` ``(batch, emb_dim, rows, length)`` (each row is a sequence of
        ``length`` positions), plus the residual. Tokens are windows of ``emb_ks`` positions × ``emb_dim`` channels,
        feature index ``channel·emb_ks + k`` (``F.unfold``'s order), laid out time-major for the Mamba blocks."""
        batch, channels, rows, length = hidden.shape
        if mamba.tiled_inference_supported(hidden):
            return self._sequence_path_tiled(hidden, norm, mamba, linear)
        windows = norm(hidden).unfold(3, self.emb_ks, self.emb_hs)  # (batch, channels, rows, n_windows, emb_ks)
        n_windows = windows.shape[3]
        tokens = windows.permute(3, 0, 2, 1, 4).reshape(n_windows, batch * rows, channels * self.emb_ks)
        features = mamba(tokens)  # (n_windows, batch·rows, 2·channels·emb_ks)
        out = linear(features.permute(1, 2, 0))  # (batch·rows, channels, length)
        return out.view(batch, rows, channels, length).transpose(1, 2) + hidden

    def _sequence_path_tiled(self, hidden: torch.Tensor, norm, mamba, linear) -> torch.Tensor:
        """:meth:`_sequence_path` for inference on the ``"cpu"`` backend: the whole path (norm, windows, BiMamba,
        ConvTranspose1d, residual) runs for a few sequences at a time on the worker threads, so every intermediate
        stays in cache and the element-wise work runs on both cores too (see ``for_each_inference_tile``). Inside a
        tile everything is time-major ``(length, tile, channels)``: the norm is a layer norm over contiguous rows,
        and the transposed convolution is one matrix product (every window's ``emb_ks`` output positions at once)
        plus ``emb_ks`` shifted adds into the residual — as an ``nn.ConvTranspose1d`` call on a permuted input it
        cost ~1 ms of a ~13 ms tile."""
        batch, channels, rows, length = hidden.shape
        sequences = hidden.transpose(1, 2).reshape(batch * rows, channels, length)  # one sequence per row
        out = torch.empty_like(sequences)
        ks, hs = self.emb_ks, self.emb_hs
        n_windows = (length - ks) // hs + 1
        weights = mamba.tile_weights()
        # ConvTranspose1d weight (in, out, k) → (in, out·k): column c·ks + k is output channel c at window offset k
        unfolded_weight = linear.weight.detach().float().reshape(linear.weight.shape[0], channels * ks)
        bias = linear.bias.detach().float()

        def work(part):
            tile = sequences[part]  # (tile, channels, length)
            n = tile.shape[0]
            x = _workspace("path_x", length, n, channels).copy_(tile.permute(2, 0, 1))
            normed = norm.normalize_last(x)
            windows = normed.as_strided((n_windows, n, channels, ks), (hs * n * channels, channels, 1, n * channels))
            tokens = _workspace("path_tokens", n_windows, n, channels * ks)
            tokens.view(n_windows, n, channels, ks).copy_(windows)  # feature c·ks + k: F.unfold's order
            features = _workspace("path_features", n_windows, n, 2 * tokens.shape[-1])
            mamba.infer_tile(tokens, weights, features)
            folded = torch.mm(features.view(n_windows * n, -1), unfolded_weight,
                              out=_workspace("path_folded", n_windows * n, channels * ks))  # fmt: skip
            folded = folded.view(n_windows, n, channels, ks)
            x.add_(bias)  # x is the residual: out = x + bias + Σ_k window w's offset k at position w·hs + k
            for k in range(ks):
                x[k : k + (n_windows - 1) * hs + 1 : hs] += folded[..., k]
            out[part] = x.permute(1, 2, 0)

        for_each_inference_tile(n_windows, batch * rows, work)
        return out.view(batch, rows, channels, length).transpose(1, 2)

    def _attention(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, freqs = hidden.shape
        heads = range(self.n_head)
        query = torch.cat([getattr(self, f"attn_conv_Q_{h}")(hidden) for h in heads], dim=0)  # (H·B, E, T', F)
        key = torch.cat([getattr(self, f"attn_conv_K_{h}")(hidden) for h in heads], dim=0)
        value = torch.cat([getattr(self, f"attn_conv_V_{h}")(hidden) for h in heads], dim=0)  # (H·B, D/H, T', F)
        value_channels = value.shape[1]
        query = query.transpose(1, 2).flatten(start_dim=2)  # (H·B, T', E·F)
        key = key.transpose(1, 2).flatten(start_dim=2)
        value = value.transpose(1, 2).flatten(start_dim=2)  # (H·B, T', (D/H)·F)
        # softmax(QKᵀ/√(E·F))·V, without materialising the (T' × T') matrix on CPU.
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.view(self.n_head * batch, frames, value_channels, freqs).transpose(1, 2)
        # heads were concatenated on the batch axis (head-major); put them back on the channel axis, head-major.
        attended = attended.reshape(self.n_head, batch, value_channels, frames, freqs).transpose(0, 1)
        attended = attended.reshape(batch, self.n_head * value_channels, frames, freqs)
        return self.attn_concat_proj(attended) + hidden

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        _, _, frames, freqs = hidden.shape
        padded_frames = _padded_length(frames, self.emb_ks, self.emb_hs)
        padded_freqs = _padded_length(freqs, self.emb_ks, self.emb_hs)
        if (padded_frames, padded_freqs) != (frames, freqs):
            hidden = F.pad(hidden, (0, padded_freqs - freqs, 0, padded_frames - frames))
        # intra path: sequences over frequency, one per frame — (B, D, T', F) is already "rows = frames".
        hidden = self._sequence_path(hidden, self.intra_norm, self.intra_mamba, self.intra_linear)
        # inter path: sequences over time, one per bin.
        hidden = self._sequence_path(
            hidden.transpose(2, 3), self.inter_norm, self.inter_mamba, self.inter_linear
        ).transpose(2, 3)
        hidden = hidden[..., :frames, :freqs]
        return self._attention(hidden)


class SPMambaPreTrainedModel(SeparationPreTrainedModel):
    config_class = SPMambaConfig
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SPMambaGridNetBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """The thesis network's initialisation: PyTorch defaults for convolutions, linears and GroupNorm (mamba_ssm's
        ``_init_weights`` keeps them: no Linear in a mixer has a bias except ``dt_proj``, and ``out_proj`` is
        re-drawn from the same kaiming-uniform(a=√5) ÷ √n_layer with n_layer = 1), PReLU 0.25, norms γ = 1, β = 0,
        and mamba_ssm's A_log / D / Δ initialisation (:meth:`MambaMixer.reset_mamba_parameters`). Children are
        initialised before their parents, so the mixer's Δ projection ends up with mamba_ssm's values."""
        if isinstance(module, MambaMixer):
            module.reset_mamba_parameters(init_module=init)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.GroupNorm)):
            module.reset_parameters()  # torch.nn.init is guarded by transformers: loaded weights stay untouched
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, MambaRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, (SPMambaLayerNorm4D, SPMambaLayerNorm4DCF)):
            init.ones_(module.gamma)
            init.zeros_(module.beta)


class SPMambaModel(SPMambaPreTrainedModel):
    """SPMamba separator: ``model(input_values, labels=None)`` → :class:`SeparationOutput`.

    ``input_values`` ``(batch_size, time_steps)`` or ``(batch_size, 1, time_steps)``; ``estimates``
    ``(batch_size, n_src, time_steps)`` (float32) for every ``time_steps ≥ 1``; ``loss`` = negative PIT SI-SDR when
    ``labels`` ``(batch_size, n_src, time_steps)`` is given. The scan backend follows ``config.mamba_backend``
    (change it with :meth:`set_mamba_backend`).
    """

    def __init__(self, config: SPMambaConfig):
        super().__init__(config)
        self.conv = nn.Sequential(
            nn.Conv2d(2, config.emb_dim, (3, 3), padding=(1, 1)),
            nn.GroupNorm(1, config.emb_dim, eps=config.eps),
        )
        self.blocks = nn.ModuleList([SPMambaGridNetBlock(config) for _ in range(config.num_blocks)])
        self.deconv = nn.ConvTranspose2d(config.emb_dim, 2 * config.n_src, (3, 3), padding=(1, 1))
        self.gradient_checkpointing = False
        self._applied_backend = config.mamba_backend
        self.post_init()

    def set_mamba_backend(self, backend: str) -> None:
        """Switch every Mamba mixer to ``backend`` (``"auto"``, ``"cpu"``, ``"torch"`` or ``"reference"``); also updates the
        config, so a saved model remembers it."""
        self.config.mamba_backend = backend
        self.config.validate_architecture()
        self._apply_backend()

    def _apply_backend(self) -> None:
        backend = self.config.mamba_backend
        for module in self.modules():
            if isinstance(module, BidirectionalMamba):
                module.set_backend(backend)
        self._applied_backend = backend

    # -- named steps ----------------------------------------------------------------------------------------

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch_size, samples)`` (more than n_fft/2 samples) → ``(batch_size, 2, frames, freqs)`` float32,
        channel 0 real, 1 imaginary; ``frames = 1 + samples // hop_length``."""
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            window = torch.hann_window(self.config.n_fft, device=waveform.device)
            spectrum = torch.stft(
                waveform.float(), self.config.n_fft, hop_length=self.config.hop_length, win_length=self.config.n_fft,
                window=window, center=True, return_complex=True,
            )  # fmt: skip
            return torch.stack([spectrum.real, spectrum.imag], dim=1).transpose(2, 3)

    def istft(self, spectra: torch.Tensor, samples: int) -> torch.Tensor:
        """``(batch_size, n_src, 2, frames, freqs)`` → ``(batch_size, n_src, samples)`` float32."""
        batch, n_src, _, frames, freqs = spectra.shape
        with torch.autocast(device_type=spectra.device.type, enabled=False):
            spectra = spectra.float()  # bf16 complex does not exist
            complex_spectra = torch.complex(spectra[:, :, 0], spectra[:, :, 1]).transpose(-1, -2)
            window = torch.hann_window(self.config.n_fft, device=spectra.device)
            waveforms = torch.istft(
                complex_spectra.reshape(batch * n_src, freqs, frames), self.config.n_fft,
                hop_length=self.config.hop_length, win_length=self.config.n_fft, window=window, center=True,
                length=samples,
            )  # fmt: skip
        return waveforms.view(batch, n_src, samples)

    def forward_encoder(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch_size, 2, frames, freqs)`` → ``(batch_size, emb_dim, frames, freqs)`` (GroupNorm in fp32)."""
        embedded = self.conv[0](features)
        with torch.autocast(device_type=embedded.device.type, enabled=False):
            return self.conv[1](embedded.float())

    def forward_masker(self, hidden: torch.Tensor) -> torch.Tensor:
        """The GridNet blocks: ``(batch_size, emb_dim, frames, freqs)`` → same shape."""
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                checkpoint_func = getattr(self, "_gradient_checkpointing_func", None) or functools.partial(
                    checkpoint, use_reentrant=False
                )
                hidden = checkpoint_func(block.__call__, hidden)
            else:
                hidden = block(hidden)
        return hidden

    def forward_decoder(self, hidden: torch.Tensor, samples: int) -> torch.Tensor:
        """``(batch_size, emb_dim, frames, freqs)`` → ``(batch_size, n_src, samples)`` (complex spectral mapping:
        deconvolution channel ``2·src + {0: real, 1: imag}``, then iSTFT)."""
        batch, _, frames, freqs = hidden.shape
        spectra = self.deconv(hidden).view(batch, self.config.n_src, 2, frames, freqs)
        return self.istft(spectra, samples)

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None) -> SeparationOutput:
        waveform = self._check_input(input_values).float()
        if self._applied_backend != self.config.mamba_backend:
            self._apply_backend()
        time_steps = waveform.shape[-1]
        # Normalise by the standard deviation as the thesis did (a 1-sample input has none: use 0, not NaN).
        std = torch.std(waveform, dim=-1, keepdim=True, correction=1 if time_steps > 1 else 0)
        scale = std + 1e-8
        normalized = waveform / scale
        # The centred STFT reflect-pads n_fft/2 samples, which needs more than that many samples.
        samples = max(time_steps, self.config.n_fft // 2 + 1)
        if samples > time_steps:
            normalized = F.pad(normalized, (0, samples - time_steps))
        hidden = self.forward_encoder(self.stft(normalized))
        hidden = self.forward_masker(hidden)
        estimates = self.forward_decoder(hidden, samples)[..., :time_steps]
        estimates = estimates * (scale * (std > 0)).unsqueeze(1)
        return SeparationOutput(loss=self._compute_loss(estimates, labels), estimates=estimates)
