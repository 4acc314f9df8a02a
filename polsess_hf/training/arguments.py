"""Argument dataclasses of the training entry point: model, data and training (``HfArgumentParser``).

One YAML file holds all three (as sections ``model:``, ``data:``, ``training:`` or flat); command-line flags
``--key value`` override it; an unknown key in either place is an error that names it. See
:func:`parse_config` and ``examples/run_separation.py``.

Defaults follow the thesis (``specs/training.md`` §5): lr 1e-3, weight decay 1e-4 as **coupled L2 Adam**,
gradient clipping 5.0, ReduceLROnPlateau(max, factor 0.95, patience 2) gated by the curriculum, evaluation and
checkpointing every epoch, the best checkpoint by validation SI-SDR (SI-SDRi in per-variant mode) kept and
loaded at the end, seed 42.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from transformers import HfArgumentParser, TrainingArguments

__all__ = [
    "ModelArguments",
    "DataArguments",
    "SeparationTrainingArguments",
    "parse_config",
    "load_yaml_config",
    "OPTIMIZERS",
    "PRECISION_MODES",
    "BF16_MODEL_TYPES",
]

#: ``adam_l2``: torch Adam with coupled L2 weight decay on every parameter (the thesis; its tuned weight-decay
#: values only mean something with it). ``adamw``: decoupled decay, biases and norms excluded (HF default).
OPTIMIZERS = ("adam_l2", "adamw")
#: Training precision (``precision`` key; Trainer's own ``mixed_precision`` attribute is derived from it).
#: ``auto``: on GPU bf16 for the Mamba family, fp16 (GradScaler, initial scale 256) for the others; fp32 on CPU.
PRECISION_MODES = ("auto", "no", "fp16", "bf16")
#: Model types trained in bf16 under ``precision: auto`` (the thesis's dispatch, keyed on model_type).
BF16_MODEL_TYPES = ("spmamba", "mamba_tasnet", "dpmamba", "mossformer2")


def _parse_structured(value: Any, what: str) -> Any:
    """A dict/list given on the command line arrives as a JSON or YAML string; YAML files give it parsed."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ValueError(f"{what} must be a YAML/JSON mapping or list, got {value!r}: {error}") from None


@dataclass
class ModelArguments:
    """Which separator to build: ``model_type`` (a registered architecture), an optional named preset and
    per-key overrides of its config (``model_config``)."""

    model_type: str = field(
        default="convtasnet", metadata={"help": "Registered architecture: convtasnet, dprnn, sepformer, spmamba."}
    )
    model_preset: Optional[str] = field(
        default=None, metadata={"help": "Named preset of the architecture's config (e.g. thesis, paper-best)."}
    )
    model_config: dict | str | None = field(
        default=None,
        metadata={"help": "Config overrides as a mapping (YAML) or a JSON string on the command line."},
    )
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Start from a saved model (folder or Hub id) instead of a fresh one."}
    )

    def __post_init__(self):
        self.model_config = _parse_structured(self.model_config, "model_config") or {}
        if not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a mapping of config keys to values, got {self.model_config!r}")

    def build_model(self, task: str):
        """Build the model (after ``set_seed``, so initial weights follow the seed). ``n_src`` comes from ``task``."""
        from ..data import TASK_N_SRC
        from ..models import MODEL_CLASSES

        n_src = TASK_N_SRC[task]
        if self.model_name_or_path:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(self.model_name_or_path)
            if model.config.n_src != n_src:
                raise ValueError(
                    f"model_name_or_path {self.model_name_or_path!r} has n_src={model.config.n_src} but task "
                    f"{task!r} needs n_src={n_src}"
                )
            return model
        if self.model_type not in MODEL_CLASSES:
            raise ValueError(f"model_type {self.model_type!r} is not registered; known: {sorted(MODEL_CLASSES)}")
        config_class, model_class = MODEL_CLASSES[self.model_type]
        if "n_src" in self.model_config and self.model_config["n_src"] != n_src:
            raise ValueError(
                f"model_config.n_src={self.model_config['n_src']} contradicts task {task!r} (n_src={n_src}); "
                "the task sets the number of outputs"
            )
        overrides = {**self.model_config, "n_src": n_src}
        if self.model_preset:
            config = config_class.from_preset(self.model_preset, **overrides)
        else:
            config = config_class(**overrides)
        return model_class(config)


