"""Progressive data-scaling hyperparameter search with Optuna (the thesis's Series 3 method, made correct).

Stages of real training runs on growing data subsets, each with its own search space (given or narrowed from
the previous stage's top quantile), sampler (TPE or GP) and pruner (successive halving / hyperband / median,
with epochs as steps); then the diverse top-k of the last stage(s) validated with several seeds on the final
subset; then a report. ``polsess-hpo CONFIG.yaml`` runs it (resumable, shareable by many workers);
``polsess-analyze-hpo CONFIG.yaml`` rewrites the report. See ``configs/hpo/`` and the module docstrings:
:mod:`.config` (the YAML), :mod:`.space` (ranges, narrowing, distances), :mod:`.selection` (top-k, seeds),
:mod:`.objective` (one trial), :mod:`.storage` (storages, dead workers), :mod:`.search` (the study),
:mod:`.analysis` (the report).
"""

from .config import HPOConfig, StageConfig, ValidationConfig, load_hpo_config, make_pruner, make_sampler
from .selection import Candidate, SelectionResult, diverse_top_k, summarise_validation
from .space import ParamSpec, SearchSpace, distance

__all__ = [
    "HPOConfig",
    "StageConfig",
    "ValidationConfig",
    "load_hpo_config",
    "make_pruner",
    "make_sampler",
    "Candidate",
    "SelectionResult",
    "diverse_top_k",
    "summarise_validation",
    "ParamSpec",
    "SearchSpace",
    "distance",
    "run_study",
    "write_report",
]


def run_study(*args, **kwargs):
    """See :func:`.search.run_study` (imported lazily: it pulls in the trainer)."""
    from .search import run_study as _run_study

    return _run_study(*args, **kwargs)


def write_report(*args, **kwargs):
    """See :func:`.analysis.write_report`."""
    from .analysis import write_report as _write_report

    return _write_report(*args, **kwargs)
