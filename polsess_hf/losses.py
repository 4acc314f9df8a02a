"""Scale-invariant SDR and permutation-invariant training (PIT), in one place.

Every SI-SDR in polsess_hf comes from this module: the models' ``labels=`` loss, the trainer, the evaluation
tables. Conventions (see ``specs/training.md`` §1, asteroid's ``pairwise_neg_sisdr``):

* estimate and target are made **zero-mean** over time first;
* ``s_target = <ŝ, s> / (||s||² + eps) · s``, ``e = ŝ − s_target``;
* ``SI-SDR = 10·log10(||s_target||² / (||e||² + eps) + eps)`` in dB.

``eps`` defaults to 1e-8, the thesis/asteroid value, so losses reproduce the thesis numbers. Inputs in a low
precision (fp16/bf16) are computed in float32: the sums of squares over 32,000 samples overflow fp16 and
lose all precision in bf16.

Name prefixes state the shape contract (asteroid's habit): ``pairwise_*`` returns ``(batch, n_src, n_src)``,
``si_sdr`` returns ``(...)`` for inputs ``(..., time)``.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["si_sdr", "pairwise_si_sdr", "pit_si_sdr", "pit_permutate", "neg_pit_si_sdr_loss", "EPS"]

EPS = 1e-8


def _check_pair(estimates: torch.Tensor, targets: torch.Tensor) -> None:
    if estimates.shape != targets.shape:
        raise ValueError(
            f"estimates and targets must have the same shape, got estimates {tuple(estimates.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    if estimates.shape[-1] < 1:
        raise ValueError("estimates and targets must have at least one time sample (last dimension is 0)")


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def si_sdr(estimates: torch.Tensor, targets: torch.Tensor, *, eps: float = EPS, zero_mean: bool = True) -> torch.Tensor:
    """SI-SDR in dB between ``estimates`` and ``targets`` of shape ``(..., time)``; returns shape ``(...)``."""
    _check_pair(estimates, targets)
    estimates, targets = _as_float(estimates), _as_float(targets)
    if zero_mean:
        estimates = estimates - estimates.mean(dim=-1, keepdim=True)
        targets = targets - targets.mean(dim=-1, keepdim=True)
    dot = (estimates * targets).sum(dim=-1, keepdim=True)
    target_energy = (targets**2).sum(dim=-1, keepdim=True) + eps
    projection = dot / target_energy * targets
    noise = estimates - projection
    ratio = (projection**2).sum(dim=-1) / ((noise**2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio + eps)


def pairwise_si_sdr(estimates: torch.Tensor, targets: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """Pairwise zero-mean SI-SDR: ``estimates``, ``targets`` ``(batch, n_src, time)`` → ``(batch, n_src, n_src)``.

    Entry ``[b, i, j]`` is the SI-SDR of estimate ``i`` against target ``j``.
    """
    if estimates.dim() != 3:
        raise ValueError(f"expected estimates of shape (batch, n_src, time), got {tuple(estimates.shape)}")
    _check_pair(estimates, targets)
    batch_size, n_src, time = estimates.shape
    pairs = (batch_size, n_src, n_src, time)
    # [batch, n_src(est), 1, time] vs [batch, 1, n_src(tgt), time] → [batch, n_src(est), n_src(tgt)]
    return si_sdr(estimates.unsqueeze(2).expand(pairs), targets.unsqueeze(1).expand(pairs), eps=eps)


def pit_si_sdr(estimates: torch.Tensor, targets: torch.Tensor, *, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-permutation mean SI-SDR per example.

    Args:
        estimates, targets: ``(batch, n_src, time)``.

    Returns:
        ``(si_sdr, perm)``: ``si_sdr`` ``(batch,)`` is the mean over sources of the SI-SDR under the best
        permutation; ``perm`` ``(batch, n_src)`` long, such that estimate ``perm[b, j]`` matches target ``j``.
        All ``n_src!`` permutations are searched (2 sources: 2 permutations), as asteroid's ``pw_mtx`` PIT does.
    """
    pairwise = pairwise_si_sdr(estimates, targets, eps=eps)
    n_src = pairwise.shape[-1]
    perms = torch.tensor(list(itertools.permutations(range(n_src))), device=pairwise.device)  # [P, n_src]
    target_index = torch.arange(n_src, device=pairwise.device)
    # score[b, p] = mean_j pairwise[b, perms[p, j], j]
    scores = pairwise[:, perms, target_index].mean(dim=-1)  # [batch, P]
    best_score, best_index = scores.max(dim=-1)
    return best_score, perms[best_index]


def pit_permutate(estimates: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder ``estimates`` ``(batch, n_src, time)`` with ``perm`` ``(batch, n_src)`` from :func:`pit_si_sdr`."""
    return torch.gather(estimates, 1, perm.unsqueeze(-1).expand(-1, -1, estimates.shape[-1]))


def neg_pit_si_sdr_loss(estimates: torch.Tensor, targets: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """Scalar training loss: mean over the batch of the negative best-permutation SI-SDR.

    With one source this is plain negative zero-mean SI-SDR (there is a single permutation).
    """
    best, _ = pit_si_sdr(estimates, targets, eps=eps)
    return -best.mean()
