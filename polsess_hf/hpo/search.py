"""Progressive data-scaling search: stages of Optuna trials on growing subsets, then multi-seed validation.

``polsess-hpo CONFIG.yaml`` (= ``python examples/run_hpo.py CONFIG.yaml``) runs, in order:

1. every **stage** (one Optuna study ``<name>.<stage>`` each): trials drawn by the stage's sampler from its
   search space (given, narrowed from an earlier stage's top quantile, or copied), each a real training run on
   the stage's subset, reporting every epoch to the stage's pruner, until the stage has ``n_trials`` finished
   (completed or pruned) trials;
2. the **validation** (study ``<name>.validation``): the diverse top-k of the chosen stage(s)
   (:mod:`.selection`) trained with each seed on the final subset; the winner is the best mean;
3. the **report** (:mod:`.analysis`) in ``<output_dir>/report``, and ``<output_dir>/winner.yaml``, a training
   config for ``run_separation.py`` with the winner's hyperparameters.

**Workers.** Any number of processes can run the same command against the same storage; they share every
stage. A worker starts a trial only while finished + running + queued trials are fewer than ``n_trials``;
otherwise it waits for the others (polling, and failing trials of dead workers, see :mod:`.storage`) and then
moves on. Trial numbers are assigned atomically by the storage, so when two workers race for the last slot, the
later-numbered trial sees itself in surplus at its start and ends at once as failed with the user attribute
``surplus`` (no training). The same rule makes every validation run (candidate × seed) run exactly once.
Stages are barriers: narrowing and selection read a finished stage, so every worker derives the same space
(stored in the stage study's user attributes, which later workers and resumed runs read back).

**Determinism.** Trial n of a stage is sampled with seed ``study.seed + n`` (:class:`.config.TrialSeededSampler`),
so workers never draw the same random configuration and a resumed study samples what an uninterrupted one would,
given the same history; training runs are seeded by the base config's ``seed`` (search) or the validation seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import optuna
import yaml
from optuna.trial import TrialState

from .config import HPOConfig, StageConfig, TrialSeededSampler, load_hpo_config, make_pruner
from .objective import train_trial, trial_config
from .selection import Candidate, diverse_top_k, summarise_validation
from .space import SearchSpace, union_bounds
from .storage import fail_dead_local_trials, fail_running_trials, make_storage, retry_callback, worker_identity

logger = logging.getLogger(__name__)

__all__ = ["run_study", "main", "stage_space", "stage_candidates", "validation_selection", "WINNER_CONFIG_NAME"]

WINNER_CONFIG_NAME = "winner.yaml"
SPACE_ATTR = "search_space"
SPACE_NOTE_ATTR = "search_space_note"
SELECTION_ATTR = "selection"
_ALIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SurplusTrial(Exception):
    """A trial that started after its stage's last slot was taken (a race between workers); it does not train."""


def _open_study(config: HPOConfig, storage, stage_name: str) -> optuna.Study:
    # Direction: SI-SDR / SI-SDRi, higher is better.
    return optuna.create_study(study_name=config.study_name(stage_name), storage=storage, direction="maximize",
                               load_if_exists=True)


def _load_study(config: HPOConfig, storage, stage_name: str) -> Optional[optuna.Study]:
    try:
        return optuna.load_study(study_name=config.study_name(stage_name), storage=storage)
    except KeyError:
        return None


