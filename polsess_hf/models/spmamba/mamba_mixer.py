"""Mamba (mamba_ssm 2.x ``modules.mamba_simple.Mamba``) in pure PyTorch, with three selective-scan backends.

The parameters have mamba_ssm's names and shapes (``in_proj.weight``, ``conv1d.{weight,bias}``, ``x_proj.weight``,
``dt_proj.{weight,bias}``, ``A_log``, ``D``, ``out_proj.weight``), so one checkpoint runs on every backend and the
thesis checkpoints (built on mamba_ssm) load unchanged.

The selective scan, per channel ``d`` and state ``n`` (Δ = softplus(δ + b_dt), A = −exp(A_log))::

    s_t = exp(Δ_t·A) ⊙ s_{t−1} + Δ_t·u_t·B_t        (s_0 = 0)
    y_t = ⟨s_t, C_t⟩ + D·u_t,   out_t = y_t·SiLU(z_t)

Backends (``mamba_backend``):

* ``"reference"`` — :func:`selective_scan_reference`: mamba_ssm's own executable specification
  (``selective_scan_ref``): ``exp(Δ·A)`` and ``Δ·u·B`` are built for the whole sequence as
  ``(batch, d_inner, seq_len, d_state)`` tensors, then a loop runs over time (autograd through the loop keeps every
  state). Slow and memory-hungry (for 60 s of audio one such tensor is 15.5 GB); it is what the other backends are
  tested against.
* ``"torch"`` — :func:`selective_scan_chunked`: the batch of sequences is cut into tiles and time into chunks of
  ``chunk_size`` steps, so no ``(batch, seq_len, d_inner, d_state)`` tensor is ever materialised, and every
  operation works on one chunk of one tile at once:

  - *in parallel over time* (the chunked "SSD" form): with chunk-local cumulative decays ``c_t = A·Σ_{τ≤t} Δ_τ``,
    ``s_t = e^{c_t}·(s_0 + Σ_{τ≤t} e^{−c_τ}·Δ_τ u_τ B_τ)``, the inner sum being one matrix product with a
    lower-triangular matrix of ones. (Mamba-2's ``ssd_minimal`` builds the masked segment-sum matrix
    ``exp(c_t − c_τ)`` instead, which for Mamba-1's per-(channel, state) decays would be ``chunk_size`` times more
    exponentials.) The exponents are centred on the middle of the chunk's decay, and a chunk takes this form only
    when its total decay ``max |A|·ΣΔ`` is at most ``_PARALLEL_MAX_DECAY``, so neither factor can overflow and
    their rounding stays below 1e-6;
  - otherwise *step by step*: one fused multiply-add per step on the chunk's decays ``exp(Δ_t·A)``, exact for any
    Δ (a state that forgets within a chunk, very large Δ, simply gets decays of 0).

  The default is the parallel form on CUDA and step by step on CPU, where it is faster (the scan is memory-bound
  there). On CPU the batch tiles run on ``torch.get_num_threads()`` worker threads with intra-op threading off
  during the scan: per-operation OpenMP barriers made the scan's many small operations up to 30× slower on
  shared cores (measurements at ``_CPU_MAX_TILE_ELEMENTS``).

  A custom autograd function keeps only the inputs and the state entering each chunk, and computes the gradients
  chunk by chunk in reverse (adjoint ``h_t = C_t ⊗ ḡ_t + e^{Δ_{t+1}A}·h_{t+1}``, in the same two forms), so
  training memory is O(seq_len·d_inner), not O(seq_len·d_inner·d_state). State, decays and gradients are fp32.
* ``"cpu"`` — the same chunked algorithm (inputs and chunk-entry states saved, states recomputed per chunk in the
  backward pass) as compiled C loops per batch tile (:mod:`.native`, ``csrc/selective_scan_cpu.c``), vectorised
  over blocks of 8 channels with a polynomial exp2; softplus, the D skip and the SiLU gate are computed in the same
  loop. Built on first use with the system C compiler; fp32; CPU only; ``d_inner`` a multiple of 8. In
  :class:`MambaMixer` the causal convolution + SiLU runs in a second kernel, and both read the projections' outputs
  in place — as PyTorch operations those ~15 passes over the ``d_inner``-wide tensors cost more than the scan.
  Without autograd (inference), :class:`BidirectionalMamba` — and the SPMamba blocks around it — run tile by tile:
  a few whole sequences (~``_INFERENCE_TILE_TOKENS`` tokens) go through norm, projections, both kernels and both
  directions on one worker thread, with every intermediate in a per-thread workspace that stays in cache
  (:func:`for_each_inference_tile`); as whole-batch operations the same work streamed tens of MB per operation
  through memory (4 s of reduced-model inference: 6.7–7.8 s whole-batch vs 4.7–5.2 s tiled, 2 cores). In a tile
  the backward direction runs the convolution and scan kernels backwards in time (no flipped copies), and the
  rank-``dt_rank`` Δ projection is computed inside the scan kernel.
* ``"auto"`` — on CUDA, mamba_ssm's ``selective_scan_fn`` when ``mamba_ssm`` imports (imported lazily, on first
  use on CUDA, never at package import; any failure falls back to ``"torch"`` with one warning); on CPU, ``"cpu"``
  when the kernel builds (else ``"torch"`` with one warning).

Everything here works *time-major*: sequences are ``(seq_len, batch_size, channels)``. Every time step of a batch
tile is then one contiguous block, which the chunked scan reads and writes in place (no transposed copies of the
``d_inner``-wide tensors), and the causal convolution is K shifted multiply-adds over contiguous blocks. Only the
mamba_ssm kernel gets its ``(batch_size, channels, seq_len)`` layout.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .native import block_width as native_block_width
from .native import conv_silu_backward as native_conv_silu_backward
from .native import conv_silu_forward as native_conv_silu_forward
from .native import kernel_status as native_kernel_status
from .native import load_kernel as load_native_kernel
from .native import mixer_scan_backward as native_mixer_scan_backward
from .native import mixer_scan_forward as native_mixer_scan_forward
from .native import rows_stride as native_rows_stride

__all__ = [
    "MambaRMSNorm",
    "MambaMixer",
    "MambaResidualBlock",
    "BidirectionalMamba",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_chunked",
    "load_mamba_ssm_selective_scan",
    "resolve_backend",
    "for_each_inference_tile",
]

_LOG2_E = math.log2(math.e)


# ------------------------------------------------------------------------------------------------------------
# Reference scan: the executable specification
# ------------------------------------------------------------------------------------------------------------


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The selective scan one time step at a time: mamba_ssm's own executable specification,
    ``selective_scan_ref`` (fp32; ``exp(Δ·A)`` and ``Δ·u·B`` are built for the whole sequence, then a loop runs
    over time).

    Args:
        u, delta, z: ``(seq_len, batch_size, d_inner)``; ``delta`` is before ``delta_bias`` and the softplus.
        A: ``(d_inner, d_state)`` (negative).
        B, C: ``(seq_len, batch_size, d_state)``.
        D, delta_bias: ``(d_inner,)``.

    Returns:
        ``(seq_len, batch_size, d_inner)`` float32.
    """
    with torch.autocast(device_type=u.device.type, enabled=False):
        u = u.float().permute(1, 2, 0)  # mamba_ssm's (batch, d_inner, seq_len)
        delta = delta.float().permute(1, 2, 0)
        if delta_bias is not None:
            delta = delta + delta_bias[..., None].float()
        delta = F.softplus(delta)
        A = A.float()
        B = B.float().permute(1, 2, 0)  # (batch, d_state, seq_len)
        C = C.float().permute(1, 2, 0)
        state = A.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
        delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
        delta_B_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
        outputs = []
        # unbind instead of indexing [:, :, t]: same values, but autograd then stacks the per-step gradients once
        # instead of writing each into a zero tensor of the full (batch, d_inner, seq_len, d_state) size.
        for decay, increment, c in zip(delta_A.unbind(2), delta_B_u.unbind(2), C.unbind(2)):
            state = decay * state + increment
            outputs.append(torch.einsum("bdn,bn->bd", state, c))
        y = torch.stack(outputs, dim=2)
        if D is not None:
            y = y + u * D.float()[:, None]
        if z is not None:
            y = y * F.silu(z.float().permute(1, 2, 0))
        return y.permute(2, 0, 1)


