"""Curriculum learning over MM-IPC variants: which variants train at epoch e, and is the LR scheduler on.

The thesis configures it as ``training.curriculum_learning``, a list of entries (``specs/training.md`` §2)::

    curriculum_learning:
      - {epoch: 1, variants: [C, R]}
      - {epoch: 3, variants: [C, R, SR, S]}
      - {epoch: 5, variants: [R, SR, S, SE, ER, E, SER], lr_scheduler: start}

Semantics, as the thesis trainer implements them:

* ``epoch`` is **1-based** and entries must be strictly ascending.
* At epoch e the **active stage** is the last entry with ``epoch ≤ e``. Epochs before the first entry use the
  first entry (the thesis builds the training set with the first entry's variants).
* Stage changes replace the dataset's allowed variants, which re-runs the family filter and the first-N rows
  (:func:`.variants.family_filter`): an ``[R]`` stage sees the first N indoor rows, a mixed stage the first N rows.
* ``lr_scheduler: start``: with a curriculum, ``ReduceLROnPlateau`` stays off until a reached entry carries it,
  then stays on. If no entry carries it, the scheduler never runs. (Without any curriculum the scheduler runs
  from epoch 1 — that is the trainer's business: pass ``curriculum=None`` there.)

:class:`Curriculum` validates all of this at construction; :data:`STANDARD_CURRICULUM` is the thesis's
"standardized" schedule (``sweeps/1-baselines-SB/README.md``; stages at epochs 1/3/5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .variants import ALL_VARIANTS, validate_task, validate_variants

__all__ = ["CurriculumStage", "Curriculum", "STANDARD_CURRICULUM", "standard_curriculum", "resolve_curriculum"]

_ENTRY_KEYS = ("epoch", "variants", "lr_scheduler")


@dataclass(frozen=True)
class CurriculumStage:
    """One curriculum entry: from 1-based ``epoch`` on, train on ``variants``; ``starts_lr_scheduler`` marks
    the thesis's ``lr_scheduler: start``."""

    epoch: int
    variants: tuple[str, ...]
    starts_lr_scheduler: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The thesis YAML form of this entry."""
        entry: dict[str, Any] = {"epoch": self.epoch, "variants": list(self.variants)}
        if self.starts_lr_scheduler:
            entry["lr_scheduler"] = "start"
        return entry


class Curriculum:
    """A validated curriculum schedule.

    Args:
        stages: entries in the thesis YAML form (mappings with ``epoch``, ``variants`` and optionally
            ``lr_scheduler: "start"``) or :class:`CurriculumStage` objects.
        task: the task the schedule will train (``"SB"``, ``"EB"`` or ``"ES"``). Every MM-IPC variant is defined
            for all three tasks (ES additionally removes speaker 2, see :func:`.variants.removed_stems`), so no
            variant is rejected; but under ES the C variant leaves exactly the target (input = dry s1), an
            identity item with nothing to learn, so a stage with C warns for ES (the thesis's ES schedules start
            from ``[R, SR, S]`` or ``[R]``).

    Raises:
        ValueError: empty schedule, unknown keys, non-integer or non-positive epochs, epochs not strictly
            ascending, empty/unknown/duplicated variant names, an ``lr_scheduler`` value other than ``"start"``,
            or an unknown task. Messages name the entry (0-based) and the offending value.

    Example::

        >>> schedule = Curriculum([{"epoch": 1, "variants": ["C", "R"]},
        ...                        {"epoch": 3, "variants": ["R", "SER"], "lr_scheduler": "start"}])
        >>> schedule.variants_at(2), schedule.lr_scheduler_active(2), schedule.lr_scheduler_active(3)
        (('C', 'R'), False, True)
    """

    def __init__(self, stages: Iterable[Union[Mapping[str, Any], CurriculumStage]], *, task: str = "SB"):
        self.task = validate_task(task)
        parsed: list[CurriculumStage] = []
        for position, entry in enumerate(stages):
            parsed.append(entry if isinstance(entry, CurriculumStage) else self._parse_entry(position, entry))
        if not parsed:
            raise ValueError(
                "a curriculum needs at least one stage ({epoch, variants} entry); use None for no curriculum"
            )
        for position, stage in enumerate(parsed):
            if not isinstance(stage.epoch, int) or isinstance(stage.epoch, bool) or stage.epoch < 1:
                raise ValueError(
                    f"curriculum entry {position}: epoch must be an integer ≥ 1 (1-based), got {stage.epoch!r}"
                )
            if validate_variants(stage.variants, what=f"curriculum entry {position} variants") is None:
                raise ValueError(f"curriculum entry {position} (epoch {stage.epoch}) has no variants")
        epochs = [stage.epoch for stage in parsed]
        if any(later <= earlier for earlier, later in zip(epochs, epochs[1:])):
            raise ValueError(f"curriculum epochs must be strictly ascending, got {epochs}")
        self.stages: tuple[CurriculumStage, ...] = tuple(parsed)
        if self.task == "ES":
            with_clean = [stage.epoch for stage in self.stages if "C" in stage.variants]
            if with_clean:
                warnings.warn(
                    f"curriculum stage(s) starting at epoch(s) {with_clean} train task ES on variant C, whose input "
                    "is exactly the target (mix minus every other stem = dry speaker 1). Drop C from those stages "
                    "unless identity items are intended.",
                    UserWarning,
                    stacklevel=2,
                )

    @staticmethod
    def _parse_entry(position: int, entry: Mapping[str, Any]) -> CurriculumStage:
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"curriculum entry {position} must be a mapping like {{epoch: 1, variants: [C, R]}}, got {entry!r}"
            )
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            raise ValueError(f"curriculum entry {position} has unknown key(s) {unknown}; allowed: {list(_ENTRY_KEYS)}")
        for key in ("epoch", "variants"):
            if key not in entry:
                raise ValueError(f"curriculum entry {position} lacks the key {key!r}: {dict(entry)}")
        scheduler = entry.get("lr_scheduler")
        if scheduler not in (None, "start"):
            raise ValueError(
                f"curriculum entry {position}: lr_scheduler must be 'start' (or absent), got {scheduler!r}"
            )
        variants = entry["variants"]
        if isinstance(variants, str):
            raise ValueError(
                f"curriculum entry {position}: variants must be a list such as [C, R], got the string {variants!r}"
            )
        return CurriculumStage(epoch=entry["epoch"], variants=tuple(variants), starts_lr_scheduler=scheduler == "start")

    # -----------------------------------------------------------------------------------------------------------
    def stage_index_at(self, epoch: int) -> int:
        """0-based index of the stage active at 1-based ``epoch``."""
        if not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an integer ≥ 1 (curriculum epochs are 1-based), got {epoch!r}")
        index = 0
        for position, stage in enumerate(self.stages):
            if stage.epoch <= epoch:
                index = position
            else:
                break
        return index

    def stage_at(self, epoch: int) -> CurriculumStage:
        """The stage active at 1-based ``epoch``: the last entry with ``epoch ≤ e`` (the first before it)."""
        return self.stages[self.stage_index_at(epoch)]

    def variants_at(self, epoch: int) -> tuple[str, ...]:
        """Allowed training variants at 1-based ``epoch``."""
        return self.stage_at(epoch).variants

    def lr_scheduler_active(self, epoch: int) -> bool:
        """Whether the LR scheduler steps at the end of 1-based ``epoch``: a reached stage said ``start``."""
        return any(stage.starts_lr_scheduler and stage.epoch <= epoch for stage in self.stages)

    def stage_changes_at(self, epoch: int) -> bool:
        """True when ``epoch`` begins a new stage (epoch 1 always does)."""
        return epoch == 1 or self.stage_index_at(epoch) != self.stage_index_at(epoch - 1)

    @property
    def all_variants(self) -> tuple[str, ...]:
        """Every variant some stage uses, in :data:`.variants.ALL_VARIANTS` order."""
        used = {v for stage in self.stages for v in stage.variants}
        return tuple(v for v in ALL_VARIANTS if v in used)

    def to_config(self) -> list[dict[str, Any]]:
        """The thesis YAML form (a list of ``{epoch, variants[, lr_scheduler]}`` dicts); round-trips."""
        return [stage.to_dict() for stage in self.stages]

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]], *, task: str = "SB") -> "Curriculum":
        """Build from the thesis YAML form (``training.curriculum_learning``)."""
        return cls(entries, task=task)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Curriculum) and self.stages == other.stages and self.task == other.task

    def __repr__(self) -> str:
        return f"Curriculum({self.to_config()!r}, task={self.task!r})"


def standard_curriculum(
    boundaries: Sequence[int] = (1, 3, 5), *, keep_clean: bool = False, task: str = "SB"
) -> Curriculum:
    """The thesis's standardized schedule: ``{C, R}`` → ``{C, R, SR, S}`` → all seven non-clean variants
    (``R, SR, S, SE, ER, E, SER``), with the LR scheduler starting at the last stage.

    Args:
        boundaries: the three 1-based stage epochs; the thesis used 1/3/5 (default), 1/3/6, 1/3/8 and 1/4/10.
        keep_clean: keep C in the last stage (all 8 variants), as the SepFormer and SPMamba baseline sweeps did.
        task: see :class:`Curriculum`.
    """
    if len(boundaries) != 3:
        raise ValueError(f"boundaries must be three stage epochs such as (1, 3, 5), got {tuple(boundaries)}")
    final = ["R", "SR", "S", "SE", "ER", "E", "SER"] + (["C"] if keep_clean else [])
    return Curriculum(
        [
            {"epoch": boundaries[0], "variants": ["C", "R"]},
            {"epoch": boundaries[1], "variants": ["C", "R", "SR", "S"]},
            {"epoch": boundaries[2], "variants": final, "lr_scheduler": "start"},
        ],
        task=task,
    )


#: The thesis's standard SB schedule: epochs 1–2 ``[C, R]``, 3–4 ``[C, R, SR, S]``, 5+ all non-clean variants with
#: the LR scheduler on.
STANDARD_CURRICULUM: Curriculum = standard_curriculum()

_NAMED = {
    "standard": lambda task: standard_curriculum(task=task),
    "standard_1_3_6": lambda task: standard_curriculum((1, 3, 6), task=task),
    "standard_1_3_8": lambda task: standard_curriculum((1, 3, 8), task=task),
    "standard_1_4_10": lambda task: standard_curriculum((1, 4, 10), task=task),
    "standard_keep_clean": lambda task: standard_curriculum(keep_clean=True, task=task),
}


def resolve_curriculum(
    curriculum: Union[None, str, Curriculum, Sequence[Mapping[str, Any]]], *, task: str = "SB"
) -> Optional[Curriculum]:
    """Turn a config value into a :class:`Curriculum` (or None).

    Accepts None, a :class:`Curriculum` (its task must match), the YAML list form, or a name:
    ``"standard"`` (1/3/5), ``"standard_1_3_6"``, ``"standard_1_3_8"``, ``"standard_1_4_10"``,
    ``"standard_keep_clean"``.
    """
    if curriculum is None:
        return None
    if isinstance(curriculum, Curriculum):
        if curriculum.task != task:
            raise ValueError(f"the curriculum was built for task {curriculum.task!r} but the dataset task is {task!r}")
        return curriculum
    if isinstance(curriculum, str):
        if curriculum not in _NAMED:
            raise ValueError(f"unknown curriculum name {curriculum!r}; known: {sorted(_NAMED)}")
        return _NAMED[curriculum](task)
    return Curriculum(curriculum, task=task)
