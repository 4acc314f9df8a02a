"""One trial = one real training run through :class:`~polsess_hf.training.SeparationTrainer`.

:func:`trial_config` merges the base config, the stage's settings and the trial's hyperparameters into one
training config (written to the trial folder as ``trial_config.yaml`` and parsed by the trainer's own
:func:`~polsess_hf.training.arguments.parse_config`, so a trial accepts exactly what ``run_separation.py``
accepts). :func:`train_trial` trains it with the same parts as :func:`polsess_hf.training.runner.run` (datasets,
curriculum callback, early stopping) plus :class:`OptunaReportCallback`.

**What the pruner sees.** After every epoch's validation the callback reports the *best* validation score so far
(the quantity the study maximises, as the thesis's ``best_val_sisdr``) at step = epoch, and stops training
cleanly when ``trial.should_prune()`` says so; the trial is then marked pruned. The raw per-epoch curve is kept
in the trial's ``curve`` user attribute (for the report's figures). A trial that has used its whole epoch budget
is never pruned at its last epoch: it has already paid for the full run.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["OptunaReportCallback", "trial_config", "train_trial", "TRIAL_CONFIG_NAME"]

TRIAL_CONFIG_NAME = "trial_config.yaml"


class OptunaReportCallback(TrainerCallback):
    """Report the best validation ``metric_key`` so far to an Optuna ``trial`` after each evaluation (step =
    1-based epoch) and stop training when the pruner says so.

    Args:
        trial: an ``optuna.Trial``, or None to only record the curve (validation runs).
        metric_key: the evaluation key, e.g. ``"eval_si_sdr"``.
        num_epochs: the epoch budget; the last epoch is never pruned.
        label: a prefix for the one-line-per-epoch progress print.

    After training, ``curve`` holds ``[(epoch, value), ...]`` (restored from ``state.log_history`` when the run
    resumed from a checkpoint), ``pruned_at`` the epoch of the prune verdict (or None). NaN values count as
    "no improvement" for the running best.
    """

    def __init__(self, trial, metric_key: str, num_epochs: int, label: str = ""):
        self.trial = trial
        self.metric_key = metric_key
        self.num_epochs = num_epochs
        self.label = label
        self.curve: list[tuple[int, float]] = []
        self.pruned_at: Optional[int] = None

    @property
    def best(self) -> float:
        finite = [v for _, v in self.curve if math.isfinite(v)]
        return max(finite) if finite else math.nan

    @property
    def best_epoch(self) -> Optional[int]:
        finite = [(v, -e) for e, v in self.curve if math.isfinite(v)]
        return -max(finite)[1] if finite else None

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run: the epochs before the checkpoint were evaluated (and reported) by the killed process.
        self.curve = [(int(round(e["epoch"])), float(e[self.metric_key]))
                      for e in state.log_history if self.metric_key in e and "epoch" in e]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = float((metrics or {}).get(self.metric_key, math.nan))
        epoch = int(round(state.epoch or 0))  # evaluation follows the epoch's last step: state.epoch = completed epochs
        self.curve.append((epoch, value))
        best = self.best
        print(f"{self.label}epoch {epoch}/{self.num_epochs}: {self.metric_key} {value:.3f} dB (best {best:.3f})",
              flush=True)
        if self.trial is None:
            return
        if math.isfinite(best):
            self.trial.report(best, step=epoch)
        if epoch < self.num_epochs and self.trial.should_prune():
            self.pruned_at = epoch
            control.should_training_stop = True


def trial_config(
    base: Mapping[str, Any],
    run_values: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    output_dir: Path,
    seed: int,
    checkpoint: bool,
    save_best_model: bool,
) -> dict[str, dict[str, Any]]:
    """The training config of one trial, as ``model``/``data``/``training`` sections.

    Order of precedence: base < stage settings (``run_values``) < hyperparameters (``params``; ``model.<field>``
    goes into ``model_config``) < what the study manages (output folder, seed, one evaluation per epoch,
    checkpointing, no reporting integrations, no Hub push).
    """
    from ..training.arguments import _dataclass_keys

    flat = copy.deepcopy(dict(base))
    model_config = dict(flat.get("model_config") or {})
    for key, value in run_values.items():
        if key == "model_config":
            model_config.update(value or {})
        else:
            flat[key] = copy.deepcopy(value)
    for name, value in params.items():
        if name.startswith("model."):
            model_config[name[len("model."):]] = value
        else:
            flat[name] = value
    flat["model_config"] = model_config
    flat.update(
        output_dir=str(output_dir),
        seed=int(seed),
        eval_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        push_to_hub=False,
        resume_from_checkpoint=None,
        # Checkpoints let a killed trial continue where it stopped; the best one is only kept for validation runs.
        save_strategy="epoch" if (checkpoint or save_best_model) else "no",
        load_best_model_at_end=bool(save_best_model),
        save_total_limit=2 if save_best_model else 1,
    )
    for key in ("train_max_samples", "early_stopping_patience", "curriculum"):
        flat.setdefault(key, None)
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "training": {}}
    keys = _dataclass_keys()
    for key, value in flat.items():
        sections[keys.get(key, "training")][key] = value
    return sections


def _last_checkpoint(folder: Path) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def train_trial(
    config: Mapping[str, Mapping[str, Any]],
    output_dir: Path,
    *,
    trial=None,
    label: str = "",
    save_best_model: bool = False,
    keep_checkpoints: bool = False,
) -> dict[str, Any]:
    """Train one configuration (sections as from :func:`trial_config`) and return its outcome.

    Writes ``<output_dir>/trial_config.yaml``; resumes from the newest ``checkpoint-*`` in ``output_dir`` if there
    is one (a retried trial whose process was killed). ``save_best_model`` saves the best checkpoint to
    ``<output_dir>/best`` (with its training config). Checkpoint folders are removed at the end unless
    ``keep_checkpoints``.

    Returns:
        ``{"best", "best_epoch", "curve", "epochs_run", "pruned_at", "early_stopped", "diverged", "metric_key",
        "resumed_from", "train_seconds"}``. ``diverged`` is the :class:`~polsess_hf.training.NonFiniteLossError`
        message when training diverged (the run ends there, ``best`` is the best before it).
    """
    from transformers import PrinterCallback, ProgressCallback

    from ..training.arguments import parse_config
    from ..training.runner import TRAINING_CONFIG_NAME, build_trainer
    from ..training.trainer import NonFiniteLossError

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / TRIAL_CONFIG_NAME
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    model_args, data_args, training_args = parse_config(config_path)

    trainer, *_ = build_trainer(model_args, data_args, training_args)
    # One line per epoch from OptunaReportCallback replaces Trainer's per-log dict prints (hundreds of trials).
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    metric_key = f"eval_{training_args.metric_for_best_model}"
    epochs = int(math.ceil(training_args.num_train_epochs))
    reporter = OptunaReportCallback(trial, metric_key, epochs, label)
    trainer.add_callback(reporter)

    resume = _last_checkpoint(output_dir)
    if resume:
        print(f"{label}resuming from {resume}", flush=True)
    diverged = None
    start = time.time()
    try:
        trainer.train(resume_from_checkpoint=resume)
    except NonFiniteLossError as error:
        diverged = str(error)
    seconds = time.time() - start
    epochs_run = max((e for e, _ in reporter.curve), default=0)
    early_stopped = (diverged is None and reporter.pruned_at is None and epochs_run < epochs)
    if save_best_model and diverged is None:
        best_dir = output_dir / "best"
        trainer.save_model(str(best_dir))
        shutil.copyfile(config_path, best_dir / TRAINING_CONFIG_NAME)
    if not keep_checkpoints:
        for folder in output_dir.glob("checkpoint-*"):
            shutil.rmtree(folder, ignore_errors=True)
    del trainer
    return {
        "best": reporter.best,
        "best_epoch": reporter.best_epoch,
        "curve": reporter.curve,
        "epochs_run": epochs_run,
        "pruned_at": reporter.pruned_at,
        "early_stopped": early_stopped,
        "diverged": diverged,
        "metric_key": metric_key,
        "resumed_from": resume,
        "train_seconds": round(seconds, 3),
    }