# ------------------------------------------------------------------------------------------------------------
# Chunked scan (the "torch" backend)
# ------------------------------------------------------------------------------------------------------------

# A chunk goes through the parallel form only if max_{d,n} |A|·ΣΔ over the chunk is at most this (natural-log
# units). The factors e^{±(c − c_mid)} then stay within e^{±12}: no overflow for any finite input, and the rounding
# of the exponents (≈ |c − c_mid|·2⁻²⁴ relative) stays below 1e-6. A chunk whose state forgets faster than that
# goes step by step, which is exact for any Δ (a decay that underflows to 0 is a correct 0).
_PARALLEL_MAX_DECAY = 24.0
# CPU plan. Measured on the shared 2-core AMD EPYC (load 5–6 from other jobs) at the reduced model's 4 s shapes,
# d_inner 256, d_state 16, Δ as at init:
# * the step-by-step form beats the parallel form there (130 sequences × 126 steps, one thread: 0.27 s stepwise vs
#   1.06 s parallel with 32-step chunks, 0.49 s with 8-step chunks): the scan is memory-bound and the parallel form
#   streams every chunk's (n, tile, d_state, d_inner) terms through several passes and a GEMM;
# * intra-op threads are ruinous for the scan's many small operations: every operation ends in an OpenMP barrier,
#   which waits for a descheduled partner thread whenever the cores are shared (130 × 126: 5.1 s with 2 threads vs
#   0.16 s single-threaded operations on 2 worker threads, one batch tile each). So on CPU the batch tiles are
#   spread over ``torch.get_num_threads()`` Python worker threads (the operations release the GIL) and every
#   operation inside the scan runs single-threaded;
# * tiles of 64–128 sequences per thread (0.70 s for 501 × 126 with 128, 0.99 s with 32, 1.23 s with 256).
_CPU_MAX_TILE_ELEMENTS = 128 * 4096  # state elements per step of one tile

_SCAN_MODES = ("parallel", "stepwise", "native")
# Tokens per tile of the "cpu" backend's inference path (for_each_inference_tile). Measured on 2 cores, 4 s of audio
# through the reduced model (the SPMamba blocks tile their whole sequence paths): 9.4 s as whole-batch operations vs
# ~6 s in tiles of 512–1,536 tokens (flat within the machine's noise), 6.3 s with 4,096.
_INFERENCE_TILE_TOKENS = 1024


@dataclass(frozen=True)
class _ScanPlan:
    chunk_size: int  # steps per chunk (the backward pass restarts from the state entering each chunk)
    batch_tile: int  # sequences processed together
    mode: str  # "parallel" or "stepwise"
    workers: int = 1  # threads running tiles concurrently (CPU)
    single_threaded_ops: bool = False  # intra-op threads off during the scan (CPU)