def _score(trial: optuna.trial.FrozenTrial) -> float:
    """A finished trial's score: its value, or for a pruned one the best it reached before the verdict."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    best = trial.user_attrs.get("best")
    return float(best) if best is not None else math.nan


def stage_candidates(study: optuna.Study, *, include_pruned: bool = False) -> list[optuna.trial.FrozenTrial]:
    """Finished trials usable for narrowing/selection, best first (pruned ones only with ``include_pruned``)."""
    states = _FINISHED if include_pruned else (TrialState.COMPLETE,)
    trials = [t for t in study.get_trials(deepcopy=False, states=states) if math.isfinite(_score(t))]
    return sorted(trials, key=lambda t: (-_score(t), t.number))


def stage_space(config: HPOConfig, storage, stage: StageConfig) -> SearchSpace:
    """The stage's search space: stored in its study (resume, other workers), else derived and stored."""
    study = _open_study(config, storage, stage.name)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is not None:
        space = SearchSpace.from_config(stored, f"stored search space of {study.study_name}")
        if stage.space is not None and stage.narrow is None and space.to_config() != stage.space.to_config():
            raise ValueError(
                f"stage {stage.name!r}: the config's space {stage.space.describe()} differs from the one study "
                f"{study.study_name!r} was run with {space.describe()}; use a new study name or output folder"
            )
        return space
    if stage.space_from is not None:
        source = _load_study(config, storage, stage.space_from)
        if source is None or SPACE_ATTR not in source.user_attrs:
            raise RuntimeError(f"stage {stage.name!r}: space_from {stage.space_from!r}, which has not run yet")
        space = SearchSpace.from_config(source.user_attrs[SPACE_ATTR])
        note = f"copied from {stage.space_from}"
    elif stage.narrow is not None:
        previous_stage = config.stage(stage.narrow["from"])
        previous = _open_study(config, storage, previous_stage.name)
        previous_space = SearchSpace.from_config(previous.user_attrs[SPACE_ATTR])
        finished = stage_candidates(previous)
        if len(finished) < stage.narrow["min_trials"]:
            raise RuntimeError(
                f"stage {stage.name!r}: narrowing needs at least {stage.narrow['min_trials']} completed trials in "
                f"{previous_stage.name!r}, found {len(finished)}; run more trials there, lower narrow.min_trials, or "
                "make the pruner less aggressive"
            )
        n_top = max(stage.narrow["min_trials"], math.ceil(stage.narrow["top_quantile"] * len(finished)))
        top = finished[:n_top]
        space = previous_space.narrow([t.params for t in top], padding=stage.narrow["padding"])
        note = (f"narrowed from {previous_stage.name}: top {len(top)} of {len(finished)} completed trials "
                f"(quantile {stage.narrow['top_quantile']}, min {stage.narrow['min_trials']}), padding "
                f"{stage.narrow['padding']} of the previous width (log scale for log parameters)")
        if stage.space is not None:
            space = space.updated(stage.space)
            note += f"; given in the config: {stage.space.names}"
    else:
        space = stage.space
        note = "given in the config"
    study.set_user_attr(SPACE_ATTR, space.to_config())
    study.set_user_attr(SPACE_NOTE_ATTR, note)
    return space


def _finished_count(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    return sum(t.state in _FINISHED for t in trials)


def _work(study: optuna.Study, objective: Callable, target: int, config: HPOConfig, label: str,
          before_trial: Optional[Callable[[list], None]] = None) -> None:
    """Run trials of ``study`` until it has ``target`` finished ones (shared with any other worker)."""
    callback = retry_callback(config.study.max_retry)
    announced = False  # the "waiting for other workers" line, once per wait
    while True:
        fail_dead_local_trials(study, callback)
        trials = study.get_trials(deepcopy=False)
        if before_trial is not None:
            before_trial(trials)
            trials = study.get_trials(deepcopy=False)
        finished = _finished_count(trials)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        queued = sum(t.state == TrialState.WAITING for t in trials)
        if finished >= target and not queued:
            return
        # Queued trials left when the target is met (two workers enqueued the same validation run, or a retry
        # lost its slot) are drained: each ends at once as surplus, so no stale queue outlives the stage.
        if queued or finished + len(running) < target:
            announced = False
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,))  # accelerate collects garbage after each run
            continue
        if not announced:
            announced = True
            print(f"{label}{finished}/{target} finished; waiting for trial(s) {running} of other workers", flush=True)
        time.sleep(config.study.poll_interval)


def _claim_slot(study: optuna.Study, trial: optuna.Trial, target: int) -> None:
    """Raise :class:`SurplusTrial` when ``target`` alive trials with smaller numbers exist (module docstring)."""
    ahead = sum(t.state in _ALIVE and t.number < trial.number for t in study.get_trials(deepcopy=False))
    if ahead >= target:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"{study.study_name} already has its {target} trials; trial {trial.number} does not run")


def _record(trial: optuna.Trial, outcome: dict[str, Any], folder: Path) -> None:
    trial.set_user_attr("best", outcome["best"] if math.isfinite(outcome["best"]) else None)
    trial.set_user_attr("best_epoch", outcome["best_epoch"])
    trial.set_user_attr("epochs_run", outcome["epochs_run"])
    trial.set_user_attr("curve", [[e, v if math.isfinite(v) else None] for e, v in outcome["curve"]])
    trial.set_user_attr("early_stopped", outcome["early_stopped"])
    trial.set_user_attr("train_seconds", outcome["train_seconds"])
    trial.set_user_attr("metric", outcome["metric_key"])
    trial.set_user_attr("trial_dir", str(folder))
    if outcome["resumed_from"]:
        trial.set_user_attr("resumed_from", outcome["resumed_from"])
    if outcome["pruned_at"] is not None:
        trial.set_user_attr("pruned_at", outcome["pruned_at"])
    if outcome["diverged"]:
        trial.set_user_attr("diverged", outcome["diverged"][:500])


