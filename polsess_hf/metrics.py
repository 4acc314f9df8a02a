"""Separation metrics on PIT-reordered estimates: SI-SDR(i), SDR, PESQ(i) and STOI(i), per example.

Every metric is computed after one permutation per example, the one that maximises the mean zero-mean SI-SDR
(:func:`polsess_hf.losses.pit_si_sdr`, the training loss's PIT), so all columns of a table describe the same
speaker assignment.

* **SI-SDR** (dB): :func:`polsess_hf.losses.si_sdr`, estimate and target made **zero-mean** first
  (asteroid's convention, ``eps`` 1e-8); mean over the sources of an example.
* **SI-SDRi** (dB): SI-SDR(estimate) − SI-SDR(mixture as the estimate of every source), **both sides
  zero-mean**, so the mixture itself scores exactly 0 dB. The thesis's evaluation used a non-zero-mean
  baseline (torchmetrics, ``eps`` = fp32 machine epsilon) and, for one-output tasks (ES/EB), a non-zero-mean
  SI-SDR too (``specs/training.md`` §1); ``convention="thesis"`` reproduces that, and then equals
  :func:`polsess_hf.training.trainer.batch_metrics`. The two differ by the effect of a DC offset: hundredths
  of a dB on PolSESS.
* **SDR** (dB): BSS-eval SDR (distortion filter of 512 taps) by ``fast_bss_eval``, computed per source against
  its own reference (the SDR projects onto the filtered own reference only, so this is the permutation-fixed
  SDR); clamped to ±:data:`SDR_CLAMP_DB` so that a perfect estimate gives 100 dB rather than +inf.
* **PESQ**: ITU-T P.862 from the ``pesq`` package, narrow-band (``'nb'``) at 8 kHz and wide-band (``'wb'``) at
  16 kHz; other rates are resampled (``scipy.signal.resample_poly``) to 16 kHz (``'wb'``) when above 16 kHz,
  else to 8 kHz (``'nb'``). **STOI**: ``pystoi`` (classic, not extended; it resamples to 10 kHz itself).
  Both are per speaker, then averaged over the speakers of an example. **PESQi/STOIi** = metric(estimate) −
  metric(mixture as the estimate, same reference).

**Invalid values.** A metric of an example is NaN when it cannot be computed for one of its sources: a
non-finite estimate (every metric), a silent (all-zero) reference or estimate (SDR, PESQ, STOI: BSS-eval's
system is singular, PESQ finds no utterance, STOI has no speech frame), a signal shorter than PESQ's 0.25 s, or
any error ``pesq`` reports (``NoUtterancesError``, ``BufferTooShortError``, ...). Such values are never a crash:
tables leave them out of the means and report how many were left out (``<metric>_invalid``).

PESQ and STOI are optional (``pip install 'polsess_hf[metrics]'``); asking for them without the package raises
:class:`MissingMetricDependency` with the install command.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .losses import pit_permutate, pit_si_sdr, si_sdr

__all__ = [
    "METRIC_NAMES",
    "HIGHER_IS_BETTER",
    "SDR_CLAMP_DB",
    "EVALUATE_METRIC_PATH",
    "MissingMetricDependency",
    "BatchMetrics",
    "require_pesq",
    "require_stoi",
    "pesq_available",
    "stoi_available",
    "pesq_mode",
    "pit_reorder",
    "si_sdr_per_source",
    "mixture_si_sdr",
    "sdr_per_source",
    "pesq_per_source",
    "stoi_per_source",
    "separation_metrics",
]

#: Table columns, in order. Improvements end in ``i``.
METRIC_NAMES: tuple[str, ...] = ("si_sdr", "si_sdri", "sdr", "pesq", "pesqi", "stoi", "stoii")
#: Direction of every metric (all of them: larger is better); tables and rankings read it from here.
HIGHER_IS_BETTER: dict[str, bool] = {name: True for name in METRIC_NAMES}
#: BSS-eval SDR is clamped to ±100 dB (``fast_bss_eval``'s ``clamp_db``): a perfect estimate would be +inf.
SDR_CLAMP_DB = 100.0
#: BSS-eval distortion filter length (the bss_eval default).
SDR_FILTER_LENGTH = 512
#: The local 🤗 ``evaluate`` metric module: ``evaluate.load(EVALUATE_METRIC_PATH)`` (works offline).
EVALUATE_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_hf", "si_sdr")

_CONVENTIONS = ("zero_mean", "thesis")
_INSTALL_HINT = "pip install 'polsess_hf[metrics]'"


class MissingMetricDependency(ImportError):
    """An optional metric (PESQ, STOI) was asked for but its package is not installed."""


def _require(module: str, metric: str, flag: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingMetricDependency(
            f"{metric} needs the {module!r} package, which is not installed ({error}). Install it with "
            f"`{_INSTALL_HINT}` (or `pip install {module}`), or leave {metric} out ({flag})."
        ) from error


def require_pesq():
    """The ``pesq`` module, or :class:`MissingMetricDependency` naming the install command."""
    return _require("pesq", "PESQ", "--no-pesq / pesq=False")


def require_stoi():
    """The ``pystoi`` module, or :class:`MissingMetricDependency` naming the install command."""
    return _require("pystoi", "STOI", "--no-stoi / stoi=False")


def pesq_available() -> bool:
    try:
        require_pesq()
    except MissingMetricDependency:
        return False
    return True


def stoi_available() -> bool:
    try:
        require_stoi()
    except MissingMetricDependency:
        return False
    return True


def pesq_mode(sample_rate: int) -> tuple[str, int]:
    """``(mode, rate)`` PESQ runs at for audio sampled at ``sample_rate`` Hz (see the module docstring)."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if sample_rate == 8000:
        return "nb", 8000
    if sample_rate >= 16000:
        return "wb", 16000
    return "nb", 8000


