"""The study description: one YAML with ``study``, ``base``, ``stages`` and ``validation`` sections.

::

    study:                       # where and how
      name: dprnn_progressive    # Optuna study names: <name>.<stage>, <name>.validation
      output_dir: outputs/hpo/dprnn_progressive   # study.db (default storage), trials/, report/
      storage: null              # null: sqlite:///<output_dir>/study.db; any Optuna RDB URL; journal:<file>
      seed: 42                   # sampler seed (trial n of a stage draws with seed + n)
    base:                        # the training config every trial starts from: sections model/data/training
      model: {...}               # (as configs/*.yaml) or flat keys, or a path to such a YAML (relative to
      data: {...}                # this file's folder)
      training: {...}
    stages:
      - name: stage1
        n_trials: 91             # finished (completed + pruned) trials the stage runs
        train_max_samples: 2000  # the data subset
        num_train_epochs: 50     # the epoch budget (the pruner's max resource)
        early_stopping_patience: 12
        curriculum: standard_1_3_6
        sampler: {type: tpe}     # tpe | gp | random, plus the Optuna class's keyword arguments
        pruner: {type: successive_halving, min_resource: 10, reduction_factor: 3}
        space: {learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}, ...}
      - name: stage2
        narrow: {top_quantile: 0.25, padding: 0.1}   # space from stage1's top quartile (see .space)
        ...
    validation:                  # optional: diverse top-k of the last stage(s) × seeds on the final subset
      from_stages: [stage3]
      top_k: 5
      min_distance: 0.1
      seeds: [42, 123, 456]
      train_max_samples: 16000
      num_train_epochs: 80
      early_stopping_patience: 15
      curriculum: standard_1_4_10

Every key is checked when the file is read; an error names the file, the key path and what was expected.
Samplers and pruners are built once here too, so a wrong keyword fails before any training.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import optuna
import yaml

from .space import SearchSpace

__all__ = [
    "HPOConfig",
    "StudySettings",
    "StageConfig",
    "ValidationConfig",
    "load_hpo_config",
    "make_sampler",
    "make_pruner",
    "TrialSeededSampler",
    "SAMPLERS",
    "PRUNERS",
]

#: Sampler ``type`` → Optuna class name (``optuna.samplers``).
SAMPLERS = {"tpe": "TPESampler", "gp": "GPSampler", "random": "RandomSampler"}
#: Pruner ``type`` → Optuna class name (``optuna.pruners``); epochs are the steps.
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}

_TOP_KEYS = ("study", "base", "stages", "validation")
_STUDY_KEYS = ("name", "output_dir", "storage", "seed", "heartbeat_interval", "grace_period", "max_retry",
               "checkpoint_trials", "keep_trial_checkpoints", "poll_interval")
_RUN_KEYS = ("train_max_samples", "num_train_epochs", "early_stopping_patience", "curriculum", "overrides")
_STAGE_KEYS = ("name", "n_trials", "sampler", "pruner", "space", "narrow", "space_from") + _RUN_KEYS
_NARROW_KEYS = ("from", "top_quantile", "padding", "min_trials")
_VALIDATION_KEYS = ("from_stages", "top_k", "min_distance", "max_rank", "include_pruned", "seeds",
                    "save_best_model") + _RUN_KEYS
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Keys the study sets itself for every trial: a value in base/overrides would be silently replaced.
_MANAGED_KEYS = ("output_dir", "seed", "resume_from_checkpoint", "push_to_hub", "eval_strategy", "save_strategy",
                 "load_best_model_at_end", "save_total_limit")


def _check_keys(mapping: Any, known: Sequence[str], where: str) -> dict:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(mapping).__name__} {mapping!r}")
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {list(known)}")
    return dict(mapping)


def _int(value: Any, where: str, minimum: int, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: expected an integer ≥ {minimum}{' or null' if optional else ''}, got {value!r}")
    return value


def _float(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{where}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _flatten_training_config(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Sections ``model``/``data``/``training`` (any subset) or flat keys → flat keys (as ``load_yaml_config``)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        items = value.items() if key in ("model", "data", "training") and isinstance(value, Mapping) else [(key, value)]
        for inner, inner_value in items:
            if inner in flat:
                raise ValueError(f"{where}: key {inner!r} appears twice")
            flat[inner] = inner_value
    return flat


def _training_keys() -> dict[str, str]:
    from ..training.arguments import _dataclass_keys

    return _dataclass_keys()


def _check_flat_keys(flat: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(flat) - set(_training_keys()))
    if unknown:
        raise ValueError(f"{where}: unknown training config key(s) {unknown}; see "
                         "`python examples/run_separation.py --help` for the model, data and training keys")


def make_sampler(config: Mapping[str, Any], seed: Optional[int], where: str = "sampler") -> optuna.samplers.BaseSampler:
    """Build an Optuna sampler from ``{type: tpe|gp|random, <keyword arguments>}``; ``seed`` unless given."""
    config = dict(config)
    kind = config.pop("type", "tpe")
    if kind not in SAMPLERS:
        raise ValueError(f"{where}.type must be one of {sorted(SAMPLERS)}, got {kind!r}")
    cls = getattr(optuna.samplers, SAMPLERS[kind])
    config.setdefault("seed", seed)
    _check_kwargs(cls, config, where)
    try:
        return cls(**config)
    except ImportError as error:  # GPSampler needs torch and scipy
        raise ImportError(f"{where}: sampler type {kind!r} ({cls.__name__}) needs an extra package: {error}. "
                          "Install it, or use type: tpe.") from error
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {cls.__name__}({config}) failed: {error}") from None


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates to a fresh sampler built for each trial with seed ``seed + trial.number``.

    Why: with one seeded sampler per worker, two workers draw the same "random" startup configurations; and a
    resumed study restarts the random stream. Trial numbers are unique in a study (the storage assigns them), so
    seeding by number gives every trial its own stream, identical whether the study ran in one go, was resumed,
    or was shared by several workers. Model-based samplers (TPE, GP) keep no state between trials beyond the
    stored history, so rebuilding them per trial changes nothing else.

    Args:
        config: the ``sampler`` mapping (see :func:`make_sampler`).
        seed: the base seed.
    """

    def __init__(self, config: Mapping[str, Any], seed: int):
        self.config, self.seed = dict(config), seed
        self._sampler = make_sampler(self.config, seed)

    def before_trial(self, study, trial) -> None:  # called first for every new trial (Trial.__init__)
        self._sampler = make_sampler(self.config, self.seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_pruner(config: Mapping[str, Any], max_epochs: int, where: str = "pruner") -> optuna.pruners.BasePruner:
    """Build an Optuna pruner from ``{type, <keyword arguments>, patience?}``; steps are epochs.

    ``hyperband`` gets ``max_resource = max_epochs`` unless given. ``patience: P`` wraps the pruner in
    ``optuna.pruners.PatientPruner`` (prune only after P epochs without improvement *and* the inner verdict).
    """
    config = dict(config)
    kind = config.pop("type", "none")
    if kind not in PRUNERS:
        raise ValueError(f"{where}.type must be one of {sorted(PRUNERS)}, got {kind!r}")
    patience = config.pop("patience", None)
    cls = getattr(optuna.pruners, PRUNERS[kind])
    if kind == "hyperband":
        config.setdefault("max_resource", max_epochs)
    _check_kwargs(cls, config, where)
    try:
        pruner = cls(**config)
        if patience is not None:
            with warnings.catch_warnings():  # experimental since Optuna 2.8; asked for explicitly here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                pruner = optuna.pruners.PatientPruner(pruner, patience=patience)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {cls.__name__}({config}) failed: {error}") from None
    return pruner


def _check_kwargs(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    accepted = [name for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{where}: {cls.__name__} has no argument(s) {unknown}; it takes {accepted}")


@dataclass
class StudySettings:
    """The ``study`` section (see the module docstring); paths are as written (relative to the working folder)."""

    name: str
    output_dir: Path
    storage: Optional[str] = None
    seed: int = 42
    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 3
    checkpoint_trials: bool = True
    keep_trial_checkpoints: bool = False
    poll_interval: float = 10.0


@dataclass
class RunSettings:
    """What a stage or the validation sets on top of the base config: subset, epochs, patience, curriculum."""

    train_max_samples: Optional[int] = None
    num_train_epochs: int = 10
    early_stopping_patience: Optional[int] = None
    curriculum: Any = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def training_values(self) -> dict[str, Any]:
        """Flat training-config keys for a trial (overrides first, the named settings win)."""
        values = copy.deepcopy(self.overrides)
        values.update(train_max_samples=self.train_max_samples, num_train_epochs=self.num_train_epochs,
                      early_stopping_patience=self.early_stopping_patience, curriculum=self.curriculum)
        return values


@dataclass
class StageConfig(RunSettings):
    """One search stage. ``space`` is explicit; ``narrow`` derives it from an earlier stage's top trials
    (explicit ``space`` entries then replace or add parameters); ``space_from`` reuses another stage's final
    space unchanged (a sibling stage with a different pruner, as the thesis's stage 3b)."""

    name: str = ""
    n_trials: int = 1
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    space: Optional[SearchSpace] = None
    narrow: Optional[dict[str, Any]] = None
    space_from: Optional[str] = None


@dataclass
class ValidationConfig(RunSettings):
    """The multi-seed validation of the diverse top-k of ``from_stages`` (pooled)."""

    from_stages: list[str] = field(default_factory=list)
    top_k: int = 5
    min_distance: float = 0.1
    max_rank: Optional[int] = None
    include_pruned: bool = False
    seeds: list[int] = field(default_factory=lambda: [42, 123, 456])
    save_best_model: bool = True


@dataclass
class HPOConfig:
    """A parsed study description (:func:`load_hpo_config`)."""

    study: StudySettings
    base: dict[str, Any]
    stages: list[StageConfig]
    validation: Optional[ValidationConfig]
    source: Optional[Path] = None

    @property
    def task(self) -> str:
        return self.base.get("task", "SB")

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    def study_name(self, stage: str) -> str:
        """The Optuna study name of a stage (or ``"validation"``)."""
        return f"{self.study.name}.{stage}"

    def storage_url(self) -> str:
        if self.study.storage:
            return self.study.storage
        return f"sqlite:///{(self.study.output_dir / 'study.db').resolve()}"


def _parse_run(raw: Mapping[str, Any], where: str, task: str) -> dict[str, Any]:
    from ..data import resolve_curriculum

    values: dict[str, Any] = {}
    values["train_max_samples"] = _int(raw.get("train_max_samples"), f"{where}.train_max_samples", 1, optional=True)
    if "num_train_epochs" not in raw:
        raise ValueError(f"{where}: num_train_epochs (the epoch budget) is required")
    values["num_train_epochs"] = _int(raw["num_train_epochs"], f"{where}.num_train_epochs", 1)
    values["early_stopping_patience"] = _int(raw.get("early_stopping_patience"), f"{where}.early_stopping_patience",
                                             1, optional=True)
    curriculum = raw.get("curriculum")
    try:
        resolve_curriculum(curriculum, task=task)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}.curriculum: {error}") from None
    values["curriculum"] = curriculum
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{where}.overrides: expected a mapping of training config keys, got {overrides!r}")
    overrides = _flatten_training_config(overrides, f"{where}.overrides")
    _check_flat_keys(overrides, f"{where}.overrides")
    managed = sorted(set(overrides) & set(_MANAGED_KEYS + _RUN_KEYS))
    if managed:
        raise ValueError(f"{where}.overrides: {managed} are set by the study itself (use the stage's own keys for "
                         "the subset, epochs, patience and curriculum)")
    values["overrides"] = overrides
    return values


def _check_space_names(space: SearchSpace, base: Mapping[str, Any], where: str) -> None:
    from ..models import MODEL_CLASSES

    known = _training_keys()
    model_type = base.get("model_type", "convtasnet")
    model_fields = None
    if model_type in MODEL_CLASSES:
        import dataclasses

        model_fields = {f.name for f in dataclasses.fields(MODEL_CLASSES[model_type][0])}
    for name in space.names:
        if name.startswith("model."):
            field_name = name[len("model."):]
            if model_fields is not None and field_name not in model_fields:
                raise ValueError(f"{where}.{name}: {model_type} config has no field {field_name!r}")
            if field_name == "n_src":
                raise ValueError(f"{where}.{name}: n_src follows the task and cannot be searched")
        elif name not in known or known[name] == "model":
            raise ValueError(f"{where}.{name}: not a training/data key (use model.<field> for model config fields)")
        elif name in _MANAGED_KEYS + _RUN_KEYS:
            raise ValueError(f"{where}.{name}: set by the stage itself, cannot be searched")


def load_hpo_config(path: str | Path, *, output_dir: Optional[str] = None, storage: Optional[str] = None,
                    study_name: Optional[str] = None) -> HPOConfig:
    """Read and check a study YAML; ``output_dir``/``storage``/``study_name`` override its ``study`` section."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HPO config {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_hpo_config(raw, source=path, output_dir=output_dir, storage=storage, study_name=study_name)


def parse_hpo_config(raw: Mapping[str, Any], *, source: Optional[Path] = None, output_dir: Optional[str] = None,
                     storage: Optional[str] = None, study_name: Optional[str] = None) -> HPOConfig:
    """:func:`load_hpo_config` on an already-read mapping (``source`` names it in errors)."""
    file = str(source) if source else "<hpo config>"
    raw = _check_keys(raw, _TOP_KEYS, file)
    for key in ("study", "base", "stages"):
        if key not in raw:
            raise ValueError(f"{file}: section {key!r} is required (sections: {list(_TOP_KEYS)})")

    # study
    study_raw = _check_keys(raw["study"], _STUDY_KEYS, f"{file}: study")
    name = study_name or study_raw.get("name")
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(f"{file}: study.name must be letters, digits, '_' or '-', got {name!r}")
    settings = StudySettings(
        name=name,
        output_dir=Path(output_dir or study_raw.get("output_dir") or f"outputs/hpo/{name}"),
        storage=storage or study_raw.get("storage"),
        seed=_int(study_raw.get("seed", 42), f"{file}: study.seed", 0),
        heartbeat_interval=_int(study_raw.get("heartbeat_interval", 60), f"{file}: study.heartbeat_interval", 1),
        grace_period=_int(study_raw.get("grace_period", 180), f"{file}: study.grace_period", 1),
        max_retry=_int(study_raw.get("max_retry", 3), f"{file}: study.max_retry", 0),
        checkpoint_trials=bool(study_raw.get("checkpoint_trials", True)),
        keep_trial_checkpoints=bool(study_raw.get("keep_trial_checkpoints", False)),
        poll_interval=_float(study_raw.get("poll_interval", 10.0), f"{file}: study.poll_interval", 0.01, 3600),
    )
    if settings.grace_period <= settings.heartbeat_interval:
        raise ValueError(f"{file}: study.grace_period ({settings.grace_period} s) must exceed heartbeat_interval "
                         f"({settings.heartbeat_interval} s), or every running trial looks dead")

    # base
    base_raw = raw["base"]
    if isinstance(base_raw, str):
        base_path = Path(base_raw)
        if not base_path.is_absolute() and source is not None:
            base_path = source.parent / base_path
        if not base_path.is_file():
            raise FileNotFoundError(f"{file}: base config {base_path} does not exist")
        base_raw = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
    if not isinstance(base_raw, Mapping):
        raise ValueError(f"{file}: base must be a training config mapping (model/data/training) or a path to one")
    base = _flatten_training_config(base_raw, f"{file}: base")
    _check_flat_keys(base, f"{file}: base")
    task = base.get("task", "SB")

    # stages
    stages_raw = raw["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ValueError(f"{file}: stages must be a non-empty list")
    stages: list[StageConfig] = []
    for index, stage_raw in enumerate(stages_raw):
        where = f"{file}: stages[{index}]"
        stage_raw = _check_keys(stage_raw, _STAGE_KEYS, where)
        stage_name = stage_raw.get("name")
        if not isinstance(stage_name, str) or not _NAME_PATTERN.match(stage_name) or stage_name == "validation":
            raise ValueError(f"{where}.name must be letters, digits, '_' or '-' (not 'validation'), got {stage_name!r}")
        if stage_name in [s.name for s in stages]:
            raise ValueError(f"{where}.name {stage_name!r} is used twice")
        where = f"{file}: stage {stage_name!r}"
        run = _parse_run(stage_raw, where, task)
        n_trials = _int(stage_raw.get("n_trials"), f"{where}.n_trials", 1)
        sampler = dict(stage_raw.get("sampler") or {"type": "tpe"})
        pruner = dict(stage_raw.get("pruner") or {"type": "none"})
        make_sampler(sampler, settings.seed, f"{where}.sampler")
        make_pruner(pruner, run["num_train_epochs"], f"{where}.pruner")
        space = SearchSpace.from_config(stage_raw["space"], f"{where}.space") if stage_raw.get("space") else None
        narrow = stage_raw.get("narrow")
        space_from = stage_raw.get("space_from")
        earlier = [s.name for s in stages]
        if narrow is not None:
            if narrow is True:
                narrow = {}
            narrow = _check_keys(narrow, _NARROW_KEYS, f"{where}.narrow")
            narrow.setdefault("from", earlier[-1] if earlier else None)
            if narrow["from"] not in earlier:
                raise ValueError(f"{where}.narrow.from must name an earlier stage {earlier}, got {narrow['from']!r}")
            narrow["top_quantile"] = _float(narrow.get("top_quantile", 0.25), f"{where}.narrow.top_quantile", 1e-6, 1)
            narrow["padding"] = _float(narrow.get("padding", 0.1), f"{where}.narrow.padding", 0, 1)
            narrow["min_trials"] = _int(narrow.get("min_trials", 3), f"{where}.narrow.min_trials", 1)
        if space_from is not None:
            if space_from not in earlier:
                raise ValueError(f"{where}.space_from must name an earlier stage {earlier}, got {space_from!r}")
            if narrow is not None or space is not None:
                raise ValueError(f"{where}: space_from reuses another stage's space; do not combine it with space or narrow")
        if space is None and narrow is None and space_from is None:
            raise ValueError(f"{where}: give a search space (space), narrow: {{...}} from an earlier stage, or space_from")
        if space is not None:
            _check_space_names(space, base, f"{where}.space")
        stages.append(StageConfig(name=stage_name, n_trials=n_trials, sampler=sampler, pruner=pruner, space=space,
                                  narrow=narrow, space_from=space_from, **run))

    # validation
    validation = None
    if raw.get("validation") is not None:
        where = f"{file}: validation"
        val_raw = _check_keys(raw["validation"], _VALIDATION_KEYS, where)
        from_stages = val_raw.get("from_stages") or [stages[-1].name]
        if isinstance(from_stages, str):
            from_stages = [from_stages]
        for stage_name in from_stages:
            if stage_name not in [s.name for s in stages]:
                raise ValueError(f"{where}.from_stages: no stage named {stage_name!r}; stages: {[s.name for s in stages]}")
        seeds = val_raw.get("seeds", [42, 123, 456])
        if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ValueError(f"{where}.seeds must be a non-empty list of distinct integers, got {seeds!r}")
        validation = ValidationConfig(
            from_stages=list(from_stages),
            top_k=_int(val_raw.get("top_k", 5), f"{where}.top_k", 1),
            min_distance=_float(val_raw.get("min_distance", 0.1), f"{where}.min_distance", 0, 1),
            max_rank=_int(val_raw.get("max_rank"), f"{where}.max_rank", 1, optional=True),
            include_pruned=bool(val_raw.get("include_pruned", False)),
            seeds=list(seeds),
            save_best_model=bool(val_raw.get("save_best_model", True)),
            **_parse_run(val_raw, where, task),
        )
    return HPOConfig(study=settings, base=base, stages=stages, validation=validation, source=source)
