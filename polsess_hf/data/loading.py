"""``load_polsess``: PolSESS as a map-style ``torch`` dataset of model inputs and targets, thesis semantics.

Each item is a dict::

    input_values  float32 (time_steps,)          mix − removed stems (MM-IPC, see .variants)
    labels        float32 (n_src, time_steps)    SB: [s1, s2]; EB: [s1 + s2]; ES: [s1] — always the dry speech
    variant       str                            the MM-IPC variant this item was rendered as
    is_indoor     bool                           the row has reverb stems
    id            str                            the row's mixFile

**Rows** (``specs/polsess_data.md`` §1, §3): the whole CSV in order; if every allowed variant is indoor-only the
rows are filtered to indoor, if every one is outdoor-only to outdoor (C or a mix of families keeps all rows);
then ``max_samples`` keeps the **first N rows after that filter** — never a random sample, exactly as the thesis's
``train_max_samples`` 2K/4K/8K/16K subsets. With a curriculum the filter follows the active stage, so the row
set can change at a stage boundary (an ``[R]`` stage sees the first N indoor rows).

**Variant per item**: the allowed variants restricted to the row's family, in the given order (all of the
family's variants when none are given). Training (``random_variants=True``, the default for the train split)
draws uniformly, reproducibly from ``(seed, epoch, index)``: a new draw each epoch, the same draw for the same
epoch in any worker or run. Validation and test draw ``random.Random(index).choice(...)``, the thesis's
deterministic rule. Pass ``variant="SR"`` to force one variant (per-variant evaluation: rows of its family,
C = all rows).

**Epochs and workers**: the current epoch lives in a one-element ``int64`` tensor in shared memory. The trainer
calls :meth:`PolSESSDataset.set_epoch` (1-based, like the thesis curriculum) before iterating an epoch; every
DataLoader worker reads the same memory at ``__getitem__``, so the stage switch reaches workers that were
forked before it — including ``persistent_workers=True``, where the thesis's in-place mutation stayed stuck on
the first stage — and ``len(dataset)`` follows the stage in the main process, where the sampler asks for it.

**Decoding**: 16-bit PCM → float32 as int16/32768 (:mod:`.audio`; no FFmpeg, no torchcodec). No normalisation,
crop, pad or resample; a wrong sample rate, a stereo file, an unreadable file or stems of different lengths
raise an error naming the file, the split, the CSV row and the column.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import AudioReadError, read_mono
from .corpus import SPLITS, stem_path_column
from .curriculum import Curriculum, resolve_curriculum
from .variants import (
    STEM_COLUMNS,
    STEMS,
    TASK_N_SRC,
    choose_eval_variant,
    compatible_variants,
    family_filter,
    removed_stems,
    validate_task,
    validate_variants,
)

__all__ = ["PolSESSDataset", "load_polsess", "DEFAULT_SAMPLE_RATE"]

#: Every thesis corpus is 8 kHz (evaluate.py hard-codes it; PESQ narrow-band).
DEFAULT_SAMPLE_RATE = 8000

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def training_draw(seed: int, epoch: int, index: int) -> int:
    """A 64-bit pseudo-random integer that depends only on ``(seed, epoch, index)`` (splitmix64 chain).

    Cheaper than seeding a generator per item (~1 µs) and identical in every process, which is what makes the
    training variant choice reproducible across workers, restarts and worker counts.
    """
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64)) ^ (index & _MASK64))


class PolSESSDataset(Dataset):
    """Map-style PolSESS dataset (see the module docstring for rows, variants, epochs and decoding).

    Build it with :func:`load_polsess`. Args:
        index: the prepared split (``PolSESS(...).as_dataset(split)``).
        split: ``"train"``, ``"val"`` or ``"test"`` (used in error messages and for the default variant rule).
        task: ``"SB"``, ``"EB"`` or ``"ES"``.
        variants: allowed variants (None / [] = all); exclusive with ``curriculum``.
        curriculum: a :class:`.curriculum.Curriculum` whose active stage gives the variants.
        max_samples: keep the first N rows after the family filter (None = all).
        seed: seed of the training variant draw.
        random_variants: draw variants at random per (seed, epoch, index) (True) or deterministically per index
            (False). Default: True for ``"train"``, False otherwise.
        sample_rate: required sample rate of every file (None = do not check).
    """

    def __init__(
        self,
        index,
        *,
        split: str,
        task: str = "SB",
        variants: Optional[Sequence[str]] = None,
        curriculum: Optional[Curriculum] = None,
        max_samples: Optional[int] = None,
        seed: int = 0,
        random_variants: Optional[bool] = None,
        sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE,
    ):
        self.split = split
        self.task = validate_task(task)
        self.variants = validate_variants(variants)
        if curriculum is not None and self.variants is not None:
            raise ValueError("pass either variants or curriculum, not both: the curriculum's stages give the variants")
        if curriculum is not None and curriculum.task != self.task:
            raise ValueError(
                f"the curriculum was built for task {curriculum.task!r} but the dataset task is {self.task!r}"
            )
        self.curriculum = curriculum
        if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < 0):
            raise ValueError(f"max_samples must be a non-negative integer or None, got {max_samples!r}")
        self.max_samples = None if max_samples is None else int(max_samples)
        self.seed = int(seed)
        self.random_variants = (split == "train") if random_variants is None else bool(random_variants)
        self.sample_rate = sample_rate
        self.n_src = TASK_N_SRC[self.task]

        self.index = index
        table = index.data
        self._paths = {s: table.column(stem_path_column(s)).combine_chunks() for s in STEMS}
        self._ids = table.column("id").combine_chunks()
        self._row_index = np.asarray(table.column("row_index").to_numpy(), dtype=np.int64)
        self._is_indoor = np.asarray(table.column("is_indoor").to_numpy(zero_copy_only=False), dtype=bool)
        # The epoch is shared memory: DataLoader workers (forked or spawned, persistent or not) see set_epoch().
        self._epoch = torch.ones(1, dtype=torch.int64).share_memory_()
        self._epoch_view = self._epoch.numpy()  # a numpy view of the same memory: ~20x cheaper to read per item
        self._rows_cache: dict[Optional[tuple[str, ...]], np.ndarray] = {}
        if sample_rate is not None and len(self._row_index):
            self._read(0, "mix")  # fail at construction, not mid-epoch, on a corpus of the wrong rate

    # --- pickling (spawned workers): rebuild the numpy view of the shared epoch -----------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_epoch_view")
        state["_rows_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._epoch_view = self._epoch.numpy()

    # --- epochs and stages -------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current 1-based epoch (1 until :meth:`set_epoch` is called)."""
        return int(self._epoch_view[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the 1-based epoch: selects the curriculum stage and the training variant draws.

        Call it in the main process before iterating the epoch's DataLoader; workers read it from shared memory.
        """
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 1:
            raise ValueError(f"epoch must be an integer ≥ 1 (1-based, as in the thesis curriculum), got {epoch!r}")
        self._epoch_view[0] = int(epoch)

    @property
    def allowed_variants(self) -> Optional[tuple[str, ...]]:
        """Variants allowed now: the curriculum's active stage, else ``variants`` (None = all)."""
        if self.curriculum is not None:
            return self.curriculum.variants_at(self.epoch)
        return self.variants

    def rows_for(self, variants: Optional[Sequence[str]]) -> np.ndarray:
        """0-based CSV row indices used with ``variants``: the family filter, then the first ``max_samples``."""
        key = None if variants is None else tuple(variants)
        rows = self._rows_cache.get(key)
        if rows is None:
            family = family_filter(key)
            rows = self._row_index if family is None else self._row_index[self._is_indoor == family]
            if self.max_samples is not None:
                rows = rows[: self.max_samples]
            self._rows_cache[key] = rows
        return rows

    @property
    def rows(self) -> np.ndarray:
        """0-based CSV row indices of the items at the current epoch (item i is CSV row ``rows[i]``)."""
        return self.rows_for(self.allowed_variants)

    def __len__(self) -> int:
        return len(self.rows)

    def variant_for(self, index: int) -> str:
        """The variant item ``index`` takes at the current epoch (what ``self[index]["variant"]`` will be)."""
        variants = self.allowed_variants
        rows = self.rows_for(variants)
        return self._choose(variants, bool(self._is_indoor[rows[index]]), index)

    def _choose(self, variants: Optional[Sequence[str]], is_indoor: bool, index: int) -> str:
        compatible = compatible_variants(variants, is_indoor)
        if len(compatible) == 1:
            return compatible[0]
        if self.random_variants:
            return compatible[training_draw(self.seed, self.epoch, index) % len(compatible)]
        return choose_eval_variant(compatible, index)

    # --- items -------------------------------------------------------------------------------------------------
    def _read(self, row: int, stem: str) -> np.ndarray:
        path = self._paths[stem][row].as_py()
        context = f"(split {self.split!r}, CSV row {row}, column {STEM_COLUMNS[stem]}, id {self._ids[row].as_py()})"
        if path is None:
            raise AudioReadError(f"the {stem} stem is needed but the row has none {context}")
        return read_mono(path, self.sample_rate, context=context)

    def __getitem__(self, index: int) -> dict[str, Any]:
        variants = self.allowed_variants
        rows = self.rows_for(variants)
        if not -len(rows) <= index < len(rows):
            raise IndexError(f"index {index} out of range for a PolSESS {self.split} dataset of {len(rows)} items")
        index = int(index) % len(rows)
        row = int(rows[index])
        is_indoor = bool(self._is_indoor[row])
        variant = self._choose(variants, is_indoor, index)

        mix = self._read(row, "mix")
        speaker1 = self._read(row, "speaker1")
        speaker2 = self._read(row, "speaker2")
        removed = removed_stems(variant, is_indoor, self.task)
        stems = {s: self._read(row, s) for s in removed if s != "speaker2"}
        stems.update(speaker1=speaker1, speaker2=speaker2)
        for stem, signal in stems.items():
            if len(signal) != len(mix):
                raise AudioReadError(
                    f"{self._paths[stem][row].as_py()} has {len(signal)} samples but the mix "
                    f"{self._paths['mix'][row].as_py()} has {len(mix)}; every stem of a row must match the mix "
                    f"(split {self.split!r}, CSV row {row}, column {STEM_COLUMNS[stem]})"
                )

        input_values = mix.copy()
        for stem in removed:  # MM-IPC: subtract each removed stem once
            input_values -= stems[stem]
        if self.task == "SB":
            labels = np.stack([speaker1, speaker2])
        elif self.task == "EB":
            labels = (speaker1 + speaker2)[None]
        else:  # ES
            labels = speaker1[None].copy()
        return {
            "input_values": torch.from_numpy(input_values),
            "labels": torch.from_numpy(labels),
            "variant": variant,
            "is_indoor": is_indoor,
            "id": self._ids[row].as_py(),
        }

    def metadata(self, index: int) -> dict[str, Any]:
        """The full prepared row (paths, SSR, sceneClass, eventClass, reverb parameters, …) of item ``index``."""
        return self.index[int(self.rows[index])]

    def __repr__(self) -> str:
        if self.curriculum is not None:
            stage = f"curriculum={self.curriculum!r}, epoch={self.epoch}"
        else:
            stage = f"variants={self.variants}"
        return (
            f"PolSESSDataset(split={self.split!r}, task={self.task!r}, {stage}, max_samples={self.max_samples}, "
            f"items={len(self)}, random_variants={self.random_variants})"
        )


def load_polsess(
    data_dir: Union[str, os.PathLike],
    split: str = "train",
    *,
    task: str = "SB",
    variants: Optional[Sequence[str]] = None,
    variant: Optional[str] = None,
    curriculum: Union[None, str, Curriculum, Sequence[Mapping[str, Any]]] = None,
    max_samples: Optional[int] = None,
    seed: int = 0,
    random_variants: Optional[bool] = None,
    sample_rate: Optional[int] = DEFAULT_SAMPLE_RATE,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    corpus_name: Optional[str] = None,
    check_files: bool = True,
) -> PolSESSDataset:
    """Prepare (once, cached) and load one PolSESS split as a map-style dataset of model inputs and targets.

    Args:
        data_dir: corpus root (the folder that directly contains ``train/``, ``val/``, ``test/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        task: ``"SB"`` (labels ``(2, T)``), ``"EB"`` (``(1, T)``, s1 + s2) or ``"ES"`` (``(1, T)``, s1).
        variants: allowed MM-IPC variants (None = all). ``["SER", "SE"]`` is the thesis's validation pool
            (every item is the unmodified mix).
        variant: force a single variant (evaluation); same as ``variants=[variant]``.
        curriculum: a :class:`.curriculum.Curriculum`, its YAML list form, or a name such as ``"standard"``;
            the active stage gives the variants (exclusive with ``variants``/``variant``).
        max_samples: first N rows after the family filter (None = all).
        seed: seed of the training variant draw (reproducible from seed, epoch and index).
        random_variants: default True for ``"train"``, False (deterministic per index) for val/test.
        sample_rate: required sample rate (Hz) of every file; None skips the check.
        cache_dir: where the prepared Arrow index goes (default: the 🤗 datasets cache).
        corpus_name: override of the corpus name when the folder was renamed.
        check_files: verify at prepare time that every referenced file exists.

    Returns:
        :class:`PolSESSDataset`; call ``set_epoch(e)`` (1-based) at each epoch boundary.
    """
    from .polsess import PolSESS  # imports datasets; kept out of module import time

    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    validate_task(task)
    if variant is not None:
        if variants is not None:
            raise ValueError(f"pass either variant={variant!r} or variants={variants!r}, not both")
        variants = [variant]
    resolved = resolve_curriculum(curriculum, task=task)
    builder = PolSESS(data_dir=data_dir, cache_dir=cache_dir, corpus_name=corpus_name, check_files=check_files)
    if split not in builder.available_splits:
        raise FileNotFoundError(
            f"the corpus at {builder.config.data_dir} has no {split} split (no "
            f"{split}/corpus_{builder.config.corpus_name}_{split}_final.csv); "
            f"available: {list(builder.available_splits)}"
        )
    builder.download_and_prepare()
    index = builder.as_dataset(split=split)
    return PolSESSDataset(
        index,
        split=split,
        task=task,
        variants=variants,
        curriculum=resolved,
        max_samples=max_samples,
        seed=seed,
        random_variants=random_variants,
        sample_rate=sample_rate,
    )