def _finish(outcome: dict[str, Any]) -> float:
    """The trial's value, or ``TrialPruned`` for a pruned, diverged or score-less run."""
    if outcome["pruned_at"] is not None or outcome["diverged"] or not math.isfinite(outcome["best"]):
        raise optuna.TrialPruned()
    return outcome["best"]


def _run_stage(config: HPOConfig, storage, index: int) -> optuna.Study:
    stage = config.stages[index]
    space = stage_space(config, storage, stage)
    study = _open_study(config, storage, stage.name)
    study.pruner = make_pruner(stage.pruner, stage.num_train_epochs)
    label = f"[{stage.name}] "
    print(f"\n=== stage {stage.name}: {stage.n_trials} trials, {stage.train_max_samples or 'all'} training rows, "
          f"{stage.num_train_epochs} epochs (early stopping {stage.early_stopping_patience}), sampler "
          f"{stage.sampler.get('type', 'tpe')}, pruner {stage.pruner.get('type', 'none')}\n    space ("
          f"{study.user_attrs.get(SPACE_NOTE_ATTR)}): {space.describe()}", flush=True)
    training_seed = int(config.base.get("seed", 42))

    def objective(trial: optuna.Trial) -> float:
        _claim_slot(study, trial, stage.n_trials)
        for key, value in worker_identity().items():
            trial.set_user_attr(key, value)
        params = space.suggest(trial)
        # A retried trial continues in the killed original's folder (and from its last checkpoint).
        original = study.get_trials(deepcopy=False)[trial.number].system_attrs.get("failed_trial", trial.number)
        folder = config.study.output_dir / "trials" / stage.name / f"trial-{original:04d}"
        sections = trial_config(config.base, stage.training_values(), params, output_dir=folder, seed=training_seed,
                                checkpoint=config.study.checkpoint_trials, save_best_model=False)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"{label}trial {trial.number}: {shown}", flush=True)
        outcome = train_trial(sections, folder, trial=trial, label=f"{label}trial {trial.number} ",
                              keep_checkpoints=config.study.keep_trial_checkpoints)
        _record(trial, outcome, folder)
        return _finish(outcome)

    study.sampler = TrialSeededSampler(stage.sampler, config.study.seed)
    _work(study, objective, stage.n_trials, config, label)
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(completed, key=lambda t: t.value, default=None)
    print(f"{label}done: {_finished_count(trials)} finished ({len(completed)} completed, "
          f"{sum(t.state == TrialState.PRUNED for t in trials)} pruned)"
          + (f", best {best.value:.3f} dB (trial {best.number})" if best else ""), flush=True)
    return study


def validation_selection(config: HPOConfig, storage) -> dict[str, Any]:
    """The diverse top-k of ``validation.from_stages`` (stored in the validation study; computed once)."""
    validation = config.validation
    study = _open_study(config, storage, "validation")
    stored = study.user_attrs.get(SELECTION_ATTR)
    if stored is not None:
        settings = {"top_k": validation.top_k, "min_distance": validation.min_distance,
                    "max_rank": validation.max_rank, "from_stages": validation.from_stages}
        if any(stored.get(key) != value for key, value in settings.items()):
            raise ValueError(
                f"validation settings {settings} differ from those study {study.study_name!r} chose its "
                f"configurations with ({ {k: stored.get(k) for k in settings} }); use a new study name or output folder"
            )
        return stored
    spaces, candidates = [], []
    for stage_name in validation.from_stages:
        stage_study = _open_study(config, storage, stage_name)
        spaces.append(SearchSpace.from_config(stage_study.user_attrs[SPACE_ATTR]))
        for trial in stage_candidates(stage_study, include_pruned=validation.include_pruned):
            candidates.append(Candidate(f"{stage_name}#{trial.number}", _score(trial), dict(trial.params)))
    if not candidates:
        raise RuntimeError(f"validation: no completed trials in {validation.from_stages} to choose from")
    specs = union_bounds(spaces)
    result = diverse_top_k(candidates, specs, validation.top_k, validation.min_distance, max_rank=validation.max_rank)
    selection = {**result.to_dict(), "min_distance": validation.min_distance, "top_k": validation.top_k,
                 "max_rank": validation.max_rank, "from_stages": validation.from_stages,
                 "frame": {s.name: s.to_config() for s in specs}}
    study.set_user_attr(SELECTION_ATTR, json.loads(json.dumps(selection)))
    return study.user_attrs[SELECTION_ATTR]


