"""Convert thesis checkpoints (``traktorex/polsess_separation``) into Hugging Face model folders.

A thesis checkpoint is a ``torch.save`` dict with ``model_state_dict`` and ``config`` (the nested experiment
config: ``config["model"]["model_type"]`` and ``config["model"][<model_type>]`` = the model's keyword
arguments; ``config["data"]["task"]`` = ES/EB/SB). Each architecture provides, in
``polsess_hf/models/<model_type>/convert_<model_type>.py``:

* ``config_from_thesis(kwargs: dict, n_src: int) -> <Arch>Config`` — maps the thesis keyword arguments to the
  config, drops the documented dead arguments, refuses unknown ones (naming them);
* ``convert_state_dict(state_dict: dict, config) -> dict`` — renames the thesis keys to ours.

This module does the rest: reading, choosing the number of sources from the task as the thesis did, a strict
load that refuses missing or unexpected keys with the full lists (never a partial load), and saving.

Usage::

    python examples/convert_thesis_checkpoint.py runs/dprnn_sb/best.pt hf/dprnn-polsess-sb
    polsess-convert-thesis runs/dprnn_sb/best.pt hf/dprnn-polsess-sb --push-to-hub user/dprnn-polsess-sb
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import torch

__all__ = ["TASK_N_SRC", "convert_thesis_checkpoint", "load_thesis_checkpoint", "model_from_thesis", "CheckpointConversionError"]

# The thesis forced the number of sources from the task, whatever the stored model config said (the table lives
# with the task definitions in polsess_hf.data.variants, plain Python).
from .data.variants import TASK_N_SRC  # noqa: E402
KNOWN_MODEL_TYPES = ("convtasnet", "dprnn", "sepformer", "spmamba")


class CheckpointConversionError(ValueError):
    """A thesis checkpoint that cannot be converted faithfully (the message says why and what was expected)."""


def _converter(model_type: str):
    if model_type not in KNOWN_MODEL_TYPES:
        raise CheckpointConversionError(
            f"config.model.model_type={model_type!r} is not a polsess_hf architecture; expected one of {list(KNOWN_MODEL_TYPES)}"
        )
    return importlib.import_module(f"polsess_hf.models.{model_type}.convert_{model_type}")


def load_thesis_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a thesis ``.pt`` file and check it has the expected top-level structure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"thesis checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - report which file and why, not a deep unpickling trace
        raise CheckpointConversionError(f"{path}: cannot be read as a torch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint or "config" not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointConversionError(f"{path}: expected a dict with 'model_state_dict' and 'config', found {keys}")
    model_config = checkpoint["config"].get("model") if isinstance(checkpoint["config"], dict) else None
    if not isinstance(model_config, dict) or "model_type" not in model_config:
        raise CheckpointConversionError(f"{path}: config.model.model_type is missing")
    return checkpoint


def model_from_thesis(checkpoint: dict[str, Any], *, source: str = "checkpoint"):
    """Build the polsess_hf model holding exactly the weights of a loaded thesis checkpoint."""
    from .models import MODEL_CLASSES  # registers the architectures

    model_config = checkpoint["config"]["model"]
    model_type = model_config["model_type"]
    converter = _converter(model_type)
    kwargs = dict(model_config.get(model_type) or {})
    task = (checkpoint["config"].get("data") or {}).get("task", "SB")
    if task not in TASK_N_SRC:
        raise CheckpointConversionError(f"{source}: config.data.task={task!r}; expected one of {sorted(TASK_N_SRC)}")
    config = converter.config_from_thesis(kwargs, n_src=TASK_N_SRC[task])
    state_dict = converter.convert_state_dict(dict(checkpoint["model_state_dict"]), config)
    _, model_class = MODEL_CLASSES[model_type]
    model = model_class(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointConversionError(
            f"{source}: the {model_type} weights do not match the architecture built from its config.\n"
            f"  missing keys ({len(missing)}): {missing}\n  unexpected keys ({len(unexpected)}): {unexpected}"
        )
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if tuple(value.shape) != tuple(expected[key].shape)
    ]
    if mismatched:
        raise CheckpointConversionError(f"{source}: shape mismatch for {len(mismatched)} tensor(s): {mismatched}")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def convert_thesis_checkpoint(checkpoint_path: str | Path, output_dir: str | Path, *, push_to_hub: str | None = None):
    """Convert ``checkpoint_path`` to a Hugging Face folder at ``output_dir``; returns the model."""
    checkpoint = load_thesis_checkpoint(checkpoint_path)
    model = model_from_thesis(checkpoint, source=str(checkpoint_path))
    model.save_pretrained(output_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a polsess_separation thesis checkpoint to a Hugging Face model folder.")
    parser.add_argument("checkpoint", help="thesis checkpoint (.pt) with model_state_dict and config")
    parser.add_argument("output_dir", help="folder to write config.json, model.safetensors and the model code to")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="also push the converted model")
    args = parser.parse_args(argv)
    try:
        model = convert_thesis_checkpoint(args.checkpoint, args.output_dir, push_to_hub=args.push_to_hub)
    except (CheckpointConversionError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} -> {args.output_dir} ({model.config.model_type}, {n_params:,} parameters)")


if __name__ == "__main__":
    main()
