"""``SeparationTrainer``: ``transformers.Trainer`` for waveform separators, with the thesis's training semantics.

What differs from the stock Trainer (``specs/training.md`` §1–§3, §10):

* **loss**: permutation-invariant negative SI-SDR (:func:`polsess_hf.losses.neg_pit_si_sdr_loss`) for SB; for
  the one-output tasks (ES/EB) negative TM-SISDR (not zero-mean, eps = the dtype's machine epsilon);
* **evaluation** in fp32 under ``no_grad`` (autocast off even in a bf16/fp16 run), SI-SDR and SI-SDRi
  accumulated per batch as sample-weighted sums and summed across processes (never -100-padded concatenation).
  ``eval_dataset`` may be one dataset (pooled validation, the thesis's SER+SE default) or a dict
  ``{variant: dataset}`` (per-variant validation: each variant logged, ``si_sdr``/``si_sdri`` are the unweighted
  means over variants);
* **optimizer**: ``adam_l2`` = ``torch.optim.Adam(all parameters, lr, weight_decay)`` (coupled L2, no exclusions:
  the thesis's tuned weight-decay values assume it) or ``adamw`` (the HF default with its exclusions);
* **scheduler**: :class:`GatedReduceLROnPlateau` (mode max) stepped once per epoch on the monitored metric, only
  while the curriculum's ``lr_scheduler: start`` stage has been reached (:class:`.callbacks.CurriculumCallback`);
* **non-finite losses** skip the step: no backward, no optimizer update (Adam moments and step count untouched,
  the GradScaler reset), counted and logged as ``nonfinite_skipped``; ``max_consecutive_nonfinite`` in a row
  raise :class:`NonFiniteLossError`. Under DDP the decision is agreed across processes, so no rank waits in an
  all-reduce the others skipped;
* **mixed precision**: fp16 uses a GradScaler with ``init_scale = fp16_init_scale`` (256, the thesis's fix);
* **train metrics**: sample-weighted train SI-SDR/SI-SDRi of the finite batches (dropout active), logged per epoch;
* **checkpoints** additionally hold ``separation_state.json`` (skip counters, curriculum, scheduler gate).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer

from ..losses import pit_si_sdr, si_sdr

logger = logging.getLogger(__name__)

__all__ = [
    "SeparationTrainer",
    "GatedReduceLROnPlateau",
    "NonFiniteLossError",
    "separation_loss",
    "batch_metrics",
    "SEPARATION_STATE_NAME",
]

SEPARATION_STATE_NAME = "separation_state.json"


class NonFiniteLossError(RuntimeError):
    """Raised when ``max_consecutive_nonfinite`` training losses in a row were NaN or infinite."""


def _tm_si_sdr(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """torchmetrics' SI-SDR (``zero_mean=False``, eps = fp32 machine epsilon), shape ``(...)`` for ``(..., time)``.

    The thesis's ES/EB loss and the SI-SDRi mixture baseline both use it (``specs/training.md`` §1).
    """
    return si_sdr(estimates, targets, eps=torch.finfo(torch.float32).eps, zero_mean=False)


def separation_loss(estimates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Training loss of one batch: ``estimates``, ``labels`` ``(batch_size, n_src, time_steps)`` → scalar.

    Two or more sources: PIT negative zero-mean SI-SDR (asteroid ``pw_mtx``). One source (ES/EB): negative
    TM-SISDR. Both are batch means.
    """
    if labels.dim() == 2:
        labels = labels.unsqueeze(1)
    if estimates.shape != labels.shape:
        raise ValueError(
            f"estimates {tuple(estimates.shape)} and labels {tuple(labels.shape)} must both be "
            "(batch_size, n_src, time_steps)"
        )
    if estimates.shape[1] == 1:
        return -_tm_si_sdr(estimates[:, 0], labels[:, 0]).mean()
    best, _ = pit_si_sdr(estimates, labels)
    return -best.mean()


