"""PolSESS data layer: builder, MM-IPC variants, curriculum, collator, Libri2Mix and the mini-corpus generator.

Quick start::

    from polsess_hf.data import load_polsess, make_mini_polsess, SeparationCollator, STANDARD_CURRICULUM

    root = make_mini_polsess("data/mini_polsess", n_train=200, n_val=50, n_test=50, seed=0)
    train = load_polsess(root, "train", task="SB", curriculum="standard", max_samples=2000)
    val = load_polsess(root, "val", task="SB", variants=["SER", "SE"])
    train.set_epoch(1)   # 1-based; call at every epoch boundary (reaches DataLoader workers)

Modules: :mod:`.variants` (the MM-IPC table: variant names and the stems each removes), :mod:`.polsess` (the
🤗 ``datasets`` builder), :mod:`.corpus` (CSV lookup and parsing), :mod:`.loading` (``load_polsess``),
:mod:`.curriculum`, :mod:`.collator`, :mod:`.librimix`, :mod:`.mini` (generator and ``polsess-make-mini``),
:mod:`.audio` (WAV decoding).

Names are imported lazily (PEP 562), so ``import polsess_hf.data`` itself loads neither ``datasets`` nor the
data-loading code; the variant table is plain Python.
"""

from __future__ import annotations

import importlib
from typing import Any

from .variants import (
    ALL_VARIANTS,
    INDOOR_VARIANTS,
    OUTDOOR_VARIANTS,
    REMOVED_BY_VARIANT,
    TASK_N_SRC,
    TASKS,
    removed_stems,
)

_LAZY = {
    "PolSESS": ".polsess",
    "PolSESSConfig": ".polsess",
    "locate_corpus": ".corpus",
    "PolSESSDataset": ".loading",
    "load_polsess": ".loading",
    "Curriculum": ".curriculum",
    "CurriculumStage": ".curriculum",
    "STANDARD_CURRICULUM": ".curriculum",
    "standard_curriculum": ".curriculum",
    "resolve_curriculum": ".curriculum",
    "SeparationCollator": ".collator",
    "collate_separation": ".collator",
    "Libri2MixDataset": ".librimix",
    "load_libri2mix": ".librimix",
    "make_mini_polsess": ".mini",
    "AudioReadError": ".audio",
}

__all__ = [
    "ALL_VARIANTS",
    "INDOOR_VARIANTS",
    "OUTDOOR_VARIANTS",
    "REMOVED_BY_VARIANT",
    "TASKS",
    "TASK_N_SRC",
    "removed_stems",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