def _run_validation(config: HPOConfig, storage) -> dict[str, Any]:
    validation = config.validation
    selection = validation_selection(config, storage)
    study = _open_study(config, storage, "validation")
    label = "[validation] "
    runs = {}
    for rank, chosen in enumerate(selection["chosen"], start=1):
        for seed in validation.seeds:
            runs[f"{chosen['key']}/seed{seed}"] = {"candidate": chosen["key"], "candidate_rank": rank, "seed": seed,
                                                   "hyperparameters": chosen["params"]}
    print(f"\n=== validation: {len(selection['chosen'])} configurations × seeds {validation.seeds} on "
          f"{validation.train_max_samples or 'all'} training rows, {validation.num_train_epochs} epochs\n"
          + "".join(f"    {c['key']}: {c['score']:.3f} dB {c['params']}"
                    + (f" (distance {c['min_distance']:.3f})" if c["min_distance"] is not None else "") + "\n"
                    for c in selection["chosen"])
          + "".join(f"    skipped {s['key']} ({s['score']:.3f} dB): distance {s['distance']:.3f} to {s['nearest']}\n"
                    for s in selection["skipped"]), flush=True)

    def enqueue_missing(trials) -> None:
        present = {t.user_attrs.get("run_key") for t in trials if t.state in _ALIVE}
        for key, attrs in runs.items():
            if key not in present:
                study.enqueue_trial({}, user_attrs={"run_key": key, **attrs})

    def objective(trial: optuna.Trial) -> float:
        key = trial.user_attrs.get("run_key")
        duplicate = any(t.user_attrs.get("run_key") == key and t.state in _ALIVE and t.number < trial.number
                        for t in study.get_trials(deepcopy=False))
        if key not in runs or duplicate:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"validation run {key!r} is already taken by another trial")
        for attr, value in worker_identity().items():
            trial.set_user_attr(attr, value)
        attrs = runs[key]
        folder = (config.study.output_dir / "validation" / attrs["candidate"].replace("#", "-trial-")
                  / f"seed-{attrs['seed']}")
        sections = trial_config(config.base, validation.training_values(), attrs["hyperparameters"],
                                output_dir=folder, seed=attrs["seed"], checkpoint=config.study.checkpoint_trials,
                                save_best_model=validation.save_best_model)
        outcome = train_trial(sections, folder, trial=None, label=f"{label}{key} ",
                              save_best_model=validation.save_best_model,
                              keep_checkpoints=config.study.keep_trial_checkpoints)
        _record(trial, outcome, folder)
        if outcome["diverged"] or not math.isfinite(outcome["best"]):
            raise optuna.TrialPruned()
        return outcome["best"]

    _work(study, objective, len(runs), config, label, before_trial=enqueue_missing)
    return validation_results(config, storage)


def validation_results(config: HPOConfig, storage) -> dict[str, Any]:
    """Per-candidate seed scores, mean ± std and the winner (from the validation study)."""
    study = _load_study(config, storage, "validation")
    selection = study.user_attrs.get(SELECTION_ATTR) if study else None
    if not selection:
        return {}
    scores: dict[str, dict[int, float]] = {c["key"]: {} for c in selection["chosen"]}
    for trial in study.get_trials(deepcopy=False, states=_FINISHED):
        if trial.user_attrs.get("candidate") in scores:
            scores[trial.user_attrs["candidate"]][int(trial.user_attrs["seed"])] = _score(trial)
    summary = summarise_validation(scores)
    params = {c["key"]: c["params"] for c in selection["chosen"]}
    search = {c["key"]: c["score"] for c in selection["chosen"]}
    rows = [{**row, "params": params[row["key"]], "search_score": search[row["key"]]} for row in summary.rows]
    return {"rows": rows, "winner": rows[0] if rows else None}


