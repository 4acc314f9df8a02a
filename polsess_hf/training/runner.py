"""The training entry point behind ``accelerate launch examples/run_separation.py CONFIG.yaml [--key value ...]``.

Steps: parse the YAML + CLI (:func:`.arguments.parse_config`), seed, (optionally) generate the mini corpus,
load the PolSESS splits, build the model after seeding, train with :class:`.trainer.SeparationTrainer`, keep and
load the best checkpoint, save it to ``<output_dir>/best`` with the training config, write
``<output_dir>/results.json`` and print a summary. ``resume_from_checkpoint: last`` continues from the newest
checkpoint in ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .arguments import config_as_dict, parse_config

logger = logging.getLogger(__name__)

__all__ = ["main", "run", "build_datasets", "TRAINING_CONFIG_NAME", "RESULTS_NAME"]

TRAINING_CONFIG_NAME = "training_config.yaml"
RESULTS_NAME = "results.json"


def _print(message: str, args) -> None:
    if args.process_index == 0:
        print(message, flush=True)


def _ensure_corpus(data_args, training_args) -> Path:
    if data_args.data_root is None:
        raise ValueError("data_root is not set: give it in the YAML, with --data_root, or as env POLSESS_DATA_ROOT")
    root = Path(data_args.data_root)
    if not (root / "train").is_dir():
        if not data_args.make_mini_corpus:
            raise FileNotFoundError(
                f"data_root {root} has no train/ folder; point data_root at a PolSESS corpus or set "
                "make_mini_corpus: true to generate the mini corpus there"
            )
        rows = list(data_args.mini_corpus_rows)
        if len(rows) != 3:
            raise ValueError(f"mini_corpus_rows must be [train, val, test], got {rows}")
        with training_args.main_process_first(desc="mini corpus generation"):
            if not (root / "train").is_dir():
                from ..data import make_mini_polsess

                _print(f"generating the mini corpus ({rows[0]}/{rows[1]}/{rows[2]} rows) at {root}", training_args)
                make_mini_polsess(root, int(rows[0]), int(rows[1]), int(rows[2]), seed=0)
    return root


def build_datasets(data_args, training_args):
    """Return ``(train_dataset, eval_dataset, curriculum)``; ``eval_dataset`` is a dict in per-variant mode."""
    from ..data import ALL_VARIANTS, load_polsess, resolve_curriculum

    root = _ensure_corpus(data_args, training_args)
    common = dict(task=data_args.task, cache_dir=data_args.cache_dir)
    curriculum = resolve_curriculum(data_args.curriculum, task=data_args.task)
    with training_args.main_process_first(desc="dataset preparation"):
        train = load_polsess(
            root, "train", curriculum=curriculum, variants=data_args.train_variants,
            max_samples=data_args.train_max_samples, seed=training_args.seed, **common,
        )
        if data_args.per_variant_validation:
            chosen = data_args.validation_variants
            order = [v for v in ALL_VARIANTS if chosen is None or v in chosen]
            evaluation = {
                v: load_polsess(root, "val", variant=v, max_samples=data_args.val_max_samples, **common) for v in order
            }
        else:
            evaluation = load_polsess(
                root, "val", variants=data_args.validation_variants, max_samples=data_args.val_max_samples, **common
            )
    return train, evaluation, curriculum


def _resolve_resume(value: Optional[str], output_dir: str) -> Optional[str]:
    if value in (None, "", "none", "None", "false", "False"):
        return None
    if value in ("last", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise FileNotFoundError(f"resume_from_checkpoint={value!r} but {output_dir} holds no checkpoint-* folder")
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint {value!r} is not a checkpoint folder")
    return value


def _best_epoch(state) -> Optional[int]:
    """The epoch (1-based) whose evaluation produced ``state.best_metric``."""
    if state.best_model_checkpoint is None:
        return None
    step = int(state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])
    for entry in state.log_history:
        if entry.get("step") == step and "epoch" in entry:
            return int(round(entry["epoch"]))
    return None


def build_trainer(model_args, data_args, training_args):
    """The seeded model, datasets and :class:`SeparationTrainer` of a run, with the curriculum and early-stopping
    callbacks attached (shared by :func:`run` and the HPO trials). Returns ``(trainer, train, evaluation,
    curriculum, precision)``."""
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    from ..data import SeparationCollator
    from .callbacks import CurriculumCallback, EpochDatasetView
    from .trainer import SeparationTrainer

    precision = training_args.resolve_precision(model_args.model_type, torch.cuda.is_available() and not training_args.use_cpu)
    training_args.fp16 = precision == "fp16"
    training_args.bf16 = precision == "bf16"
    training_args.mixed_precision = precision

    set_seed(training_args.seed)
    train, evaluation, curriculum = build_datasets(data_args, training_args)
    # Model after set_seed: initial weights follow the seed (Trainer seeds only later).
    model = model_args.build_model(data_args.task)

    sample_rate = model.config.sampling_rate
    if data_args.train_segment_seconds:
        train_collator = SeparationCollator("crop", segment_samples=int(round(data_args.train_segment_seconds * sample_rate)))
    else:
        train_collator = SeparationCollator("stack")

    trainer = SeparationTrainer(
        model=model,
        args=training_args,
        train_dataset=EpochDatasetView(train),
        eval_dataset=evaluation,
        data_collator=train_collator,
        eval_data_collator=SeparationCollator("stack"),
        model_type=model_args.model_type,
    )
    trainer.add_callback(CurriculumCallback(train, curriculum, trainer=trainer))
    if training_args.early_stopping_patience:
        # threshold 0: strict improvement (monitor > best), no minimum delta, as the thesis.
        trainer.add_callback(EarlyStoppingCallback(training_args.early_stopping_patience, early_stopping_threshold=0.0))
    return trainer, train, evaluation, curriculum, precision


def run(model_args, data_args, training_args) -> dict[str, Any]:
    """Train with parsed arguments; returns the results dict (also written to ``results.json``)."""
    import torch

    # The Trainer's own push (a repo created at start, uploads at every save) is replaced by one push of the best
    # checkpoint with its model card at the end, so a Hub outage can never stop or lose a training run.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    trainer, train, evaluation, curriculum, precision = build_trainer(model_args, data_args, training_args)
    n_params = sum(p.numel() for p in trainer.model.parameters())

    n_val = sum(len(d) for d in evaluation.values()) if isinstance(evaluation, dict) else len(evaluation)
    _print(
        "\n".join(
            [
                f"model: {model_args.model_type} ({n_params / 1e6:.3f} M parameters, {n_params:,})",
                f"task: {data_args.task}; train items: {len(train)}; validation items: {n_val} "
                + (f"({', '.join(f'{k}: {len(v)}' for k, v in evaluation.items())})" if isinstance(evaluation, dict)
                   else f"(variants {data_args.validation_variants})"),
                f"curriculum: {curriculum.to_config() if curriculum else 'none (every variant, LR scheduler on)'}",
                f"optimizer: {training_args.optimizer_type} lr={training_args.learning_rate} "
                f"weight_decay={training_args.weight_decay} clip={training_args.max_grad_norm}; precision: {precision}; "
                f"monitor: eval_{training_args.metric_for_best_model}; seed {training_args.seed}",
                f"processes: {training_args.world_size} ({training_args.parallel_mode.value.replace('distributed', 'ddp')})",
            ]
        ),
        training_args,
    )

    config = config_as_dict(model_args, data_args, training_args)
    output_dir = Path(training_args.output_dir)
    if training_args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / TRAINING_CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    resume = _resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer.train(resume_from_checkpoint=resume)

    state = trainer.state
    best_dir = output_dir / "best"
    trainer.save_model(str(best_dir))  # the best checkpoint is loaded at the end (load_best_model_at_end)
    results = {
        "best_epoch": _best_epoch(state),
        "best_metric_name": f"eval_{training_args.metric_for_best_model}",
        "best_metric": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
        "best_model_dir": str(best_dir),
        "epochs_run": state.epoch,
        "global_step": state.global_step,
        "nonfinite_skipped": trainer.nonfinite_skipped,
        "num_parameters": n_params,
        "history": [
            {k: v for k, v in entry.items() if k.startswith("eval_si_sdr") or k in ("epoch",)}
            for entry in state.log_history if "eval_si_sdr" in entry
        ],
    }
    if training_args.process_index == 0:
        (best_dir / TRAINING_CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        best_eval = next(
            (e for e in state.log_history if e.get(results["best_metric_name"]) == state.best_metric), {}
        )
        results["best_eval"] = {k: v for k, v in best_eval.items() if k.startswith("eval_si_sdr")}
        (output_dir / RESULTS_NAME).write_text(json.dumps(results, indent=2), encoding="utf-8")
        if push_to_hub:
            from .hub import push_best_model

            results["hub_url"] = push_best_model(trainer, best_dir, config, results)
            (output_dir / RESULTS_NAME).write_text(json.dumps(results, indent=2), encoding="utf-8")
        _print(
            "\n=== results ===\n"
            f"best epoch: {results['best_epoch']}  {results['best_metric_name']} = {results['best_metric']:.3f} dB\n"
            + "".join(f"  {k} = {v:.3f} dB\n" for k, v in results.get("best_eval", {}).items())
            + f"best model: {best_dir}\nresults: {output_dir / RESULTS_NAME}",
            training_args,
        )
    _finish_wandb(training_args, results)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # End every rank together (a rank can abort at exit otherwise, environment.md).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def _finish_wandb(training_args, results: dict[str, Any]) -> None:
    """Put the run's result in the W&B summary and close the run: the Trainer's callback leaves it open, so its
    summary would never be written (offline runs) and a second run in the same process would log into it."""
    if "wandb" not in (training_args.report_to or []) or training_args.process_index != 0:
        return
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({f"best/{results['best_metric_name']}": results["best_metric"],
                                  "best/epoch": results["best_epoch"]})
        wandb.finish()


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``run_separation.py [CONFIG.yaml] [--key value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        from transformers import HfArgumentParser

        from .arguments import DataArguments, ModelArguments, SeparationTrainingArguments

        HfArgumentParser((ModelArguments, DataArguments, SeparationTrainingArguments)).print_help()
        raise SystemExit(0)
    config_path = None
    if argv and not argv[0].startswith("--"):
        config_path, argv = argv[0], argv[1:]
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_config(config_path, argv)
    return run(model_args, data_args, training_args)