@dataclass
class DataArguments:
    """PolSESS data: corpus root, task, subsets, validation pool and the curriculum."""

    data_root: Optional[str] = field(
        default=None, metadata={"help": "Corpus root (train/, val/, test/); default: env POLSESS_DATA_ROOT."}
    )
    task: str = field(default="SB", metadata={"help": "SB (2 speakers), EB (both as one) or ES (speaker 1)."})
    train_max_samples: Optional[int] = field(default=None, metadata={"help": "First N training rows."})
    val_max_samples: Optional[int] = field(default=None, metadata={"help": "First N validation rows."})
    validation_variants: list | str | None = field(
        default_factory=lambda: ["SER", "SE"],
        metadata={"help": "Pooled validation variants (default SER+SE); the per-variant list filter when "
                  "per_variant_validation (null = all 8)."},
    )
    per_variant_validation: bool = field(
        default=False, metadata={"help": "Validate each variant separately; monitor the mean SI-SDRi."}
    )
    curriculum: list | str | None = field(
        default=None,
        metadata={"help": "Curriculum: a name (standard, standard_1_3_6, ...) or a list of {epoch, variants, "
                  "lr_scheduler?}. None: every variant, LR scheduler always on."},
    )
    train_variants: list | str | None = field(
        default=None, metadata={"help": "Training variants without a curriculum (None = all)."}
    )
    train_segment_seconds: Optional[float] = field(
        default=None, metadata={"help": "Train on random crops of this length (None: whole 4 s clips, thesis)."}
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where the prepared Arrow index goes."})
    make_mini_corpus: bool = field(
        default=False, metadata={"help": "Generate the mini corpus at data_root if it is absent."}
    )
    mini_corpus_rows: list | str | None = field(
        default_factory=lambda: [200, 50, 50], metadata={"help": "[train, val, test] rows of the mini corpus."}
    )

    def __post_init__(self):
        from ..data import TASKS

        if self.data_root is None:
            self.data_root = os.environ.get("POLSESS_DATA_ROOT")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        self.validation_variants = _parse_structured(self.validation_variants, "validation_variants")
        self.curriculum = _parse_structured(self.curriculum, "curriculum")
        if isinstance(self.curriculum, str) and self.curriculum.lower() in ("none", "null", ""):
            self.curriculum = None
        self.train_variants = _parse_structured(self.train_variants, "train_variants")
        self.mini_corpus_rows = _parse_structured(self.mini_corpus_rows, "mini_corpus_rows")
        if self.curriculum is not None and self.train_variants is not None:
            raise ValueError("give either curriculum or train_variants, not both (the curriculum picks the variants)")
        if self.train_segment_seconds is not None and self.train_segment_seconds <= 0:
            raise ValueError(f"train_segment_seconds must be > 0, got {self.train_segment_seconds}")


@dataclass
class SeparationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the thesis's defaults and the separation-specific knobs."""

    output_dir: Optional[str] = field(default="checkpoints/run", metadata={"help": "Checkpoints and logs."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Initial learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 (adam_l2) or decoupled (adamw) decay."})
    max_grad_norm: float = field(default=5.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    num_train_epochs: float = field(default=10, metadata={"help": "Epochs."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=4, metadata={"help": "Validation batch size per process."})
    lr_scheduler_type: str = field(
        default="reduce_lr_on_plateau", metadata={"help": "reduce_lr_on_plateau (thesis) or any HF scheduler."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "Validate every epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch (exact resume)."})
    logging_strategy: str = field(default="epoch", metadata={"help": "Log train metrics every epoch."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Keep the best and the last checkpoint."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Load the best checkpoint at the end."})
    metric_for_best_model: Optional[str] = field(
        default=None, metadata={"help": "Default: si_sdr (pooled validation) or si_sdri (per-variant)."}
    )
    greater_is_better: Optional[bool] = field(default=True, metadata={"help": "SI-SDR: higher is better."})
    seed: int = field(default=42, metadata={"help": "Seed (thesis: 42, 123, 456)."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "tensorboard, wandb, none."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Items carry metadata; keep them."})
    ddp_find_unused_parameters: Optional[bool] = field(default=False, metadata={"help": "Every parameter is used."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})

    optimizer_type: str = field(default="adam_l2", metadata={"help": f"One of {list(OPTIMIZERS)}."})
    lr_factor: float = field(default=0.95, metadata={"help": "ReduceLROnPlateau factor."})
    lr_patience: int = field(default=2, metadata={"help": "ReduceLROnPlateau patience (epochs)."})
    early_stopping_patience: Optional[int] = field(
        default=None, metadata={"help": "Stop after this many epochs without strict improvement (None: off)."}
    )
    precision: str = field(default="auto", metadata={"help": f"One of {list(PRECISION_MODES)}."})
    fp16_init_scale: float = field(default=256.0, metadata={"help": "Initial GradScaler scale for fp16."})
    max_consecutive_nonfinite: int = field(
        default=1000, metadata={"help": "Abort after this many consecutive non-finite losses (skipped batches)."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the best checkpoint and model card at the end."})

    def __post_init__(self):
        if self.optimizer_type not in OPTIMIZERS:
            raise ValueError(f"optimizer_type must be one of {list(OPTIMIZERS)}, got {self.optimizer_type!r}")
        if self.precision not in PRECISION_MODES:
            raise ValueError(f"precision must be one of {list(PRECISION_MODES)}, got {self.precision!r}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.lr_patience < 0:
            raise ValueError(f"lr_patience must be ≥ 0, got {self.lr_patience}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be ≥ 1 or null, got {self.early_stopping_patience}")
        if self.max_consecutive_nonfinite < 1:
            raise ValueError(f"max_consecutive_nonfinite must be ≥ 1, got {self.max_consecutive_nonfinite}")
        if self.lr_scheduler_type == "reduce_lr_on_plateau":
            # Trainer does not infer the direction: SI-SDR is maximised (environment.md).
            kwargs = _parse_structured(self.lr_scheduler_kwargs, "lr_scheduler_kwargs") or {}
            self.lr_scheduler_kwargs = {"mode": "max", "factor": self.lr_factor, "patience": self.lr_patience, **kwargs}
        if self.metric_for_best_model is None:
            self.metric_for_best_model = "si_sdr"
        if self.report_to in ("none", "None", None):
            self.report_to = "none"
        if self.dataloader_pin_memory:
            import torch

            # Pinned memory only helps host→GPU copies; without a GPU, torch warns at every DataLoader.
            self.dataloader_pin_memory = torch.cuda.is_available()
        super().__post_init__()

    def resolve_precision(self, model_type: str, cuda: bool) -> str:
        """The precision actually used: ``"no"``, ``"fp16"`` or ``"bf16"``."""
        if self.precision == "auto":
            if not cuda:
                return "no"
            return "bf16" if model_type in BF16_MODEL_TYPES else "fp16"
        if self.precision == "fp16" and not cuda:
            raise ValueError("precision fp16 needs a CUDA GPU; on CPU use bf16 or no")
        return self.precision


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config YAML: sections ``model``/``data``/``training`` (any subset) or flat keys; returns flat keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("model", "data", "training") and isinstance(value, dict):
            for inner, inner_value in value.items():
                if inner in flat:
                    raise ValueError(f"{path}: key {inner!r} appears twice (in section {key!r} and before)")
                flat[inner] = inner_value
        else:
            if key in flat:
                raise ValueError(f"{path}: key {key!r} appears twice")
            flat[key] = value
    return flat


def _dataclass_keys() -> dict[str, str]:
    keys = {}
    for name, cls in (("model", ModelArguments), ("data", DataArguments), ("training", SeparationTrainingArguments)):
        for f in fields(cls):
            if f.init:
                keys[f.name] = name
    return keys


def parse_config(
    config_path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()
) -> tuple[ModelArguments, DataArguments, SeparationTrainingArguments]:
    """YAML (``config_path``) < command-line ``overrides`` (``["--lr", ...]`` style ``--key value`` flags).

    Raises:
        ValueError: unknown keys in the YAML or on the command line (named, with the file).
    """
    values: dict[str, Any] = load_yaml_config(config_path) if config_path else {}
    known = _dataclass_keys()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{config_path}: unknown config key(s) {unknown}; see `python examples/run_separation.py --help` for "
            "the model, data and training keys"
        )
    parser = HfArgumentParser((ModelArguments, DataArguments, SeparationTrainingArguments))
    # YAML values become argparse defaults: CLI flags then override them with ordinary type conversion.
    # Structured values (lists/dicts) are passed as YAML text so that the dataclass parses one form only.
    defaults = {k: (yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, (list, dict)) else v)
                for k, v in values.items()}
    parser.set_defaults(**defaults)
    model_args, data_args, training_args, remaining = parser.parse_args_into_dataclasses(
        args=list(overrides), return_remaining_strings=True
    )
    if remaining:
        raise ValueError(f"unknown command-line argument(s) {remaining}; every key must be a model, data or training key")
    if data_args.per_variant_validation and training_args.metric_for_best_model == "si_sdr" and \
            "metric_for_best_model" not in values and "--metric_for_best_model" not in overrides:
        # Per-variant mode monitors the unweighted mean SI-SDRi, as the thesis's 128k sweeps did.
        training_args.metric_for_best_model = "si_sdri"
    return model_args, data_args, training_args


def config_as_dict(model_args, data_args, training_args) -> dict[str, dict[str, Any]]:
    """The three sections as plain data (written next to checkpoints and pushed with the model)."""
    training = {}
    for f in fields(SeparationTrainingArguments):
        if not f.init:
            continue
        value = getattr(training_args, f.name)
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            training[f.name] = value
        else:
            training[f.name] = str(getattr(value, "value", value))
    model = {f.name: getattr(model_args, f.name) for f in fields(ModelArguments)}
    data = {f.name: getattr(data_args, f.name) for f in fields(DataArguments)}
    return json.loads(json.dumps({"model": model, "data": data, "training": training}, default=str))


if __name__ == "__main__":  # pragma: no cover - debugging helper
    print(parse_config(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2:]))
