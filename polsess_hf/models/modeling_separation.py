"""The base ``PreTrainedModel`` of every polsess_hf separator.

It holds what all separators share: input checking (``[B, T]`` or ``[B, 1, T]`` float), the PIT SI-SDR loss when
``labels`` are given, and saving the model *code* next to the weights so that a saved folder loads with
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` in a process that never imports polsess_hf.

Why our own code bundling instead of ``register_for_auto_class``: transformers copies a model's module and the
modules it imports with *single-dot* relative imports only (``from .x import y``); our architectures live in one
folder each and import the shared building blocks from the parent package (``from ..filterbanks import ...``),
which transformers' copier cannot follow. :func:`save_code_bundle` follows every relative import (any depth),
copies the files flat into the folder and rewrites those imports to single-dot ones, then writes ``auto_map``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..losses import neg_pit_si_sdr_loss
from .configuration_separation import SeparationConfig

__all__ = ["SeparationPreTrainedModel", "save_code_bundle"]


class SeparationPreTrainedModel(PreTrainedModel):
    """Shared base: subclasses set ``config_class`` and implement ``forward`` and ``_init_weights``."""

    config_class = SeparationConfig
    base_model_prefix = "separator"
    main_input_name = "input_values"
    # Separators are trained from scratch in fp32/bf16; nothing here is a language model.
    _supports_sdpa = False

    def _check_input(self, input_values: torch.Tensor) -> torch.Tensor:
        """Validate and return the waveform batch as ``(batch_size, time_steps)``."""
        if not isinstance(input_values, torch.Tensor):
            raise ValueError(
                f"`input_values` must be a torch.Tensor of shape (batch_size, time_steps) or "
                f"(batch_size, 1, time_steps), got {type(input_values).__name__}"
            )
        if input_values.dim() == 3:
            if input_values.shape[1] != 1:
                raise ValueError(
                    "`input_values` of rank 3 must be (batch_size, 1, time_steps) (mono), got shape "
                    f"{tuple(input_values.shape)}; downmix multi-channel audio first"
                )
            input_values = input_values[:, 0]
        elif input_values.dim() != 2:
            raise ValueError(
                "`input_values` must have shape (batch_size, time_steps) or (batch_size, 1, time_steps), got "
                f"shape {tuple(input_values.shape)}"
            )
        if not input_values.is_floating_point():
            raise ValueError(
                f"`input_values` must be a floating-point waveform (e.g. int16 / 32768), got dtype {input_values.dtype}"
            )
        if input_values.shape[-1] < 1:
            raise ValueError("`input_values` has 0 time steps; at least 1 sample is needed")
        return input_values

    def _compute_loss(self, estimates: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if labels.dim() == 2 and self.config.n_src == 1:
            labels = labels.unsqueeze(1)
        if labels.shape != estimates.shape:
            raise ValueError(
                f"`labels` must have shape (batch_size, n_src={self.config.n_src}, time_steps) = "
                f"{tuple(estimates.shape)}, got {tuple(labels.shape)}"
            )
        return neg_pit_si_sdr_loss(estimates, labels.to(estimates.dtype))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save config, safetensors weights and the model code (for ``trust_remote_code=True``)."""
        is_main_process = kwargs.get("is_main_process", True)
        auto_map = self._auto_map()
        self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)
        if is_main_process:
            save_code_bundle(type(self), type(self.config), save_directory)

    @classmethod
    def _auto_map(cls) -> dict[str, str]:
        model_module = cls.__module__.rsplit(".", 1)[-1]
        config_module = cls.config_class.__module__.rsplit(".", 1)[-1]
        return {
            "AutoConfig": f"{config_module}.{cls.config_class.__name__}",
            "AutoModel": f"{model_module}.{cls.__name__}",
        }


_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.+)([\w.]*)(\s+import\b)", re.MULTILINE)


def _module_file(module_name: str) -> Path:
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__file__", None):
        return Path(module.__file__)
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot locate the source of module {module_name!r} to bundle with the model")
    return Path(spec.origin)


def _resolve(package: str, level: int, name: str) -> str:
    base = package.split(".")
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([name] if name else []))


def _collect_modules(root_module: str) -> dict[str, str]:
    """Map every module reachable from ``root_module`` by relative imports to its rewritten source."""
    sources: dict[str, str] = {}
    todo = [root_module]
    while todo:
        module_name = todo.pop()
        if module_name in sources:
            continue
        path = _module_file(module_name)
        if path.name == "__init__.py":
            raise ValueError(
                f"model code must not import the package {module_name!r} itself; import the module that "
                "defines the object instead (needed to bundle the code for trust_remote_code)"
            )
        source = path.read_text(encoding="utf-8")
        package = module_name.rsplit(".", 1)[0]
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                if not node.module:
                    raise ValueError(f"`from . import ...` in {path} cannot be bundled; name the module")
                todo.append(_resolve(package, node.level, node.module))

        def flatten(match: re.Match) -> str:
            target = _resolve(package, len(match.group(2)), match.group(3))
            return f"{match.group(1)}.{target.rsplit('.', 1)[-1]}{match.group(4)}"

        sources[module_name] = _RELATIVE_IMPORT.sub(flatten, source)
    return sources


def save_code_bundle(model_class: type, config_class: type, save_directory: str | os.PathLike) -> list[Path]:
    """Copy the code of ``model_class``/``config_class`` and everything they import relatively, flat, into
    ``save_directory`` and make sure ``config.json`` carries the matching ``auto_map``. Returns the files written."""
    save_directory = Path(save_directory)
    sources: dict[str, str] = {}
    for cls in (config_class, model_class):
        sources.update(_collect_modules(cls.__module__))
    by_name: dict[str, str] = {}
    for module_name in sources:
        short = module_name.rsplit(".", 1)[-1]
        if short in by_name and by_name[short] != module_name:
            raise ValueError(f"cannot bundle two modules with the same file name: {by_name[short]} and {module_name}")
        by_name[short] = module_name
    written = []
    for module_name, source in sources.items():
        target = save_directory / f"{module_name.rsplit('.', 1)[-1]}.py"
        target.write_text(source, encoding="utf-8")
        written.append(target)
    config_path = save_directory / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if "auto_map" not in config:
            config["auto_map"] = model_class._auto_map()
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written
