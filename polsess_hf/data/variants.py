"""MM-IPC variants and tasks: the one source of truth for variant names and which stems each one removes.

MM-IPC ("Mix Modification by Inverted Phase Cancellation", Kleć, Szklanny & Wieczorkowska 2024) removes a
component from a PolSESS mixture by adding its phase-inverted stored stem, i.e. by subtracting the stem file
from the mix file. Every PolSESS mixture is an exact sum of its stored stems (up to 16-bit quantisation)::

    indoor  (reverb stems present):  mix = s1 + s2 + scene + event + ev_reverb + sp1_reverb + sp2_reverb
    outdoor (no reverb stems):       mix = s1 + s2 + scene + event

where ``sp1_reverb``/``sp2_reverb``/``ev_reverb`` are **wet-only reverb tails** (the generator's reverberator
runs with WetDryMix = 1), so the reverberant speaker k is ``s_k + sp{k}_reverb``.

Variant letters name what is **kept**: S = scene, E = event (indoor: with its reverb tail), R = the speakers'
reverb tails, C = clean (nothing kept). Indoor rows allow SER, SR, ER, R, C; outdoor rows SE, S, E, C; C is
the only variant valid for both families, so there are 8 distinct names.

Tasks (``specs/polsess_data.md`` §2): SB separates both dry speakers ``[s1, s2]``; EB enhances both into one
target ``s1 + s2``; ES extracts speaker 1, so its input also loses speaker 2 (dry, and its reverb tail indoors).
Targets are always the dry ``clean/`` files.

This module imports only the standard library, so the tables can be read without torch or datasets.
"""

from __future__ import annotations

import random
from typing import Iterable, Optional, Sequence

__all__ = [
    "TASKS",
    "TASK_N_SRC",
    "INDOOR_VARIANTS",
    "OUTDOOR_VARIANTS",
    "ALL_VARIANTS",
    "STEMS",
    "REVERB_STEMS",
    "STEM_FOLDERS",
    "STEM_COLUMNS",
    "REMOVED_BY_VARIANT",
    "validate_task",
    "validate_variants",
    "variant_families",
    "family_filter",
    "compatible_variants",
    "removed_stems",
    "stems_to_load",
    "choose_eval_variant",
]

# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------
TASKS: tuple[str, ...] = ("SB", "EB", "ES")
#: Number of target signals (the model's ``n_src``) per task; the thesis forces this from the task.
TASK_N_SRC: dict[str, int] = {"SB": 2, "EB": 1, "ES": 1}

# ---------------------------------------------------------------------------------------------------------------
# Variants. Order matters twice: it is the thesis's default compatible list when no variants are given
# (``_choose_variant`` with allowed_variants=None), and ALL_VARIANTS is the per-variant validation/test order.
# ---------------------------------------------------------------------------------------------------------------
INDOOR_VARIANTS: tuple[str, ...] = ("SER", "SR", "ER", "R", "C")
OUTDOOR_VARIANTS: tuple[str, ...] = ("SE", "S", "E", "C")
ALL_VARIANTS: tuple[str, ...] = ("SER", "SR", "ER", "R", "SE", "S", "E", "C")

# ---------------------------------------------------------------------------------------------------------------
# Stems: name -> (folder under <root>/<split>/, CSV column that holds the file name)
# ---------------------------------------------------------------------------------------------------------------
STEMS: tuple[str, ...] = ("mix", "speaker1", "speaker2", "scene", "event", "sp1_reverb", "sp2_reverb", "ev_reverb")
#: Stems that exist only for indoor rows (empty CSV cells for outdoor rows).
REVERB_STEMS: tuple[str, ...] = ("sp1_reverb", "sp2_reverb", "ev_reverb")
STEM_FOLDERS: dict[str, str] = {
    "mix": "mix",
    "speaker1": "clean",  # both speakers live in clean/; there is no s1/ s2/ split
    "speaker2": "clean",
    "scene": "scene",
    "event": "event",
    "sp1_reverb": "sp1_reverb",
    "sp2_reverb": "sp2_reverb",
    "ev_reverb": "ev_reverb",
}
STEM_COLUMNS: dict[str, str] = {
    "mix": "mixFile",
    "speaker1": "speaker1File",
    "speaker2": "speaker2File",
    "scene": "sceneFile",
    "event": "eventFile",
    "sp1_reverb": "reverbForSpeaker1",  # doubles as the indoor/outdoor flag
    "sp2_reverb": "reverbForSpeaker2",
    "ev_reverb": "reverbForEvent",
}

#: Background stems subtracted from ``mix`` per (is_indoor, variant); task-independent (polsess_data.md §3).
REMOVED_BY_VARIANT: dict[tuple[bool, str], tuple[str, ...]] = {
    (True, "SER"): (),
    (True, "SR"): ("event", "ev_reverb"),
    (True, "ER"): ("scene",),
    (True, "R"): ("scene", "event", "ev_reverb"),
    (True, "C"): ("scene", "event", "ev_reverb", "sp1_reverb", "sp2_reverb"),
    (False, "SE"): (),
    (False, "S"): ("event",),
    (False, "E"): ("scene",),
    (False, "C"): ("scene", "event"),
}