def _resample(signal: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return signal
    from scipy.signal import resample_poly

    divisor = math.gcd(from_rate, to_rate)
    return resample_poly(signal, to_rate // divisor, from_rate // divisor, axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# SI-SDR (torch, batched)
# ---------------------------------------------------------------------------------------------------------------
def _as_batch(estimates: torch.Tensor, targets: torch.Tensor, mixture: Optional[torch.Tensor] = None):
    """Check and return float32 ``(batch, n_src, time)`` estimates/targets and ``(batch, time)`` mixture."""
    estimates, targets = torch.as_tensor(estimates), torch.as_tensor(targets)
    if targets.dim() == 2:  # one source given as (batch, time)
        targets = targets.unsqueeze(1)
    if estimates.dim() == 2 and targets.shape[1] == 1:
        estimates = estimates.unsqueeze(1)
    if estimates.dim() != 3 or estimates.shape != targets.shape:
        raise ValueError(
            "estimates and targets must both be (batch_size, n_src, time_steps) of the same shape, got "
            f"estimates {tuple(estimates.shape)} and targets {tuple(targets.shape)}"
        )
    if mixture is not None:
        mixture = torch.as_tensor(mixture)
        if mixture.dim() == 3 and mixture.shape[1] == 1:
            mixture = mixture[:, 0]
        if mixture.shape != (targets.shape[0], targets.shape[-1]):
            raise ValueError(
                f"mixture must be (batch_size, time_steps) = {(targets.shape[0], targets.shape[-1])}, "
                f"got {tuple(mixture.shape)}"
            )
        mixture = mixture.float()
    return estimates.float(), targets.float(), mixture


def pit_reorder(estimates: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reordered_estimates, perm)``: estimates ``(batch, n_src, time)`` in the order of ``targets``, under the
    permutation that maximises the mean zero-mean SI-SDR (``perm`` ``(batch, n_src)``, see ``pit_si_sdr``)."""
    estimates, targets, _ = _as_batch(estimates, targets)
    _, perm = pit_si_sdr(estimates, targets)
    return pit_permutate(estimates, perm), perm


def si_sdr_per_source(estimates: torch.Tensor, targets: torch.Tensor, *, zero_mean: bool = True) -> torch.Tensor:
    """SI-SDR (dB) of already-ordered estimates, ``(batch, n_src, time)`` → ``(batch, n_src)``.

    ``zero_mean=True`` is :func:`polsess_hf.losses.si_sdr` (``eps`` 1e-8); ``False`` is torchmetrics'
    non-zero-mean SI-SDR with ``eps`` = the fp32 machine epsilon (the thesis's TM-SISDR).
    """
    estimates, targets, _ = _as_batch(estimates, targets)
    if zero_mean:
        return si_sdr(estimates, targets)
    return si_sdr(estimates, targets, eps=torch.finfo(torch.float32).eps, zero_mean=False)


def mixture_si_sdr(mixture: torch.Tensor, targets: torch.Tensor, *, zero_mean: bool = True) -> torch.Tensor:
    """SI-SDR (dB) of the mixture used as the estimate of every source, ``(batch, time)`` → ``(batch, n_src)``."""
    targets = torch.as_tensor(targets).float()
    if targets.dim() == 2:
        targets = targets.unsqueeze(1)
    _, targets, mixture = _as_batch(targets, targets, mixture)
    return si_sdr_per_source(mixture.unsqueeze(1).expand_as(targets), targets, zero_mean=zero_mean)


# ---------------------------------------------------------------------------------------------------------------
# SDR, PESQ, STOI (numpy, per source pair)
# ---------------------------------------------------------------------------------------------------------------
def _valid_pair(reference: np.ndarray, estimate: np.ndarray) -> bool:
    """Both signals finite and neither all-zero (the cases BSS-eval, PESQ and STOI cannot score)."""
    return bool(
        np.isfinite(reference).all() and np.isfinite(estimate).all() and np.any(reference != 0) and np.any(estimate != 0)
    )


def _to_numpy(signals) -> np.ndarray:
    if isinstance(signals, torch.Tensor):
        signals = signals.detach().cpu().double().numpy()
    return np.asarray(signals, dtype=np.float64)


def sdr_per_source(estimates, targets) -> np.ndarray:
    """BSS-eval SDR (dB) of already-ordered estimates: ``(batch, n_src, time)`` → ``(batch, n_src)`` float64.

    Each source is scored against its own reference only (no permutation search; pass PIT-reordered
    estimates). NaN for an invalid pair (see the module docstring).
    """
    import fast_bss_eval

    estimates, targets = _to_numpy(estimates), _to_numpy(targets)
    if estimates.ndim != 3 or estimates.shape != targets.shape:
        raise ValueError(f"expected (batch, n_src, time) pairs, got {estimates.shape} and {targets.shape}")
    scores = np.full(estimates.shape[:2], np.nan)
    valid = [(b, k) for b in range(scores.shape[0]) for k in range(scores.shape[1])
             if _valid_pair(targets[b, k], estimates[b, k])]
    if not valid:
        return scores
    index = tuple(np.array(valid).T)
    # One channel per call: fast_bss_eval's own permutation search is then trivial, and its numpy backend's
    # permutation-free path does not work with numpy 2's batched solve.
    with np.errstate(divide="ignore", invalid="ignore"):
        values = fast_bss_eval.sdr(
            targets[index][:, None], estimates[index][:, None], filter_length=SDR_FILTER_LENGTH, clamp_db=SDR_CLAMP_DB
        )
    scores[index] = np.asarray(values)[:, 0]
    return scores


def pesq_per_source(estimates, targets, sample_rate: int) -> np.ndarray:
    """PESQ (MOS-LQO) of already-ordered estimates: ``(batch, n_src, time)`` → ``(batch, n_src)``, NaN if invalid."""
    pesq = require_pesq()
    estimates, targets = _to_numpy(estimates), _to_numpy(targets)
    mode, rate = pesq_mode(sample_rate)
    scores = np.full(estimates.shape[:2], np.nan)
    for b in range(scores.shape[0]):
        for k in range(scores.shape[1]):
            reference, estimate = targets[b, k], estimates[b, k]
            if not _valid_pair(reference, estimate):
                continue
            reference, estimate = _resample(reference, sample_rate, rate), _resample(estimate, sample_rate, rate)
            try:
                scores[b, k] = pesq.pesq(rate, reference, estimate, mode)
            except (pesq.PesqError, ValueError):
                # NoUtterancesError, BufferTooShortError, ...; ValueError: pesq fails on near-silent signals.
                pass
    return scores


def stoi_per_source(estimates, targets, sample_rate: int) -> np.ndarray:
    """STOI (0–1) of already-ordered estimates: ``(batch, n_src, time)`` → ``(batch, n_src)``, NaN if invalid."""
    pystoi = require_stoi()
    estimates, targets = _to_numpy(estimates), _to_numpy(targets)
    scores = np.full(estimates.shape[:2], np.nan)
    for b in range(scores.shape[0]):
        for k in range(scores.shape[1]):
            reference, estimate = targets[b, k], estimates[b, k]
            if not _valid_pair(reference, estimate):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Not enough STFT frames": a score of 1e-5, kept as such
                value = pystoi.stoi(reference, estimate, sample_rate, extended=False)
            scores[b, k] = value if np.isfinite(value) else np.nan
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Everything for one batch
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class BatchMetrics:
    """Per-example metrics of one batch.

    Attributes:
        values: metric name → ``(batch,)`` float64 array (NaN where invalid), for the metrics computed.
        perm: ``(batch, n_src)`` long, estimate ``perm[b, j]`` was matched with target ``j``.
        estimates: ``(batch, n_src, time)`` float32, the PIT-reordered estimates.
    """

    values: dict[str, np.ndarray]
    perm: torch.Tensor
    estimates: torch.Tensor


def _mean_over_sources(per_source: np.ndarray) -> np.ndarray:
    # Strict mean: an example with one invalid source is invalid (counted), not scored on the other speaker.
    return per_source.mean(axis=1)


def separation_metrics(
    estimates: torch.Tensor,
    targets: torch.Tensor,
    mixture: torch.Tensor,
    *,
    sample_rate: int,
    sdr: bool = True,
    pesq: bool = True,
    stoi: bool = True,
    convention: str = "zero_mean",
) -> BatchMetrics:
    """All metrics of one batch, per example, on PIT-reordered estimates.

    Args:
        estimates: ``(batch, n_src, time)`` model outputs in any speaker order (``(batch, time)`` if n_src = 1).
        targets: ``(batch, n_src, time)`` references.
        mixture: ``(batch, time)`` the model input (the SI-SDRi/PESQi/STOIi baseline).
        sample_rate: Hz (PESQ mode, STOI).
        sdr, pesq, stoi: compute these (PESQi/STOIi come with PESQ/STOI).
        convention: ``"zero_mean"`` (default) or ``"thesis"`` (see the module docstring; SI-SDR/SI-SDRi only).

    Returns:
        :class:`BatchMetrics` with ``values`` for ``si_sdr``, ``si_sdri`` and those asked for among ``sdr``,
        ``pesq``, ``pesqi``, ``stoi``, ``stoii``.
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {list(_CONVENTIONS)}, got {convention!r}")
    if pesq:
        require_pesq()
    if stoi:
        require_stoi()
    estimates, targets, mixture = _as_batch(estimates, targets, mixture)
    if mixture is None:
        raise ValueError("mixture is required (the baseline of SI-SDRi, PESQi and STOIi)")
    ordered, perm = pit_reorder(estimates, targets)
    thesis = convention == "thesis"
    # Thesis: ES/EB scored with torchmetrics' non-zero-mean SI-SDR, SB with PIT zero-mean; baseline non-zero-mean.
    estimate_zero_mean = not (thesis and targets.shape[1] == 1)
    score = si_sdr_per_source(ordered, targets, zero_mean=estimate_zero_mean).mean(dim=1)
    baseline = mixture_si_sdr(mixture, targets, zero_mean=not thesis).mean(dim=1)
    values = {"si_sdr": score.double().numpy(), "si_sdri": (score - baseline).double().numpy()}

    if sdr:
        values["sdr"] = _mean_over_sources(sdr_per_source(ordered, targets))
    mixture_as_estimates = mixture.unsqueeze(1).expand_as(targets)
    for name, enabled, scorer in (("pesq", pesq, pesq_per_source), ("stoi", stoi, stoi_per_source)):
        if enabled:
            estimate_scores = scorer(ordered, targets, sample_rate)
            mixture_scores = scorer(mixture_as_estimates, targets, sample_rate)
            values[name] = _mean_over_sources(estimate_scores)
            values[f"{name}i"] = _mean_over_sources(estimate_scores - mixture_scores)
    return BatchMetrics(values=values, perm=perm, estimates=ordered)
