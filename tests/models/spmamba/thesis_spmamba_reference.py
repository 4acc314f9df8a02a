"""The thesis SPMamba network (``traktorex/polsess_separation`` ``models/spmamba.py``), ported for CPU tests.

The thesis imports mamba_ssm (``modules.mamba_simple.Mamba``, ``modules.block.Block``, the Triton ``RMSNorm``),
which does not import without CUDA. Here those three are replaced by plain PyTorch copies of mamba_ssm 2.x's
non-fused code path (``nn.Conv1d`` causal convolution, ``selective_scan_ref`` in its original
``(batch, channels, length)`` layout); everything else is the thesis code, kept as literal as possible
(``F.unfold``, explicit attention matrix, per-source iSTFT). It is an independent implementation of the same
network, used to check that :class:`SPMambaModel` reproduces it and that thesis checkpoints convert.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ThesisSPMamba", "thesis_checkpoint"]


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm.ops.selective_scan_interface.selective_scan_ref (real A, B/C of shape (batch, N, L))."""
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    B, C = B.float(), C.float()
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out.to(dtype=dtype_in)


class Mamba(nn.Module):
    """mamba_ssm.modules.mamba_simple.Mamba, non-fused path (causal_conv1d absent)."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, bias=True, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + d_state * 2, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden_states):
        batch, seqlen, dim = hidden_states.shape
        xz = (self.in_proj.weight @ hidden_states.reshape(batch * seqlen, dim).t()).reshape(-1, batch, seqlen).permute(1, 0, 2)
        A = -torch.exp(self.A_log.float())
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x)[..., :seqlen])
        x_dbl = self.x_proj(x.permute(0, 2, 1).reshape(batch * seqlen, -1))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(-1, batch, seqlen).permute(1, 0, 2)
        B = B.reshape(batch, seqlen, -1).permute(0, 2, 1).contiguous()
        C = C.reshape(batch, seqlen, -1).permute(0, 2, 1).contiguous()
        y = selective_scan_ref(x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.permute(0, 2, 1))


class RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """mamba_ssm.modules.block.Block with fused_add_norm=False and mlp_cls=nn.Identity (no MLP)."""

    def __init__(self, dim, d_state=16, d_conv=4, expand=4):
        super().__init__()
        self.norm = RMSNorm(dim, eps=1e-5)
        self.mixer = Mamba(dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, hidden_states, residual=None):
        residual = (hidden_states + residual) if residual is not None else hidden_states
        hidden_states = self.norm(residual.to(dtype=self.norm.weight.dtype))
        return self.mixer(hidden_states), residual


class MambaBlock(nn.Module):
    def __init__(self, in_channels, n_layer=1, bidirectional=False):
        super().__init__()
        self.forward_blocks = nn.ModuleList([Block(in_channels) for _ in range(n_layer)])
        self.backward_blocks = nn.ModuleList([Block(in_channels) for _ in range(n_layer)]) if bidirectional else None

    def forward(self, input):
        for_residual = None
        forward_f = input.clone()
        for block in self.forward_blocks:
            forward_f, for_residual = block(forward_f, for_residual)
        residual = (forward_f + for_residual) if for_residual is not None else forward_f
        if self.backward_blocks is not None:
            back_residual = None
            backward_f = torch.flip(input, [1])
            for block in self.backward_blocks:
                backward_f, back_residual = block(backward_f, back_residual)
            back_residual = (backward_f + back_residual) if back_residual is not None else backward_f
            back_residual = torch.flip(back_residual, [1])
            residual = torch.cat([residual, back_residual], -1)
        return residual


class LayerNormalization4D(nn.Module):
    def __init__(self, input_dimension, eps=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, input_dimension, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, input_dimension, 1, 1))
        self.eps = eps

    def forward(self, x):
        mu_ = x.mean(dim=1, keepdim=True)
        std_ = torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + self.eps)
        return ((x - mu_) / std_) * self.gamma + self.beta


class LayerNormalization4DCF(nn.Module):
    def __init__(self, input_dimension, eps=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, input_dimension[0], 1, input_dimension[1]))
        self.beta = nn.Parameter(torch.zeros(1, input_dimension[0], 1, input_dimension[1]))
        self.eps = eps

    def forward(self, x):
        mu_ = x.mean(dim=(1, 3), keepdim=True)
        std_ = torch.sqrt(x.var(dim=(1, 3), unbiased=False, keepdim=True) + self.eps)
        return ((x - mu_) / std_) * self.gamma + self.beta


class GridNetBlock(nn.Module):
    def __init__(self, emb_dim, emb_ks, emb_hs, n_freqs, hidden_channels, n_head=4, approx_qk_dim=512, activation="prelu", eps=1e-5):
        super().__init__()
        in_channels = emb_dim * emb_ks
        self.intra_norm = LayerNormalization4D(emb_dim, eps=eps)
        self.intra_mamba = MambaBlock(in_channels, 1, bidirectional=True)
        self.intra_linear = nn.ConvTranspose1d(in_channels * 2, emb_dim, emb_ks, stride=emb_hs)
        self.inter_norm = LayerNormalization4D(emb_dim, eps=eps)
        self.inter_mamba = MambaBlock(in_channels, 1, bidirectional=True)
        self.inter_linear = nn.ConvTranspose1d(in_channels * 2, emb_dim, emb_ks, stride=emb_hs)
        E = math.ceil(approx_qk_dim * 1.0 / n_freqs)
        for ii in range(n_head):
            for name, out in (("Q", E), ("K", E), ("V", emb_dim // n_head)):
                self.add_module(
                    f"attn_conv_{name}_{ii}",
                    nn.Sequential(nn.Conv2d(emb_dim, out, 1), nn.PReLU() if activation == "prelu" else nn.ReLU(),
                                  LayerNormalization4DCF((out, n_freqs), eps=eps)),
                )  # fmt: skip
        self.add_module(
            "attn_concat_proj",
            nn.Sequential(nn.Conv2d(emb_dim, emb_dim, 1), nn.PReLU() if activation == "prelu" else nn.ReLU(),
                          LayerNormalization4DCF((emb_dim, n_freqs), eps=eps)),
        )  # fmt: skip
        self.emb_dim, self.emb_ks, self.emb_hs, self.n_head = emb_dim, emb_ks, emb_hs, n_head

    def forward(self, x):
        B, C, old_T, old_Q = x.shape
        T = math.ceil((old_T - self.emb_ks) / self.emb_hs) * self.emb_hs + self.emb_ks
        Q = math.ceil((old_Q - self.emb_ks) / self.emb_hs) * self.emb_hs + self.emb_ks
        x = F.pad(x, (0, Q - old_Q, 0, T - old_T))
        input_ = x
        intra_rnn = self.intra_norm(input_)
        intra_rnn = intra_rnn.transpose(1, 2).contiguous().view(B * T, C, Q)
        intra_rnn = F.unfold(intra_rnn[..., None], (self.emb_ks, 1), stride=(self.emb_hs, 1))
        intra_rnn = intra_rnn.transpose(1, 2)
        intra_rnn = self.intra_mamba(intra_rnn)
        intra_rnn = intra_rnn.transpose(1, 2)
        intra_rnn = self.intra_linear(intra_rnn)
        intra_rnn = intra_rnn.view([B, T, C, Q]).transpose(1, 2).contiguous()
        intra_rnn = intra_rnn + input_
        input_ = intra_rnn
        inter_rnn = self.inter_norm(input_)
        inter_rnn = inter_rnn.permute(0, 3, 1, 2).contiguous().view(B * Q, C, T)
        inter_rnn = F.unfold(inter_rnn[..., None], (self.emb_ks, 1), stride=(self.emb_hs, 1))
        inter_rnn = inter_rnn.transpose(1, 2)
        inter_rnn = self.inter_mamba(inter_rnn)
        inter_rnn = inter_rnn.transpose(1, 2)
        inter_rnn = self.inter_linear(inter_rnn)
        inter_rnn = inter_rnn.view([B, Q, C, T]).permute(0, 2, 3, 1).contiguous()
        inter_rnn = inter_rnn + input_
        inter_rnn = inter_rnn[..., :old_T, :old_Q]
        batch = inter_rnn
        all_Q, all_K, all_V = [], [], []
        for ii in range(self.n_head):
            all_Q.append(getattr(self, f"attn_conv_Q_{ii}")(batch))
            all_K.append(getattr(self, f"attn_conv_K_{ii}")(batch))
            all_V.append(getattr(self, f"attn_conv_V_{ii}")(batch))
        Q = torch.cat(all_Q, dim=0).transpose(1, 2).flatten(start_dim=2)
        K = torch.cat(all_K, dim=0).transpose(1, 2).flatten(start_dim=2)
        V = torch.cat(all_V, dim=0).transpose(1, 2)
        old_shape = V.shape
        V = V.flatten(start_dim=2)
        emb_dim = Q.shape[-1]
        attn_mat = F.softmax(torch.matmul(Q, K.transpose(1, 2)) / (emb_dim**0.5), dim=2)
        V = torch.matmul(attn_mat, V).reshape(old_shape).transpose(1, 2)
        emb_dim = V.shape[1]
        batch = V.view([self.n_head, B, emb_dim, old_T, -1]).transpose(0, 1)
        batch = batch.contiguous().view([B, self.n_head * emb_dim, old_T, -1])
        batch = self.attn_concat_proj(batch)
        return batch + inter_rnn


class ThesisSPMamba(nn.Module):
    def __init__(self, input_dim=64, n_srcs=1, n_fft=256, stride=64, window="hann", n_layers=6, lstm_hidden_units=256,
                 attn_n_head=4, attn_approx_qk_dim=512, emb_dim=16, emb_ks=4, emb_hs=1, activation="prelu", eps=1.0e-5):  # fmt: skip
        super().__init__()
        self.n_srcs, self.n_fft, self.stride = n_srcs, n_fft, stride
        n_freqs = n_fft // 2 + 1
        ks, padding = (3, 3), (1, 1)
        self.conv = nn.Sequential(nn.Conv2d(2, emb_dim, ks, padding=padding), nn.GroupNorm(1, emb_dim, eps=eps))
        self.blocks = nn.ModuleList(
            [GridNetBlock(emb_dim, emb_ks, emb_hs, n_freqs, lstm_hidden_units, n_head=attn_n_head,
                          approx_qk_dim=attn_approx_qk_dim, activation=activation, eps=eps) for _ in range(n_layers)]
        )  # fmt: skip
        self.deconv = nn.ConvTranspose2d(emb_dim, n_srcs * 2, ks, padding=padding)

    def forward(self, mixture):
        if mixture.dim() == 3:
            mixture = mixture.squeeze(1)
        n_samples = mixture.shape[1]
        mix_std = torch.std(mixture, dim=1, keepdim=True) + 1e-8
        mixture = mixture / mix_std
        window = torch.hann_window(self.n_fft, device=mixture.device)
        spectrum = torch.stft(mixture.float(), n_fft=self.n_fft, hop_length=self.stride, win_length=self.n_fft,
                              window=window, return_complex=True, center=True)  # fmt: skip
        batch = torch.stack([spectrum.real, spectrum.imag], dim=1).transpose(2, 3)
        n_batch, _, n_frames, n_freqs = batch.shape
        batch = self.conv(batch)
        for block in self.blocks:
            batch = block(batch)
        batch = self.deconv(batch).view([n_batch, self.n_srcs, 2, n_frames, n_freqs]).float()
        estimates = []
        for src in range(self.n_srcs):
            src_spec = torch.complex(batch[:, src, 0], batch[:, src, 1]).transpose(1, 2)
            estimates.append(torch.istft(src_spec, n_fft=self.n_fft, hop_length=self.stride, win_length=self.n_fft,
                                         window=window, center=True, length=n_samples).unsqueeze(1))  # fmt: skip
        estimates = torch.cat(estimates, dim=1) * mix_std.unsqueeze(1)
        return estimates.squeeze(1) if self.n_srcs == 1 else estimates


def thesis_checkpoint(model: ThesisSPMamba, kwargs: dict, task: str) -> dict:
    """A thesis training checkpoint around ``model`` (the structure ``trainer.py`` saves)."""
    return {
        "epoch": 3,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "val_sisdr": 5.56,
        "config": {"data": {"task": task}, "model": {"model_type": "spmamba", "spmamba": dict(kwargs)}},
    }
