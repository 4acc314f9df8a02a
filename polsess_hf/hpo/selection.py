"""Choosing what to validate: the diverse top-k of a stage, and the multi-seed summary that names the winner.

**Diverse top-k** (:func:`diverse_top_k`). Candidates are sorted by score (best first). The best is always
chosen; each later candidate is chosen only if its distance (:func:`.space.distance`: RMS over parameters of the
normalised, log-aware coordinates, in [0, 1]) to *every* configuration already chosen is at least
``min_distance``; otherwise it is skipped as a near-duplicate, and the scan goes on down the ranking until ``k``
are chosen or the candidates run out.

Trade-off: ``min_distance = 0`` is the plain top-k by score (what the thesis's analysis script produced in
practice: its diversity bonus was computed and never used). A larger value spends validation runs on different
regions of the space, at the price of lower-ranked members; since single-seed scores are noisy (the thesis's
seed std was 0.07–0.13 dB), two near-identical configurations mostly measure the same thing twice. 0.1 means
"differ by at least a tenth of every range, in RMS". ``max_rank`` bounds the price: candidates ranked below it
are never considered, so the set may hold fewer than ``k`` (a warning says so and how to get more).

**Multi-seed validation** (:func:`summarise_validation`): each chosen configuration is trained with several
seeds on the final subset; the winner is the best **mean**; the spread is the sample standard deviation
(ddof 1; the thesis's 4.67 ± 0.07 dB is 4.65/4.62/4.75 with ddof 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .space import ParamSpec, distance

__all__ = ["Candidate", "SelectionResult", "diverse_top_k", "ValidationSummary", "summarise_validation"]


@dataclass(frozen=True)
class Candidate:
    """A finished search trial: ``key`` identifies it (e.g. ``"stage3#41"``), ``score`` is its objective."""

    key: str
    score: float
    params: Mapping[str, Any]


@dataclass
class SelectionResult:
    """Chosen candidates (best first) with their distance to the nearest earlier choice (None for the first),
    and the skipped near-duplicates as ``(candidate, nearest chosen key, distance)``."""

    chosen: list[Candidate] = field(default_factory=list)
    distances: list[Optional[float]] = field(default_factory=list)
    skipped: list[tuple[Candidate, str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": [{"key": c.key, "score": c.score, "params": dict(c.params), "min_distance": d}
                       for c, d in zip(self.chosen, self.distances)],
            "skipped": [{"key": c.key, "score": c.score, "nearest": nearest, "distance": d}
                        for c, nearest, d in self.skipped],
        }


def diverse_top_k(
    candidates: Sequence[Candidate],
    specs: Sequence[ParamSpec],
    k: int,
    min_distance: float,
    *,
    max_rank: Optional[int] = None,
) -> SelectionResult:
    """Greedy selection by score with a minimum normalised distance to those already chosen (module docstring).

    Args:
        candidates: finished trials (any order; non-finite scores are ignored).
        specs: the parameters and ranges that define the normalised space.
        k: how many to choose (≥ 1).
        min_distance: the minimum RMS normalised distance to every earlier choice, in [0, 1].
        max_rank: consider only the ``max_rank`` best candidates (None: all).

    Ties in score keep the input order (a stable sort), so the result is deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if not 0 <= min_distance <= 1:
        raise ValueError(f"min_distance must be in [0, 1] (an RMS normalised distance), got {min_distance}")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be ≥ 1 or null, got {max_rank}")
    ranked = sorted((c for c in candidates if math.isfinite(c.score)), key=lambda c: -c.score)
    if max_rank is not None:
        ranked = ranked[:max_rank]
    result = SelectionResult()
    for candidate in ranked:
        if len(result.chosen) == k:
            break
        if not result.chosen:
            result.chosen.append(candidate)
            result.distances.append(None)
            continue
        gaps = [distance(candidate.params, chosen.params, specs) for chosen in result.chosen]
        nearest = int(np.argmin(gaps))
        if gaps[nearest] >= min_distance:
            result.chosen.append(candidate)
            result.distances.append(gaps[nearest])
        else:
            result.skipped.append((candidate, result.chosen[nearest].key, gaps[nearest]))
    if len(result.chosen) < k:
        warnings.warn(
            f"diverse top-k chose {len(result.chosen)} of k={k} configurations: {len(ranked)} finished candidates"
            f"{f' within max_rank={max_rank}' if max_rank else ''}, {len(result.skipped)} skipped as closer than "
            f"min_distance={min_distance} to a better one. Lower min_distance, raise max_rank or run more trials "
            "to validate more.",
            stacklevel=2,
        )
    return result


@dataclass
class ValidationSummary:
    """Per-candidate seed scores with mean ± std (ddof 1), sorted by mean (best first); ``winner`` is first."""

    rows: list[dict[str, Any]]

    @property
    def winner(self) -> Optional[dict[str, Any]]:
        return self.rows[0] if self.rows else None


def summarise_validation(scores: Mapping[str, Mapping[int, float]]) -> ValidationSummary:
    """``{candidate key: {seed: score}}`` → rows ``{key, seeds, scores, mean, std, n}`` best mean first.

    A non-finite seed score (a diverged run) makes the mean non-finite, which ranks last: a configuration that
    diverged on one seed out of three is not a safe winner.
    """
    rows = []
    for key, by_seed in scores.items():
        seeds = sorted(by_seed)
        values = np.array([by_seed[s] for s in seeds], dtype=np.float64)
        mean = float(values.mean()) if len(values) else math.nan
        std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append({"key": key, "seeds": seeds, "scores": values.tolist(), "mean": mean, "std": std, "n": len(values)})
    rows.sort(key=lambda r: -r["mean"] if math.isfinite(r["mean"]) else math.inf)
    return ValidationSummary(rows)