def _scan_plan(seq_len, batch_size, d_inner, d_state, device, chunk_size, batch_tile, mode) -> _ScanPlan:
    on_cuda = device.type == "cuda"
    if mode is None:
        mode = "parallel" if on_cuda else "stepwise"
    if mode not in _SCAN_MODES:
        raise ValueError(f"`mode` must be one of {list(_SCAN_MODES)}, got mode={mode!r}")
    if mode == "native":
        if on_cuda:
            raise ValueError("mode='native' is the compiled CPU scan; the tensors are on CUDA")
        # one tile per thread; the backward pass recomputes each chunk's states in a small buffer
        threads = torch.get_num_threads()
        if batch_tile is None:
            batch_tile = math.ceil(batch_size / threads)
        batch_tile = max(1, min(batch_tile, batch_size))
        n_tiles = math.ceil(batch_size / batch_tile)
        chunk_size = 64 if chunk_size is None else chunk_size
        return _ScanPlan(max(1, min(chunk_size, seq_len)), batch_tile, mode, max(1, min(threads, n_tiles)), True)
    if chunk_size is None:
        chunk_size = 64 if on_cuda else 32
    threads = 1 if on_cuda else torch.get_num_threads()
    if batch_tile is None:
        if on_cuda:
            batch_tile = batch_size
        else:  # at least one tile per thread, none larger than _CPU_MAX_TILE_ELEMENTS
            batch_tile = min(math.ceil(batch_size / threads), max(1, _CPU_MAX_TILE_ELEMENTS // (d_inner * d_state)))
    batch_tile = max(1, min(batch_tile, batch_size))
    # equal tiles (129 sequences in tiles of ≤ 128 → 65 + 64, not 128 + 1): a 1-sequence tile costs a full set of
    # operations for almost no work.
    n_tiles = math.ceil(batch_size / batch_tile)
    workers = max(1, min(threads, n_tiles))
    return _ScanPlan(max(1, min(chunk_size, seq_len)), math.ceil(batch_size / n_tiles), mode, workers, not on_cuda)


_EXECUTOR: ThreadPoolExecutor | None = None


def _for_each_tile(plan: _ScanPlan, batch_size: int, work) -> None:
    """Run ``work(rows)`` for every batch tile, without autograd. On CPU with several threads the tiles run on a
    pool of worker threads and the intra-op thread count is 1 meanwhile (restored afterwards; see the CPU plan
    notes above). ``work`` must only write disjoint rows of shared outputs."""

    # Grad and inference mode are per thread: worker threads start with grad on and inference mode off, and
    # in-place writes into inference tensors (``separate()`` runs under torch.inference_mode) need the latter on.
    inference = torch.is_inference_mode_enabled()

    def run(rows):
        with torch.inference_mode(inference), torch.no_grad():
            work(rows)

    tiles = _tile_slices(batch_size, plan.batch_tile)
    threads = torch.get_num_threads()
    if not plan.single_threaded_ops or threads <= 1:
        for rows in tiles:
            run(rows)
        return
    global _EXECUTOR
    torch.set_num_threads(1)
    try:
        if plan.workers <= 1:
            for rows in tiles:
                run(rows)
        else:
            if _EXECUTOR is None or _EXECUTOR._max_workers < plan.workers:
                _EXECUTOR = ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="selective-scan")
            for future in [_EXECUTOR.submit(run, rows) for rows in tiles]:
                future.result()
    finally:
        torch.set_num_threads(threads)


def for_each_inference_tile(seq_len: int, batch_size: int, work) -> None:
    """Run ``work(rows)`` for tiles of whole sequences of about ``_INFERENCE_TILE_TOKENS`` tokens, on the scan's
    worker threads with one intra-op thread each (see :func:`_for_each_tile`)."""
    tile = max(1, min(batch_size, _INFERENCE_TILE_TOKENS // max(1, seq_len)))
    n_tiles = math.ceil(batch_size / tile)
    plan = _ScanPlan(64, tile, "native", max(1, min(torch.get_num_threads(), n_tiles)), True)
    _for_each_tile(plan, batch_size, work)


def _is_parallel(plan: _ScanPlan, dt_chunk: torch.Tensor, a_max: torch.Tensor) -> bool:
    """Whether a chunk (``dt_chunk`` ``(n, tile, d_inner)``) runs in the parallel form."""
    if plan.mode == "stepwise" or dt_chunk.shape[0] == 1:
        return False
    return bool((dt_chunk.sum(dim=0) * a_max).amax() <= _PARALLEL_MAX_DECAY)


def _forward_steps(dt, v, B, C, rows, steps: range, A2, state, y, states_out=None, decays_out=None) -> torch.Tensor:
    """Advance ``state`` ``(tile, d_state, d_inner)`` over ``steps`` one step at a time, writing ``y[t, rows]`` if
    ``y`` is given and every state/decay if ``states_out``/``decays_out`` ``(n, tile, d_state, d_inner)`` are. Returns
    the last state (``state`` itself may be reused as a buffer when ``states_out`` is None)."""
    # Broadcast-ready views of the tile, made once: a step then indexes them (one cheap op each).
    dt_rows, v_rows = dt[:, rows].unsqueeze(2), v[:, rows].unsqueeze(2)  # (seq_len, tile, 1, d_inner)
    B_rows, C_rows = B[:, rows].unsqueeze(-1), C[:, rows].unsqueeze(2)  # (seq_len, tile, d_state, 1), (…, 1, d_state)
    y_rows = None if y is None else y[:, rows].unsqueeze(2)  # (seq_len, tile, 1, d_inner)
    decay = torch.empty_like(state) if decays_out is None else None
    spare = torch.empty_like(state) if states_out is None else None
    for index, t in enumerate(steps):
        step_decay = decay if decays_out is None else decays_out[index]
        torch.mul(dt_rows[t], A2, out=step_decay).exp2_()  # exp2(Δ·A·log2 e) = exp(Δ·A), and exp2 is cheaper
        new_state = spare if states_out is None else states_out[index]
        torch.mul(step_decay, state, out=new_state)
        new_state.addcmul_(B_rows[t], v_rows[t])  # + B_t ⊗ Δ_t·u_t
        if y_rows is not None:
            torch.matmul(C_rows[t], new_state, out=y_rows[t])  # y_t = Σ_n C_t[n]·s_t[n, :]
        if states_out is None:
            spare, state = state, new_state
        else:
            state = new_state
    return state


def _triangular(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(n, n, dtype=like.dtype, device=like.device).tril_()


def _parallel_terms(dt, v, B, rows, steps: slice, A2, state):
    """The parallel form's ingredients for one chunk (``n`` steps):

    * ``factors`` ``E_t = exp(A·(Λ_t − Λ_n/2))`` ``(n, tile, d_state, d_inner)``, ``Λ_t = Σ_{τ≤t} Δ_τ`` in the chunk;
    * ``inv_initial`` ``1/E_0 = exp(A·Λ_n/2)`` ``(tile, d_state, d_inner)`` (``E_0`` is the factor before step 1);
    * ``running`` ``Q_t = s_0/E_0 + Σ_{τ≤t} B_τ ⊗ Δ_τ u_τ / E_τ``, so that ``s_t = E_t·Q_t``.
    """
    cumulative = dt[steps, rows].cumsum(dim=0)
    half = cumulative[-1] * 0.5
    factors = torch.mul((cumulative - half).unsqueeze(2), A2).exp2_()
    inv_initial = torch.mul(half.unsqueeze(1), A2).exp2_()
    terms = torch.mul(B[steps, rows].unsqueeze(-1), v[steps, rows].unsqueeze(2)).div_(factors)
    terms[0].addcmul_(state, inv_initial)
    n = terms.shape[0]
    # Σ_{τ≤t} over time: one (n × n) lower-triangular GEMM (cumsum along a leading axis is ~10× slower on CPU).
    running = torch.matmul(_triangular(n, terms), terms.view(n, -1)).view_as(terms)
    return running, factors, inv_initial


def _forward_parallel(dt, v, B, C, rows, steps: slice, A2, state, y) -> torch.Tensor:
    running, factors, _ = _parallel_terms(dt, v, B, rows, steps, A2, state)
    states = running.mul_(factors)
    if y is not None:
        y[steps, rows] = torch.matmul(C[steps, rows].unsqueeze(2), states).squeeze(2)
    return states[-1].clone()


def _backward_steps(dt, v, B, C, rows, steps: range, A2, At, state, grad_y, carry, grads) -> torch.Tensor:
    """Reverse-time adjoint over one chunk, step by step. ``carry`` ``(tile, d_state, d_inner)`` is ∂L/∂s at the
    chunk's last step coming from later steps; it is overwritten with ∂L/∂s entering the chunk and returned.
    ``grads`` = (dt, v, B, C, A-accumulator) gradient buffers, time-major like the inputs."""
    grad_dt, grad_v, grad_B, grad_C, grad_A = grads
    n = len(steps)
    states = state.new_empty((n, *state.shape))
    decays = torch.empty_like(states)
    _forward_steps(dt, v, B, C, rows, steps, A2, state, None, states_out=states, decays_out=decays)
    dt_rows, v_rows = dt[:, rows].unsqueeze(2), v[:, rows].unsqueeze(-1)  # (…, 1, d_inner), (…, d_inner, 1)
    B_rows, C_rows = B[:, rows].unsqueeze(2), C[:, rows].unsqueeze(-1)  # (…, 1, d_state), (…, d_state, 1)
    gy_rows, gy_column = grad_y[:, rows].unsqueeze(2), grad_y[:, rows].unsqueeze(-1)
    grad_C_rows, grad_B_rows = grad_C[:, rows].unsqueeze(-1), grad_B[:, rows].unsqueeze(-1)
    grad_v_rows, grad_dt_rows = grad_v[:, rows].unsqueeze(2), grad_dt[:, rows]
    adjoint = torch.empty_like(state)
    grad_decay = torch.empty_like(state)
    for index in reversed(range(n)):
        t = steps[index]
        torch.addcmul(carry, C_rows[t], gy_rows[t], out=adjoint)  # h_t = C_t ⊗ ḡ_t + ∂L/∂s_t from later steps
        torch.matmul(states[index], gy_column[t], out=grad_C_rows[t])  # Σ_d ḡ_t·s_t
        torch.matmul(B_rows[t], adjoint, out=grad_v_rows[t])  # Σ_n h_t·B_t
        torch.matmul(adjoint, v_rows[t], out=grad_B_rows[t])  # Σ_d h_t·v_t
        torch.mul(decays[index], adjoint, out=carry)  # ∂L/∂s_{t−1} = e^{a_t}·h_t
        previous = states[index - 1] if index > 0 else state
        torch.mul(carry, previous, out=grad_decay)  # ∂L/∂a_t = h_t·e^{a_t}·s_{t−1}, a_t = Δ_t·A
        grad_A.addcmul_(grad_decay, dt_rows[t])
        torch.sum(grad_decay.mul_(At), dim=1, out=grad_dt_rows[t])
    return carry


def _backward_parallel(dt, v, B, C, rows, steps: slice, A2, At, state, grad_y, carry, grads) -> torch.Tensor:
    """Reverse-time adjoint over one chunk in the parallel form (see :func:`_parallel_terms`): with
    ``H_t = h_t·E_t = Σ_{τ≥t} E_τ·(C_τ ⊗ ḡ_τ) + E_n·carry`` (an upper-triangular GEMM),
    ``∂L/∂a_t = H_t·Q_{t−1}`` and ``∂L/∂s_0 = H_1/E_0`` — no further exponentials."""
    grad_dt, grad_v, grad_B, grad_C, grad_A = grads
    running, factors, inv_initial = _parallel_terms(dt, v, B, rows, steps, A2, state)
    states = running * factors
    n = factors.shape[0]
    gy = grad_y[steps, rows]
    scaled = torch.mul(C[steps, rows].unsqueeze(-1), gy.unsqueeze(2)).mul_(factors)
    scaled[-1].addcmul_(carry, factors[-1])
    scaled_adjoint = torch.matmul(_triangular(n, scaled).t(), scaled.view(n, -1)).view_as(scaled)
    adjoint = scaled_adjoint / factors
    carry.copy_(scaled_adjoint[0] * inv_initial)
    grad_decay = scaled_adjoint
    grad_decay[1:].mul_(running[:-1])
    grad_decay[0].mul_(state * inv_initial)
    grad_C[steps, rows] = torch.matmul(states, gy.unsqueeze(-1)).squeeze(-1)
    grad_v[steps, rows] = torch.matmul(B[steps, rows].unsqueeze(2), adjoint).squeeze(2)
    grad_B[steps, rows] = torch.matmul(adjoint, v[steps, rows].unsqueeze(-1)).squeeze(-1)
    grad_A.add_((grad_decay * dt[steps, rows].unsqueeze(2)).sum(dim=0))
    grad_dt[steps, rows] = grad_decay.mul_(At).sum(dim=2)
    return carry


def _chunk_slices(seq_len: int, chunk_size: int) -> list[slice]:
    return [slice(start, min(start + chunk_size, seq_len)) for start in range(0, seq_len, chunk_size)]


def _tile_slices(batch_size: int, batch_tile: int) -> list[slice]:
    return [slice(start, min(start + batch_tile, batch_size)) for start in range(0, batch_size, batch_tile)]


def _scan_forward(dt, v, A, B, C, plan: _ScanPlan, keep_chunk_states: bool):
    """Run the chunked scan on ``dt`` (Δ after softplus), ``v`` (Δ·u) ``(seq_len, batch, d_inner)``, A
    ``(d_inner, d_state)``, B, C ``(seq_len, batch, d_state)``, all contiguous. Returns ``y`` ``(seq_len, batch,
    d_inner)`` and, if asked, the state entering every chunk ``(batch, n_chunks, d_state, d_inner)``."""
    seq_len, batch_size, d_inner = dt.shape
    d_state = A.shape[1]
    A2 = (A.t() * _LOG2_E).contiguous()  # (d_state, d_inner), for exp2
    a_max = A.abs().amax(dim=1)
    chunks = _chunk_slices(seq_len, plan.chunk_size)
    y = dt.new_empty(seq_len, batch_size, d_inner)
    chunk_states = dt.new_empty(batch_size, len(chunks), d_state, d_inner) if keep_chunk_states else None

    def scan_tile(rows):
        state = dt.new_zeros(rows.stop - rows.start, d_state, d_inner)
        for index, steps in enumerate(chunks):
            if keep_chunk_states:
                chunk_states[rows, index] = state
            if _is_parallel(plan, dt[steps, rows], a_max):
                state = _forward_parallel(dt, v, B, C, rows, steps, A2, state, y)
            else:
                state = _forward_steps(dt, v, B, C, rows, range(steps.start, steps.stop), A2, state, y)

    _for_each_tile(plan, batch_size, scan_tile)
    return y, chunk_states


class _ChunkedSelectiveScan(torch.autograd.Function):
    """``y = scan(dt, v, A, B, C)`` without D, gate or softplus (those stay ordinary autograd ops).

    dt (Δ after softplus), v (= Δ·u): ``(seq_len, batch, d_inner)``; A ``(d_inner, d_state)``; B, C
    ``(seq_len, batch, d_state)``; all float32 and contiguous. Saves the inputs and the chunk-entry states only.
    """

    @staticmethod
    def forward(ctx, dt, v, A, B, C, plan):
        y, chunk_states = _scan_forward(dt, v, A, B, C, plan, keep_chunk_states=True)
        ctx.save_for_backward(dt, v, A, B, C, chunk_states)
        ctx.plan = plan
        return y

    @staticmethod
    def backward(ctx, grad_y):
        dt, v, A, B, C, chunk_states = ctx.saved_tensors
        plan = ctx.plan
        seq_len, batch_size, d_inner = dt.shape
        d_state = A.shape[1]
        A2 = (A.t() * _LOG2_E).contiguous()
        At = A.t().contiguous()
        a_max = A.abs().amax(dim=1)
        chunks = _chunk_slices(seq_len, plan.chunk_size)
        grad_y = grad_y.float().contiguous()
        grad_dt, grad_v = torch.empty_like(dt), torch.empty_like(v)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        tile_grads_A = {}  # first row → Σ_t ∂L/∂a_t·Δ_t over the tile's sequences

        def backward_tile(rows):
            tile_grad_A = dt.new_zeros(rows.stop - rows.start, d_state, d_inner)  # per sequence
            grads = (grad_dt, grad_v, grad_B, grad_C, tile_grad_A)
            carry = dt.new_zeros(rows.stop - rows.start, d_state, d_inner)
            for index in reversed(range(len(chunks))):
                steps = chunks[index]
                state = chunk_states[rows, index]
                if _is_parallel(plan, dt[steps, rows], a_max):
                    carry = _backward_parallel(dt, v, B, C, rows, steps, A2, At, state, grad_y, carry, grads)
                else:
                    steps_range = range(steps.start, steps.stop)
                    carry = _backward_steps(dt, v, B, C, rows, steps_range, A2, At, state, grad_y, carry, grads)
            tile_grads_A[rows.start] = tile_grad_A.sum(dim=0)

        _for_each_tile(plan, batch_size, backward_tile)
        grad_A = _sum_tiles(tile_grads_A)
        return grad_dt, grad_v, grad_A.t(), grad_B, grad_C, None


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    batch_tile: int | None = None,
    mode: str | None = None,
) -> torch.Tensor:
    """The selective scan in chunks (the ``"torch"`` backend); same arguments and result as
    :func:`selective_scan_reference` (time-major).

    Args:
        chunk_size: time steps per chunk (default 32 on CPU, 64 on CUDA).
        batch_tile: sequences processed together (default on CPU: the batch split over ``torch.get_num_threads()``
            worker threads, at most 128 sequences per tile at d_inner·d_state = 4096; on CUDA: all).
        mode: ``"parallel"`` (each chunk in the parallel form when its decay allows it, else step by step),
            ``"stepwise"`` (every chunk step by step) or ``"native"`` (the compiled CPU kernel of
            :mod:`.native`, one batch tile per thread; what ``mamba_backend="cpu"`` runs); default ``"stepwise"``
            on CPU (the fastest pure-PyTorch form there, see ``_CPU_MAX_TILE_ELEMENTS``), ``"parallel"`` on CUDA.
    """
    seq_len, batch_size, d_inner = u.shape
    plan = _scan_plan(seq_len, batch_size, d_inner, A.shape[1], u.device, chunk_size, batch_tile, mode)
    if plan.mode == "native":  # the compiled kernel does softplus, D and the gate itself
        return _FusedMixerScan.apply(u, delta, delta_bias, A, B, C, D, z, plan)
    # Everything below is fp32 whatever autocast says: the state recurrence and its gradients in bf16 diverge.
    with torch.autocast(device_type=u.device.type, enabled=False):
        u, A = u.float(), A.float()
        B, C = B.float().contiguous(), C.float().contiguous()
        delta = delta.float()
        if delta_bias is not None:
            delta = delta + delta_bias.float()
        dt = F.softplus(delta).contiguous()
        v = (dt * u).contiguous()
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (dt, v, A, B, C, u, z, D)):
            y = _ChunkedSelectiveScan.apply(dt, v, A, B, C, plan)
            if D is not None:
                y = y + u * D.float()
            if z is not None:
                y = y * F.silu(z.float())
            return y
        # inference: the epilogue in place on the scan's own output (two fewer full-size temporaries)
        y = _scan_forward(dt, v, A, B, C, plan, keep_chunk_states=False)[0]
        if D is not None:
            y.addcmul_(u, D.float())
        if z is not None:
            y.mul_(F.silu(z.float()))
    return y


# ------------------------------------------------------------------------------------------------------------
# mamba_ssm kernels (optional, CUDA only) and backend dispatch
# ------------------------------------------------------------------------------------------------------------

_MAMBA_SSM_SCAN = None
_MAMBA_SSM_TRIED = False


def load_mamba_ssm_selective_scan():
    """mamba_ssm's CUDA ``selective_scan_fn``, or ``None`` if it cannot be imported (warns once per process).

    Imported lazily and only from here: ``import mamba_ssm`` fails on machines without its CUDA build, and must
    never break ``import polsess_hf``. Any exception counts (ImportError, OSError from a mismatched CUDA library,
    packaging's InvalidVersion, …).
    """
    global _MAMBA_SSM_SCAN, _MAMBA_SSM_TRIED
    if not _MAMBA_SSM_TRIED:
        _MAMBA_SSM_TRIED = True
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception as error:  # noqa: BLE001 - any failure means "no kernels here"
            warnings.warn(
                f"mamba_backend='auto': mamba_ssm's CUDA kernels are not available ({type(error).__name__}: {error}); "
                "using the pure-PyTorch scan instead (same weights and results, slower). Install the GPU extra "
                "(`pip install mamba-ssm causal-conv1d`) to use the kernels, or set mamba_backend='torch' to silence "
                "this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            _MAMBA_SSM_SCAN = selective_scan_fn
    return _MAMBA_SSM_SCAN


def native_supported(d_inner: int, d_state: int) -> bool:
    """Whether the compiled CPU scan can run these sizes (it is built, ``d_inner`` is a multiple of its vector block
    and ``d_state`` ≤ 64)."""
    width = native_block_width()
    return width > 0 and d_inner % width == 0 and d_state <= 64


def resolve_backend(backend: str, device: torch.device, d_inner: int | None = None, d_state: int | None = None) -> str:
    """The backend that will actually run: ``"mamba_ssm"``, ``"cpu"``, ``"torch"`` or ``"reference"``.

    ``"auto"`` on CUDA is mamba_ssm when it imports, else ``"torch"``; on CPU ``"cpu"`` when the compiled scan
    builds (and supports ``d_inner``/``d_state`` when given), else ``"torch"``. An explicit ``"cpu"`` that cannot
    run raises a ValueError saying why."""
    if backend == "auto":
        if device.type == "cuda":
            return "mamba_ssm" if load_mamba_ssm_selective_scan() is not None else "torch"
        if load_native_kernel() is not None and (d_inner is None or native_supported(d_inner, d_state or 16)):
            return "cpu"
        return "torch"
    if backend not in ("cpu", "torch", "reference"):
        raise ValueError(f"`mamba_backend` must be one of ['auto', 'cpu', 'reference', 'torch'], got {backend!r}")
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"mamba_backend='cpu' runs on the CPU only, the model is on {device}; use 'auto' or 'torch'")
        if load_native_kernel() is None:
            raise ValueError(f"mamba_backend='cpu': the compiled scan is {native_kernel_status()}; use 'torch'")
        if d_inner is not None and not native_supported(d_inner, d_state or 16):
            raise ValueError(
                f"mamba_backend='cpu' needs d_inner a multiple of {native_block_width()} and d_state <= 64, got "
                f"d_inner={d_inner}, d_state={d_state}; use 'torch'"
            )
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, *, backend: str = "auto") -> torch.Tensor:
    """Dispatch the selective scan (time-major arguments, see :func:`selective_scan_reference`)."""
    resolved = resolve_backend(backend, u.device, u.shape[-1], A.shape[-1])
    if resolved == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias)
    if resolved == "torch":
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias)
    if resolved == "cpu":
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, mode="native")
    scan = load_mamba_ssm_selective_scan()
    def kernel_layout(tensor):  # (seq_len, batch, channels) → mamba_ssm's (batch, channels, seq_len)
        return tensor.permute(1, 2, 0).contiguous()

    out = scan(
        kernel_layout(u),
        kernel_layout(delta),
        A.float(),
        kernel_layout(B),
        kernel_layout(C),
        None if D is None else D.float(),
        z=None if z is None else kernel_layout(z),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=True,
    )
    return out.permute(2, 0, 1)