@torch.no_grad()
def batch_metrics(estimates: torch.Tensor, labels: torch.Tensor, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example SI-SDR and SI-SDRi (dB), each ``(batch_size,)``, computed in fp32.

    Args:
        estimates: ``(batch_size, n_src, time_steps)``.
        labels: ``(batch_size, n_src, time_steps)``.
        mixture: ``(batch_size, time_steps)``, the model input.

    SI-SDR is the training loss's quantity (PIT zero-mean for SB, TM-SISDR for ES/EB). The SI-SDRi baseline is
    TM-SISDR(mixture, source) averaged over sources: not zero-mean while the SB estimate side is — the thesis's
    mismatch, kept so the numbers compare (``specs/training.md`` §1).
    """
    estimates, labels, mixture = estimates.float(), labels.float(), mixture.float()
    if labels.dim() == 2:
        labels = labels.unsqueeze(1)
    length = min(estimates.shape[-1], labels.shape[-1], mixture.shape[-1])
    estimates, labels, mixture = estimates[..., :length], labels[..., :length], mixture[..., :length]
    if estimates.shape[1] == 1:
        score = _tm_si_sdr(estimates[:, 0], labels[:, 0])
    else:
        score, _ = pit_si_sdr(estimates, labels)
    baseline = _tm_si_sdr(mixture.unsqueeze(1).expand_as(labels), labels).mean(dim=1)
    return score, score - baseline


class GatedReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` whose ``step(metric)`` does nothing while ``enabled`` is False.

    The curriculum callback opens the gate at the stage marked ``lr_scheduler: start`` (without a curriculum it
    is always open). The gate is part of ``state_dict`` so a resumed run continues exactly.
    """

    def __init__(self, optimizer, *args, enabled: bool = True, **kwargs):
        super().__init__(optimizer, *args, **kwargs)
        self.enabled = enabled

    def step(self, metrics, epoch=None):  # noqa: D102 - see class docstring
        if not self.enabled:
            return
        if epoch is None:
            super().step(metrics)
        else:  # pragma: no cover - deprecated torch argument
            super().step(metrics, epoch)

    def get_last_lr(self):  # ReduceLROnPlateau has _last_lr only after the first step in some torch versions
        return [group["lr"] for group in self.optimizer.param_groups]


class _VariantEvalSets:
    """Marker for per-variant validation: ``{variant: dataset}``; not a ``dict`` so Trainer leaves it to us."""

    def __init__(self, datasets: Mapping[str, Dataset]):
        if not datasets:
            raise ValueError("per-variant validation needs at least one variant dataset")
        self.datasets = dict(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())


class SeparationTrainer(Trainer):
    """``Trainer`` for separators ``model(input_values (B, T), labels (B, n_src, T)) -> SeparationOutput``.

    Args (beyond ``Trainer``'s): ``args`` must be :class:`.arguments.SeparationTrainingArguments` (or carry its
    fields); ``eval_dataset`` may be a dict ``{variant: dataset}`` for per-variant validation. ``model_type``
    selects the AMP dtype under ``precision: auto`` (default: ``model.config.model_type``);
    ``eval_data_collator`` batches validation items (default: ``data_collator``).
    """

    def __init__(self, *args, model_type: Optional[str] = None, eval_data_collator=None, **kwargs):
        eval_dataset = kwargs.get("eval_dataset")
        if isinstance(eval_dataset, Mapping):
            kwargs["eval_dataset"] = _VariantEvalSets(eval_dataset)
        super().__init__(*args, **kwargs)
        self.model_type = model_type or getattr(getattr(self.model, "config", None), "model_type", None)
        self.nonfinite_skipped = 0
        self.consecutive_nonfinite = 0
        self._skip_optimizer_step = False
        self._train_sums = torch.zeros(3, dtype=torch.float64)  # [Σ SI-SDR, Σ SI-SDRi, n] of finite batches
        self._train_skipped_since_log = 0
        self.curriculum_state: dict[str, Any] = {}
        # Validation stacks whole clips even when training crops (data_collator may be a crop collator).
        self.eval_data_collator = eval_data_collator if eval_data_collator is not None else self.data_collator

    # --- mixed precision -------------------------------------------------------------------------------------
    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        scaler = getattr(self.accelerator, "scaler", None)
        init_scale = getattr(self.args, "fp16_init_scale", None)
        if scaler is not None and init_scale is not None and self.accelerator.mixed_precision == "fp16":
            # The thesis's fix for fp16 NaNs: start the loss scale at 256, not 65536.
            self.accelerator.scaler = torch.amp.GradScaler(self.accelerator.device.type, init_scale=init_scale)

    # --- optimizer and scheduler -----------------------------------------------------------------------------
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None and getattr(self.args, "optimizer_type", "adamw") == "adam_l2":
            opt_model = self.model if model is None else model
            params = [p for p in opt_model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.Adam(
                params,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
                weight_decay=self.args.weight_decay,
            )
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer: Optional[torch.optim.Optimizer] = None):
        if self.lr_scheduler is None and str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)) == "reduce_lr_on_plateau":
            kwargs = dict(self.args.lr_scheduler_kwargs or {})
            kwargs.setdefault("mode", "max")
            self.lr_scheduler = GatedReduceLROnPlateau(self.optimizer if optimizer is None else optimizer, **kwargs)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # --- training step with the non-finite guard -------------------------------------------------------------
    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        self._install_step_guard()
        if resume_from_checkpoint is not None:
            self._load_separation_state(resume_from_checkpoint)
        return model, train_dataloader

    def _install_step_guard(self) -> None:
        """Make ``self.optimizer.step()`` a no-op after a skipped (non-finite) batch.

        Trainer calls ``optimizer.step()`` unconditionally; with no gradients torch's Adam would skip the
        parameters anyway, but an fp16 GradScaler asserts that it recorded inf checks, so the skip happens
        before the accelerate wrapper and the scaler's per-step state is reset instead.
        """
        optimizer = self.optimizer
        if getattr(optimizer, "_separation_guarded", False):
            return
        original_step = optimizer.step

        def guarded_step(*args, **kwargs):
            if self._skip_optimizer_step:
                self._skip_optimizer_step = False
                scaler = getattr(self.accelerator, "scaler", None)
                if scaler is not None:
                    from torch.amp.grad_scaler import _refresh_per_optimizer_state

                    scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)
                return None
            return original_step(*args, **kwargs)

        optimizer.step = guarded_step
        optimizer._separation_guarded = True

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """Forward the batch and return the separation loss (see :func:`separation_loss`)."""
        outputs = model(input_values=inputs["input_values"])
        estimates = outputs["estimates"] if isinstance(outputs, Mapping) else outputs.estimates
        loss = separation_loss(estimates, inputs["labels"].to(estimates.dtype))
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.accelerator.num_processes > 1:
            # Every rank must agree: a rank that skipped backward would leave the others waiting in all-reduce.
            finite = self.accelerator.reduce(finite.reshape(1), reduction="sum") / self.accelerator.num_processes
            finite = (finite >= 1.0).to(torch.float32).reshape(())
        if finite.item() < 1.0:
            self._skip_nonfinite(loss)
            return loss.detach().to(self.args.device)
        self.consecutive_nonfinite = 0
        estimates = outputs["estimates"] if isinstance(outputs, Mapping) else outputs.estimates
        score, improvement = batch_metrics(estimates.detach(), inputs["labels"], inputs["input_values"])
        self._train_sums += torch.tensor([score.sum().item(), improvement.sum().item(), score.numel()], dtype=torch.float64)
        if self.args.gradient_accumulation_steps > 1:
            loss = loss / self.args.gradient_accumulation_steps
        self.accelerator.backward(loss)
        return loss.detach()

    def _skip_nonfinite(self, loss: torch.Tensor) -> None:
        # Drop the batch and everything accumulated so far (the thesis's zero_grad), skip the optimizer step.
        self.model.zero_grad(set_to_none=True)
        self._skip_optimizer_step = True
        self.nonfinite_skipped += 1
        self.consecutive_nonfinite += 1
        self._train_skipped_since_log += 1
        logger.warning(
            "non-finite training loss (%s) at global step %d: batch skipped (%d consecutive, %d in total)",
            float(loss.detach().float().item()), self.state.global_step, self.consecutive_nonfinite,
            self.nonfinite_skipped,
        )
        limit = getattr(self.args, "max_consecutive_nonfinite", 1000)
        if self.consecutive_nonfinite >= limit:
            raise NonFiniteLossError(
                f"{self.consecutive_nonfinite} consecutive non-finite training losses (max_consecutive_nonfinite="
                f"{limit}) at global step {self.state.global_step}, epoch {self.state.epoch:.2f}: training diverged. "
                "Lower learning_rate or max_grad_norm, or train in fp32 (precision: no); the last good "
                f"checkpoint is in {self.args.output_dir}."
            )

    # --- logging ---------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        if "loss" in logs:  # a training log: add the epoch's sample-weighted train metrics
            sums = self._train_sums.clone()
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum").cpu()
            if sums[2] > 0:
                logs["train_si_sdr"] = float(sums[0] / sums[2])
                logs["train_si_sdri"] = float(sums[1] / sums[2])
            logs["nonfinite_skipped"] = self.nonfinite_skipped
            self._train_sums.zero_()
            self._train_skipped_since_log = 0
        super().log(logs, start_time)

    # --- evaluation ------------------------------------------------------------------------------------------
    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        """Each process evaluates a disjoint strided share (no padding duplicates); sums are reduced after."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        indices = list(range(rank, len(dataset), world))
        return DataLoader(
            torch.utils.data.Subset(dataset, indices),
            batch_size=self.args.per_device_eval_batch_size,
            shuffle=False,
            collate_fn=self.eval_data_collator,
            num_workers=self.args.dataloader_num_workers,
        )

    @torch.no_grad()
    def _evaluate_dataset(self, dataset: Dataset) -> tuple[float, float, int]:
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        device = self.args.device
        try:
            # fp32 forward: autocast off, and the class's forward (accelerate patches the instance's forward
            # with an autocast wrapper in mixed-precision runs).
            with torch.autocast(device_type=device.type, enabled=False):
                for batch in self._eval_loader(dataset):
                    mixture = batch["input_values"].to(device, torch.float32)
                    labels = batch["labels"].to(device, torch.float32)
                    outputs = type(model).forward(model, input_values=mixture)
                    score, improvement = batch_metrics(outputs.estimates, labels, mixture)
                    sums += torch.tensor(
                        [score.double().sum().item(), improvement.double().sum().item(), score.numel()],
                        dtype=torch.float64,
                    )
        finally:
            model.train(was_training)
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums.to(device), reduction="sum").cpu()
        count = int(sums[2].item())
        if count == 0:
            raise ValueError("the validation set is empty: nothing to evaluate")
        return float(sums[0] / count), float(sums[1] / count), count

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Validation SI-SDR/SI-SDRi in fp32. A dict / per-variant set gives per-variant metrics plus the
        unweighted means over variants as ``{prefix}_si_sdr`` / ``{prefix}_si_sdri``."""
        import time

        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs an eval_dataset (pooled dataset or {variant: dataset})")
        if isinstance(dataset, Mapping):
            dataset = _VariantEvalSets(dataset)
        start = time.time()
        metrics: dict[str, float] = {}
        if isinstance(dataset, _VariantEvalSets):
            per_sdr, per_sdri = [], []
            for variant, variant_dataset in dataset.datasets.items():
                sdr, sdri, count = self._evaluate_dataset(variant_dataset)
                metrics[f"{metric_key_prefix}_si_sdr_{variant}"] = sdr
                metrics[f"{metric_key_prefix}_si_sdri_{variant}"] = sdri
                per_sdr.append(sdr)
                per_sdri.append(sdri)
            metrics[f"{metric_key_prefix}_si_sdr"] = float(np.mean(per_sdr))
            metrics[f"{metric_key_prefix}_si_sdri"] = float(np.mean(per_sdri))
            metrics[f"{metric_key_prefix}_samples"] = len(dataset)
        else:
            sdr, sdri, count = self._evaluate_dataset(dataset)
            metrics[f"{metric_key_prefix}_si_sdr"] = sdr
            metrics[f"{metric_key_prefix}_si_sdri"] = sdri
            metrics[f"{metric_key_prefix}_samples"] = count
        metrics[f"{metric_key_prefix}_loss"] = -metrics[f"{metric_key_prefix}_si_sdr"]
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # --- checkpoints -----------------------------------------------------------------------------------------
    def separation_state(self) -> dict[str, Any]:
        """What Trainer's own checkpoint files do not hold: skip counters, curriculum stage, scheduler gate."""
        scheduler = self.lr_scheduler
        return {
            "nonfinite_skipped": self.nonfinite_skipped,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "lr_scheduler_enabled": bool(getattr(scheduler, "enabled", True)),
            "curriculum": self.curriculum_state,
            "model_type": self.model_type,
        }

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if os.path.isdir(folder):
                with open(os.path.join(folder, SEPARATION_STATE_NAME), "w", encoding="utf-8") as handle:
                    json.dump(self.separation_state(), handle, indent=2)

    def _load_separation_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, SEPARATION_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning("%s has no %s: skip counters start at 0", checkpoint, SEPARATION_STATE_NAME)
            return
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        self.nonfinite_skipped = int(state.get("nonfinite_skipped", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))
        if hasattr(self.lr_scheduler, "enabled"):
            self.lr_scheduler.enabled = bool(state.get("lr_scheduler_enabled", True))
        self.curriculum_state = dict(state.get("curriculum") or {})