def _write_winner(config: HPOConfig, winner: dict[str, Any]) -> Path:
    validation = config.validation
    sections = trial_config(config.base, validation.training_values(), winner["params"],
                            output_dir=Path("checkpoints") / f"{config.study.name}_winner", seed=validation.seeds[0],
                            checkpoint=True, save_best_model=True)
    sections["training"].pop("disable_tqdm", None)
    header = (f"# Winner of HPO study {config.study.name}: {winner['key']} "
              f"({winner['mean']:.3f} ± {winner['std']:.3f} dB over seeds {winner['seeds']}; sample std).\n"
              f"#   accelerate launch examples/run_separation.py {WINNER_CONFIG_NAME} --seed 123\n")
    from .analysis import _write_text

    path = config.study.output_dir / WINNER_CONFIG_NAME
    _write_text(path, header + yaml.safe_dump(sections, sort_keys=False))
    return path


def run_study(config: HPOConfig, *, report: bool = True, fail_running: bool = False) -> dict[str, Any]:
    """Run (or resume, or join) the whole study; returns ``{"stages": {name: best}, "validation": ...,
    "winner_config": path, "report": folder}``."""
    import transformers
    from transformers.utils import logging as hf_logging

    # Each trial prints one line per epoch; Trainer's per-trial warnings and checkpoint progress bars would bury
    # it. Both are restored afterwards (run_study may be called inside a larger program).
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return _run_study(config, report=report, fail_running=fail_running)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _run_study(config: HPOConfig, *, report: bool, fail_running: bool) -> dict[str, Any]:
    config.study.output_dir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(config.storage_url(), heartbeat_interval=config.study.heartbeat_interval,
                           grace_period=config.study.grace_period, max_retry=config.study.max_retry)
    print(f"HPO study {config.study.name}: storage {config.storage_url()}, output {config.study.output_dir}",
          flush=True)
    if fail_running:
        callback = retry_callback(config.study.max_retry)
        for name in [s.name for s in config.stages] + ["validation"]:
            study = _load_study(config, storage, name)
            if study is not None:
                failed = fail_running_trials(study, callback)
                if failed:
                    print(f"{study.study_name}: marked running trial(s) {failed} failed and re-queued", flush=True)
    summary: dict[str, Any] = {"stages": {}}
    for index, stage in enumerate(config.stages):
        study = _run_stage(config, storage, index)
        completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        summary["stages"][stage.name] = max((t.value for t in completed), default=None)
    if config.validation is not None:
        results = _run_validation(config, storage)
        summary["validation"] = results
        winner = results.get("winner")
        if winner:
            summary["winner_config"] = str(_write_winner(config, winner))
            spread = f"± {winner['std']:.3f} dB" if math.isfinite(winner["std"]) else "dB (one seed: no spread)"
            print(f"\n=== winner: {winner['key']} {winner['params']}\n    {winner['mean']:.3f} {spread} "
                  f"(seeds {winner['seeds']}: {', '.join(f'{v:.3f}' for v in winner['scores'])}); training config "
                  f"{summary['winner_config']}", flush=True)
    if report:
        from .analysis import write_report

        folder = write_report(config, storage)
        summary["report"] = str(folder)
        print(f"report: {folder / 'summary.md'}", flush=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``polsess-hpo CONFIG.yaml [--output-dir DIR] [--storage URL] [--study-name NAME] [--fail-running]``;
    returns the exit status (0). :func:`run_study` returns the results."""
    parser = argparse.ArgumentParser(
        prog="polsess-hpo",
        description="Progressive data-scaling hyperparameter search (Optuna): stages on growing subsets, pruning "
        "by epochs, diverse top-k, multi-seed validation, report. Run the same command again to resume; run it "
        "in several processes (or machines, with a shared --storage) to add workers.",
    )
    parser.add_argument("config", help="study YAML (see configs/hpo/)")
    parser.add_argument("--output-dir", help="overrides study.output_dir")
    parser.add_argument("--storage", help="Optuna storage URL (sqlite:///..., postgresql://..., journal:FILE); "
                        "default sqlite:///<output_dir>/study.db")
    parser.add_argument("--study-name", help="overrides study.name")
    parser.add_argument("--fail-running", action="store_true",
                        help="mark every RUNNING trial failed and re-queue it first (only when no worker is alive)")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    config = load_hpo_config(args.config, output_dir=args.output_dir, storage=args.storage, study_name=args.study_name)
    run_study(config, report=not args.no_report, fail_running=args.fail_running)
    return 0