def validate_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise ``ValueError`` naming the allowed values."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return task


def validate_variants(variants: Optional[Iterable[str]], *, what: str = "variants") -> Optional[tuple[str, ...]]:
    """Check a variant list and return it as a tuple (``None`` and ``[]`` both mean "all variants" → ``None``).

    Raises ``ValueError`` for an unknown name (listing the 8 valid ones), for a bare string (a common YAML slip:
    ``variants: SER`` instead of ``[SER]``) and for duplicates (they would silently weight the uniform choice).
    """
    if variants is None:
        return None
    if isinstance(variants, str):
        raise ValueError(f"{what} must be a list of variant names such as ['SER', 'SE'], got the string {variants!r}")
    variants = tuple(variants)
    if not variants:
        return None
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        raise ValueError(f"unknown MM-IPC variant(s) {unknown} in {what}={list(variants)}; valid: {list(ALL_VARIANTS)}")
    duplicates = sorted({v for v in variants if variants.count(v) > 1})
    if duplicates:
        raise ValueError(f"{what}={list(variants)} lists {duplicates} more than once")
    return variants


def variant_families(variant: str) -> tuple[bool, ...]:
    """The row families a variant applies to, as ``is_indoor`` values: ``(True,)``, ``(False,)`` or both for C."""
    families = tuple(is_indoor for is_indoor in (True, False) if (is_indoor, variant) in REMOVED_BY_VARIANT)
    if not families:
        raise ValueError(f"unknown MM-IPC variant {variant!r}; valid: {list(ALL_VARIANTS)}")
    return families


def family_filter(variants: Optional[Sequence[str]]) -> Optional[bool]:
    """Row filter implied by an allowed-variant list: ``True`` = indoor rows only, ``False`` = outdoor only,
    ``None`` = all rows.

    Thesis rule (``_filter_metadata``): if every variant is indoor-only the rows are filtered to indoor, if every
    variant is outdoor-only to outdoor; a list containing C (valid for both) or mixing families keeps all rows,
    and so do ``None`` / ``[]``.
    """
    if not variants:
        return None
    needs_indoor = any(v in INDOOR_VARIANTS for v in variants)
    needs_outdoor = any(v in OUTDOOR_VARIANTS for v in variants)
    if needs_indoor and not needs_outdoor:
        return True
    if needs_outdoor and not needs_indoor:
        return False
    return None


def compatible_variants(variants: Optional[Sequence[str]], is_indoor: bool) -> tuple[str, ...]:
    """The variants a row of this family can take: ``variants`` restricted to the family, in the given order;
    with ``variants`` None/empty the whole family list (:data:`INDOOR_VARIANTS` / :data:`OUTDOOR_VARIANTS`)."""
    family = INDOOR_VARIANTS if is_indoor else OUTDOOR_VARIANTS
    if not variants:
        return family
    compatible = tuple(v for v in variants if v in family)
    if not compatible:
        raise ValueError(
            f"no variant in {list(variants)} applies to an {'indoor' if is_indoor else 'outdoor'} row "
            f"(that family allows {list(family)})"
        )
    return compatible


def removed_stems(variant: str, is_indoor: bool, task: str) -> tuple[str, ...]:
    """Stems subtracted from ``mix`` to build the model input, each listed once.

    ``input = mix − Σ_{k ∈ removed} stem_k``. The background part comes from :data:`REMOVED_BY_VARIANT`; for
    task ES speaker 2 is removed too (``speaker2``, plus ``sp2_reverb`` indoors, which C already removes: a stem
    is never subtracted twice).
    """
    validate_task(task)
    try:
        removed = list(REMOVED_BY_VARIANT[(bool(is_indoor), variant)])
    except KeyError:
        raise ValueError(
            f"variant {variant!r} does not apply to an {'indoor' if is_indoor else 'outdoor'} row; "
            f"allowed: {list(INDOOR_VARIANTS if is_indoor else OUTDOOR_VARIANTS)}"
        ) from None
    if task == "ES":
        for stem in ("speaker2", "sp2_reverb") if is_indoor else ("speaker2",):
            if stem not in removed:
                removed.append(stem)
    return tuple(removed)


def stems_to_load(variant: str, is_indoor: bool, task: str) -> tuple[str, ...]:
    """Every stem a (variant, family, task) item reads: mix and both dry speakers (the targets need them; SB/EB/ES
    all read speaker 2, as the thesis does) plus the removed stems ("lazy loading": nothing else is read)."""
    needed = ["mix", "speaker1", "speaker2"]
    needed += [s for s in removed_stems(variant, is_indoor, task) if s not in needed]
    return tuple(needed)


def choose_eval_variant(compatible: Sequence[str], index: int) -> str:
    """Deterministic variant for validation/test item ``index``: the thesis's ``random.Random(idx).choice``.

    Kept bit-identical to the thesis so a validation pool built from a multi-variant list assigns the same
    variant to the same position (harmless for the usual ``["SER", "SE"]``, where each row has one option).
    """
    if len(compatible) == 1:
        return compatible[0]
    return random.Random(index).choice(list(compatible))