# ------------------------------------------------------------------------------------------------------------
# The fused mixer core for mamba_backend="cpu" (conv + SiLU, then softplus + scan + D skip + SiLU gate)
# ------------------------------------------------------------------------------------------------------------


def _rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``tensor`` as fp32 strided rows for the kernels (no copy when it already is), and its row stride."""
    stride = native_rows_stride(tensor)
    if stride is None:
        tensor = tensor.float().contiguous()
        stride = tensor.shape[2]
    return tensor, stride


def _sum_tiles(buffers: dict) -> torch.Tensor:
    return torch.stack([buffers[start] for start in sorted(buffers)]).sum(dim=0)  # fixed order: deterministic


class _FusedConvSiLU(torch.autograd.Function):
    """``SiLU(causal depthwise conv(xin))``; xin ``(seq_len, batch, d_inner)`` strided rows, weight ``(d_inner, K)``."""

    @staticmethod
    def forward(ctx, xin, weight, bias, plan):
        xin, sx = _rows(xin)
        weight, bias = weight.float().t().contiguous(), bias.float().contiguous()  # (K, d_inner) for the kernel
        out = xin.new_empty(xin.shape)
        _for_each_tile(plan, xin.shape[1], lambda rows: native_conv_silu_forward(xin, sx, weight, bias, out, rows))
        ctx.save_for_backward(xin, weight, bias)
        ctx.sx, ctx.plan = sx, plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xin, weight, bias = ctx.saved_tensors
        grad_out = grad_out.float().contiguous()
        grad_x = torch.empty(xin.shape, dtype=torch.float32)
        grad_w, grad_b = {}, {}

        def tile(rows):
            w, b = torch.zeros_like(weight), torch.zeros_like(bias)
            native_conv_silu_backward(xin, ctx.sx, weight, bias, grad_out, grad_x, w, b, rows)
            grad_w[rows.start], grad_b[rows.start] = w, b

        _for_each_tile(ctx.plan, xin.shape[1], tile)
        return grad_x, _sum_tiles(grad_w).t(), _sum_tiles(grad_b), None


class _FusedMixerScan(torch.autograd.Function):
    """``(scan(softplus(delta + dt_bias), u; A, B, C) + D·u)·SiLU(z)``, all ``(seq_len, batch, ·)`` (``dt_bias``, D and
    z may be None); saves the inputs and the chunk-entry states only (like :class:`_ChunkedSelectiveScan`)."""

    @staticmethod
    def forward(ctx, u, delta, dt_bias, A, B, C, D, z, plan):
        u, delta = u.float().contiguous(), delta.float().contiguous()
        B, sbc = _rows(B)
        C, sbc_c = _rows(C)
        if sbc_c != sbc:  # the kernel takes one stride for both
            B, C = B.contiguous(), C.contiguous()
            sbc = B.shape[2]
        z, sz = (None, 0) if z is None else _rows(z)
        ctx.bias_given = dt_bias is not None
        dt_bias = u.new_zeros(u.shape[2]) if dt_bias is None else dt_bias.float().contiguous()
        D = None if D is None else D.float().contiguous()
        A2t = (A.float().t() * _LOG2_E).contiguous()
        seq_len, batch_size, d_inner = u.shape
        n_chunks = math.ceil(seq_len / plan.chunk_size)
        keep = ctx.needs_input_grad is not None and any(ctx.needs_input_grad)
        chunk_states = u.new_empty(batch_size, n_chunks, A.shape[1], d_inner) if keep else None
        out = u.new_empty(u.shape)
        _for_each_tile(plan, batch_size, lambda rows: native_mixer_scan_forward(
            u, delta, dt_bias, A2t, B, C, sbc, D, z, sz, out, chunk_states, plan.chunk_size, rows))  # fmt: skip
        if keep:
            ctx.save_for_backward(u, delta, dt_bias, A, B, C, D, z, chunk_states)
            ctx.strides, ctx.plan = (sbc, sz), plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, dt_bias, A, B, C, D, z, chunk_states = ctx.saved_tensors
        (sbc, sz), plan = ctx.strides, ctx.plan
        seq_len, batch_size, d_inner = u.shape
        d_state = A.shape[1]
        grad_out = grad_out.float().contiguous()
        A = A.float()
        A2t, At = (A.t() * _LOG2_E).contiguous(), A.t().contiguous()
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(u)
        grad_z = None if z is None else torch.empty_like(u)
        grad_B = u.new_zeros(seq_len, batch_size, d_state)
        grad_C = u.new_zeros(seq_len, batch_size, d_state)
        tiles: dict = {}

        def tile(rows):
            grad_At, grad_D, grad_bias = u.new_zeros(d_state, d_inner), u.new_zeros(d_inner), u.new_zeros(d_inner)
            native_mixer_scan_backward(u, delta, dt_bias, A2t, At, B, C, sbc, D, z, sz, chunk_states, grad_out,
                                        grad_u, grad_delta, grad_z, grad_B, grad_C, grad_At, grad_D, grad_bias,
                                        plan.chunk_size, rows)  # fmt: skip
            tiles[rows.start] = torch.cat([grad_At.flatten(), grad_D, grad_bias])

        _for_each_tile(plan, batch_size, tile)
        summed = _sum_tiles(tiles)
        grad_A = summed[: d_state * d_inner].view(d_state, d_inner).t()
        grad_D, grad_bias = summed[d_state * d_inner : d_state * d_inner + d_inner], summed[-d_inner:]
        grad_bias = grad_bias if ctx.bias_given else None
        return grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, None if D is None else grad_D, grad_z, None


def fused_mixer_supported(d_inner: int, d_state: int, d_conv: int) -> bool:
    return native_supported(d_inner, d_state) and d_conv <= 16


# ------------------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------------------


class MambaRMSNorm(nn.Module):
    """RMSNorm with a weight and no bias, computed in fp32 (mamba_ssm's Triton ``RMSNorm``, eps inside the root).

    ``(..., hidden_size)`` → same shape, float32.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def normalize(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The norm of float32 ``hidden_states`` outside autocast (``torch.nn.functional.rms_norm``: one fused
        kernel, the same value as x·rsqrt(mean(x²) + eps)·w)."""
        return F.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight.float(), self.eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            return self.normalize(hidden_states.float())


class MambaMixer(nn.Module):
    """mamba_ssm ``Mamba`` (``mamba_simple``), non-fused path, with a choice of scan backend.

    ``(seq_len, batch_size, d_model)`` → ``(seq_len, batch_size, d_model)`` (time-major, see the module docstring).

    Args:
        d_model: token width. d_state: N. d_conv: causal convolution kernel. expand: ``d_inner = expand·d_model``.
        dt_rank: rank of the Δ projection (mamba_ssm's "auto" is ``ceil(d_model / 16)``).
        backend: ``"auto"``, ``"cpu"``, ``"torch"`` or ``"reference"`` (see the module docstring); may be changed
            at any time.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None,
                 backend: str = "auto"):  # fmt: skip
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    @torch.no_grad()
    def reset_mamba_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                               init_module=None) -> None:  # fmt: skip
        """mamba_ssm's initialisation of the SSM parameters: A_log = log(1…N) per channel, D = 1,
        W_dt ~ U(±dt_rank^−½), b_dt = softplus⁻¹(Δ₀) with Δ₀ ~ logU[dt_min, dt_max] floored at ``dt_init_floor``.
        ``init_module`` supplies ``uniform_``/``copy_`` (transformers' guarded versions when called from
        ``_init_weights``, so loaded weights are never overwritten)."""
        init_module = init_module or nn.init
        init_module.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        inverse_softplus = dt + torch.log(-torch.expm1(-dt))
        _copy(init_module, self.dt_proj.bias, inverse_softplus)
        _copy(init_module, self.A_log, torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        _copy(init_module, self.D, torch.ones(self.d_inner))

    def causal_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise causal convolution over time: ``(seq_len, batch, d_inner)`` → same shape.

        ``y_t = b + Σ_k w_k·x_{t−(K−1)+k}`` (left context only, zeros before the start), i.e. mamba_ssm's
        ``conv1d(x)[..., :L]``, computed as K shifted multiply-adds over whole time steps (no padding copy, no
        transposed grouped convolution).
        """
        weight = self.conv1d.weight[:, 0, :].to(x.dtype)  # (d_inner, K); tap K−1 multiplies the current step
        out = torch.addcmul(self.conv1d.bias.to(x.dtype), x, weight[:, -1])
        for shift in range(1, min(self.d_conv, x.shape[0])):
            out[shift:].addcmul_(x[:-shift], weight[:, -1 - shift])
        return out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(hidden_states)
        if resolve_backend(self.backend, xz.device, self.d_inner, self.d_state) == "cpu" and self.d_conv <= 16:
            return self._forward_fused(xz)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self.causal_conv(x))
        x_dbl = self.x_proj(x)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # the bias is added inside the scan, in fp32 (as mamba_ssm does)
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), backend=self.backend)
        return self.out_proj(y)

    def _forward_fused(self, xz: torch.Tensor) -> torch.Tensor:
        """The ``"cpu"`` backend: the same math as :meth:`MambaMixer.forward` with everything between the projections in
        two compiled kernels (fp32, whatever autocast says; the projections stay ordinary — autocast — linear layers)."""
        seq_len, batch_size, _ = xz.shape
        plan = _scan_plan(seq_len, batch_size, self.d_inner, self.d_state, xz.device, None, None, "native")
        with torch.autocast(device_type=xz.device.type, enabled=False):
            xz = xz.float()
            x_in, z = xz.split(self.d_inner, dim=-1)
            x = _FusedConvSiLU.apply(x_in, self.conv1d.weight[:, 0, :], self.conv1d.bias, plan)
        x_dbl = self.x_proj(x)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        with torch.autocast(device_type=xz.device.type, enabled=False):
            A = -torch.exp(self.A_log.float())
            y = _FusedMixerScan.apply(x, dt, self.dt_proj.bias, A, B, C, self.D, z, plan)
        return self.out_proj(y)


@dataclass(frozen=True)
class _TileWeights:
    """A mixer's weights in the layouts the kernels take, prepared once per call (not per tile)."""

    in_proj: torch.Tensor
    conv_weight_t: torch.Tensor  # (K, d_inner)
    conv_bias: torch.Tensor
    x_proj: torch.Tensor
    dt_proj_t: torch.Tensor  # (dt_rank, d_inner)
    dt_bias: torch.Tensor
    A2t: torch.Tensor  # A^T·log2(e), (d_state, d_inner)
    D: torch.Tensor
    out_proj: torch.Tensor
    norm: "MambaRMSNorm"

    @classmethod
    def of(cls, block: "MambaResidualBlock") -> "_TileWeights":
        mixer = block.mixer
        A = -torch.exp(mixer.A_log.detach().float())
        return cls(
            mixer.in_proj.weight.detach().float(), mixer.conv1d.weight.detach()[:, 0, :].float().t().contiguous(),
            mixer.conv1d.bias.detach().float().contiguous(), mixer.x_proj.weight.detach().float(),
            mixer.dt_proj.weight.detach().float().t().contiguous(), mixer.dt_proj.bias.detach().float().contiguous(),
            (A.t() * _LOG2_E).contiguous(), mixer.D.detach().float().contiguous(),
            mixer.out_proj.weight.detach().float(), block.norm,
        )  # fmt: skip


_WORKSPACES = threading.local()


def _workspace(name: str, *shape: int) -> torch.Tensor:
    """A float32 buffer of ``shape`` private to the calling thread, reused from call to call. A projection written
    into a buffer that is still in cache ran ~2× faster than into a fresh tensor (1,008 × 64 → 512: 0.89 vs 1.55 ms
    on one core). Keyed by inference mode too: an inference tensor cannot be written outside inference mode."""
    buffers = getattr(_WORKSPACES, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACES.buffers = {}
    key = (name, torch.is_inference_mode_enabled())
    buffer = buffers.get(key)
    numel = math.prod(shape)
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[key] = torch.empty(numel)
    return buffer[:numel].view(shape)


def _as_rows(tensor: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` ``(seq_len, tile, width)`` as a ``(seq_len·tile, width)`` view with contiguous rows at a uniform
    stride (e.g. one direction's half of a ``(seq_len, tile, 2·width)`` buffer), or None."""
    stride = native_rows_stride(tensor)
    seq_len, tile, width = tensor.shape
    return None if stride is None else tensor.as_strided((seq_len * tile, width), (stride, 1))


def _residual_block_tile(hidden: torch.Tensor, weights: _TileWeights, out: torch.Tensor, reverse: bool) -> None:
    """``out = hidden + Mixer(RMSNorm(hidden))`` for one tile ``(seq_len, tile, d_model)`` (``hidden`` contiguous;
    ``out`` may be one half of a wider buffer), with the ``"cpu"`` backend's kernels called directly: the same math
    as :class:`MambaResidualBlock` on that backend. ``reverse``: the block applied to the time-reversed sequences,
    written in the original order (the convolution and the scan run backwards in time; every other step is per
    token), so the backward direction needs no flipped copies. The intermediates live in this thread's workspaces."""
    seq_len, tile, d_model = hidden.shape
    tokens = seq_len * tile
    rows = hidden.view(tokens, d_model)
    normed = weights.norm.normalize(rows)
    d_inner = weights.in_proj.shape[0] // 2
    d_state, dt_rank = weights.A2t.shape[0], weights.dt_proj_t.shape[0]
    xz = torch.mm(normed, weights.in_proj.t(), out=_workspace("xz", tokens, 2 * d_inner))
    x = _workspace("x", tokens, d_inner)
    native_conv_silu_forward(xz.view(seq_len, tile, -1), 2 * d_inner, weights.conv_weight_t, weights.conv_bias,
                             x.view(seq_len, tile, d_inner), slice(0, tile), reverse)  # fmt: skip
    width = dt_rank + 2 * d_state
    x_dbl = torch.mm(x, weights.x_proj.t(), out=_workspace("x_dbl", tokens, width))
    y = _workspace("y", tokens, d_inner)
    x_dbl = x_dbl.view(seq_len, tile, width)
    native_mixer_scan_forward(  # the Δ projection (rank dt_rank) is computed in the kernel, row by row
        x.view(seq_len, tile, d_inner), None, weights.dt_bias, weights.A2t,
        x_dbl[..., dt_rank : dt_rank + d_state], x_dbl[..., dt_rank + d_state :], width, weights.D,
        xz.view(seq_len, tile, -1)[..., d_inner:], 2 * d_inner, y.view(seq_len, tile, d_inner), None, 64,
        slice(0, tile), reverse, dt_in=x_dbl, dt_weight_t=weights.dt_proj_t,
    )  # fmt: skip
    out_rows = _as_rows(out)
    if out_rows is not None:
        torch.addmm(rows, y, weights.out_proj.t(), out=out_rows)
    else:
        out.copy_(torch.addmm(rows, y, weights.out_proj.t(), out=_workspace("block_out", tokens, d_model)).view_as(out))


def _copy(init_module, tensor: torch.Tensor, value: torch.Tensor) -> None:
    if hasattr(init_module, "copy_"):
        init_module.copy_(tensor, value)
    else:
        tensor.copy_(value)


class MambaResidualBlock(nn.Module):
    """mamba_ssm ``Block`` as SPMamba builds it (pre-norm, no MLP, ``fused_add_norm=False``) with the residual
    added back: ``u + Mixer(RMSNorm(u))``. ``(seq_len, batch_size, d_model)`` → same shape."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, dt_rank: int | None, norm_eps: float,
                 backend: str = "auto"):  # fmt: skip
        super().__init__()
        self.norm = MambaRMSNorm(d_model, eps=norm_eps)
        self.mixer = MambaMixer(d_model, d_state, d_conv, expand, dt_rank, backend=backend)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.mixer(self.norm(hidden_states))


class BidirectionalMamba(nn.Module):
    """SPMamba's ``MambaBlock(d, n_layer=1, bidirectional=True)``: two independent residual Mamba blocks, one over
    the sequence and one over the reversed sequence, concatenated (forward features first).

    ``(seq_len, batch_size, d_model)`` → ``(seq_len, batch_size, 2·d_model)`` (time-major). The batch of sequences is
    processed in groups of at most ``max_tokens`` tokens: results are identical, the intermediate ``d_inner``-wide
    tensors stay small, and inference memory stays bounded for long inputs (60 s of audio is ~1M intra-frame tokens).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 4, dt_rank: int | None = None,
                 norm_eps: float = 1e-5, backend: str = "auto", max_tokens: int = 16384):  # fmt: skip
        super().__init__()
        block_args = (d_model, d_state, d_conv, expand, dt_rank, norm_eps, backend)
        self.forward_blocks = nn.ModuleList([MambaResidualBlock(*block_args)])
        self.backward_blocks = nn.ModuleList([MambaResidualBlock(*block_args)])
        self.max_tokens = max_tokens

    def set_backend(self, backend: str) -> None:
        for block in (*self.forward_blocks, *self.backward_blocks):
            block.mixer.backend = backend

    def _both_directions(self, sequences: torch.Tensor) -> torch.Tensor:
        forward = sequences
        for block in self.forward_blocks:
            forward = block(forward)
        backward = sequences.flip(0)
        for block in self.backward_blocks:
            backward = block(backward)
        return torch.cat([forward, backward.flip(0)], dim=-1)

    def tiled_inference_supported(self, sequences: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the tiled inference path (:meth:`infer_tile`): no autograd, fp32 on the CPU,
        no autocast (it is per thread: worker threads would not see it), every mixer on the ``"cpu"`` backend."""
        if torch.is_grad_enabled() or sequences.device.type != "cpu" or sequences.dtype != torch.float32:
            return False
        if torch.is_autocast_enabled("cpu"):
            return False
        mixers = [block.mixer for block in (*self.forward_blocks, *self.backward_blocks)]
        return all(
            resolve_backend(m.backend, sequences.device, m.d_inner, m.d_state) == "cpu"
            and fused_mixer_supported(m.d_inner, m.d_state, m.d_conv)
            for m in mixers
        )

    def tile_weights(self) -> list:
        """The weights :meth:`infer_tile` takes, prepared once per call: per direction the layers' weights."""
        return [[_TileWeights.of(block) for block in blocks] for blocks in (self.forward_blocks, self.backward_blocks)]

    def infer_tile(self, tile: torch.Tensor, weights: list, out: torch.Tensor) -> None:
        """:meth:`forward` of one tile ``(seq_len, tile, d_model)`` (a few whole sequences) into ``out``
        ``(seq_len, tile, 2·d_model)``, in the calling thread, every intermediate in its workspaces (no autograd;
        see :meth:`tiled_inference_supported`). The backward direction runs its kernels backwards in time instead
        of flipping (see :func:`_residual_block_tile`)."""
        seq_len, batch, d_model = tile.shape
        if not tile.is_contiguous():
            tile = _workspace("tile", seq_len, batch, d_model).copy_(tile)
        for index, layers in enumerate(weights):
            hidden = tile
            for depth, layer in enumerate(layers):  # the last layer writes into out; others ping-pong
                last = depth == len(layers) - 1
                target = out[..., index * d_model : (index + 1) * d_model] if last else _workspace(
                    f"hidden{depth % 2}", seq_len, batch, d_model)  # fmt: skip
                _residual_block_tile(hidden, layer, target, reverse=index == 1)
                hidden = target

    def _tiled_inference(self, sequences: torch.Tensor) -> torch.Tensor:
        """Inference on the ``"cpu"`` backend one tile of about ``_INFERENCE_TILE_TOKENS`` tokens at a time (both
        directions, every layer), tiles spread over the worker threads; see :func:`for_each_inference_tile`."""
        seq_len, batch_size, d_model = sequences.shape
        out = sequences.new_empty(seq_len, batch_size, 2 * d_model)
        weights = self.tile_weights()
        for_each_inference_tile(
            seq_len, batch_size, lambda rows: self.infer_tile(sequences[:, rows], weights, out[:, rows])
        )
        return out

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        if self.tiled_inference_supported(sequences):
            return self._tiled_inference(sequences)
        seq_len, batch_size, _ = sequences.shape
        group = max(1, self.max_tokens // seq_len)
        if batch_size <= group:
            return self._both_directions(sequences)
        return torch.cat([self._both_directions(part) for part in sequences.split(group, dim=1)], dim=1)
