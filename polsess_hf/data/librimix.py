"""Libri2Mix for evaluation (task SB only), in the same item format as :func:`.loading.load_polsess`.

Layout (the LibriMix generator's)::

    <root>/wav8k|wav16k/min|max/train-100|train-360|dev|test/mix_clean|mix_both|s1|s2|noise/<utterance>.wav

``mix_clean`` is Libri2Mix-Clean and ``mix_both`` Libri2Mix-Noisy (WHAM! noise). As in the thesis's
``Libri2MixDataset``: items are the **sorted** ``*.wav`` files of the mixture folder, truncated to the first
``max_samples``; ``s1``/``s2`` are the same-named files; the three signals are trimmed to the shortest. Each
item is ``input_values`` ``(T,)``, ``labels`` ``(2, T)``, ``variant`` (the mixture folder name),
``is_indoor`` (False: LibriMix has no room simulation) and ``id`` (the file name). Lengths vary, so batch with
``SeparationCollator(mode="pad")`` (or ``"crop"`` to train).

Unlike the thesis loader, the files' sample rate is checked against the ``wav8k``/``wav16k`` folder, and a
mixture without its ``s1``/``s2`` file is reported at construction, not mid-evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import read_mono

__all__ = ["Libri2MixDataset", "load_libri2mix", "LIBRIMIX_SPLITS", "LIBRIMIX_MIXTURES"]

LIBRIMIX_SPLITS: tuple[str, ...] = ("train-100", "train-360", "dev", "test")
LIBRIMIX_MIXTURES: tuple[str, ...] = ("mix_clean", "mix_both")
#: PolSESS-style split names accepted as aliases.
_SPLIT_ALIASES = {"train": "train-100", "val": "dev", "validation": "dev"}
_SHOW_MISSING = 5


class Libri2MixDataset(Dataset):
    """Map-style Libri2Mix dataset (see the module docstring).

    Args:
        root: the Libri2Mix root (the folder that contains ``wav8k/`` or ``wav16k/``).
        split: ``"test"`` (default), ``"dev"``, ``"train-100"`` or ``"train-360"`` (``"val"``/``"train"`` are
            aliases of ``"dev"``/``"train-100"``).
        sample_rate: 8000 or 16000; picks ``wav8k``/``wav16k`` and is checked against every file.
        mode: ``"min"`` (default) or ``"max"``.
        mixture: ``"mix_clean"`` (default) or ``"mix_both"``.
        max_samples: first N files of the sorted listing (None = all).
        task: must be ``"SB"`` (Libri2Mix has no per-speaker reverberant or single-speaker targets here).
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "test",
        *,
        sample_rate: int = 8000,
        mode: str = "min",
        mixture: str = "mix_clean",
        max_samples: Optional[int] = None,
        task: str = "SB",
    ):
        if task != "SB":
            raise ValueError(f"Libri2Mix is evaluated on task 'SB' only (two dry speakers), got task={task!r}")
        split = _SPLIT_ALIASES.get(split, split)
        if split not in LIBRIMIX_SPLITS:
            raise ValueError(f"split must be one of {list(LIBRIMIX_SPLITS)} (or train/val), got {split!r}")
        if sample_rate not in (8000, 16000):
            raise ValueError(f"sample_rate must be 8000 or 16000 (the wav8k/wav16k folders), got {sample_rate!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if mixture not in LIBRIMIX_MIXTURES:
            raise ValueError(f"mixture must be one of {list(LIBRIMIX_MIXTURES)}, got {mixture!r}")
        if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < 0):
            raise ValueError(f"max_samples must be a non-negative integer or None, got {max_samples!r}")

        root = Path(root).expanduser().resolve()
        rate_folder = f"wav{sample_rate // 1000}k"
        split_dir = root / rate_folder / mode / split
        if not (split_dir / mixture).is_dir():
            hint = ""
            nested = sorted(p for p in root.glob(f"*/{rate_folder}/{mode}/{split}/{mixture}") if p.is_dir())
            if nested:
                hint = f" It exists one level down: pass root={str(nested[0].parents[3])!r}."
            elif root.name == rate_folder or (root / mode).is_dir():
                hint = f" Pass the folder above {rate_folder}/ as root."
            raise FileNotFoundError(f"no Libri2Mix folder {split_dir / mixture}.{hint}")

        names = sorted(name for name in os.listdir(split_dir / mixture) if name.endswith(".wav"))
        if max_samples is not None:
            names = names[: int(max_samples)]
        missing = []
        for source in ("s1", "s2"):
            present = set(os.listdir(split_dir / source)) if (split_dir / source).is_dir() else set()
            missing += [str(split_dir / source / name) for name in names if name not in present]
        if missing:
            shown = "\n  ".join(missing[:_SHOW_MISSING])
            more = f"\n  ... and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
            raise FileNotFoundError(
                f"{len(missing)} source file(s) of {split_dir / mixture} are missing:\n  {shown}{more}"
            )

        self.root, self.split, self.sample_rate, self.mode, self.mixture = root, split, sample_rate, mode, mixture
        self.task, self.n_src = task, 2
        self._split_dir = split_dir
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        context = f"(Libri2Mix {self.split}/{self.mixture}, item {index})"
        mix = read_mono(str(self._split_dir / self.mixture / name), self.sample_rate, context=context)
        s1 = read_mono(str(self._split_dir / "s1" / name), self.sample_rate, context=context)
        s2 = read_mono(str(self._split_dir / "s2" / name), self.sample_rate, context=context)
        length = min(len(mix), len(s1), len(s2))
        return {
            "input_values": torch.from_numpy(np.ascontiguousarray(mix[:length])),
            "labels": torch.from_numpy(np.stack([s1[:length], s2[:length]])),
            "variant": self.mixture,
            "is_indoor": False,
            "id": name,
        }

    def __repr__(self) -> str:
        return (
            f"Libri2MixDataset(root={str(self.root)!r}, split={self.split!r}, sample_rate={self.sample_rate}, "
            f"mode={self.mode!r}, mixture={self.mixture!r}, items={len(self)})"
        )


def load_libri2mix(
    root: Union[str, os.PathLike],
    split: str = "test",
    *,
    sample_rate: int = 8000,
    mode: str = "min",
    mixture: str = "mix_clean",
    max_samples: Optional[int] = None,
    task: str = "SB",
) -> Libri2MixDataset:
    """Libri2Mix evaluation dataset; see :class:`Libri2MixDataset` for the arguments."""
    return Libri2MixDataset(
        root, split, sample_rate=sample_rate, mode=mode, mixture=mixture, max_samples=max_samples, task=task
    )
