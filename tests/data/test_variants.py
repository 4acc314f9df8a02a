"""The MM-IPC table: variant names, families, removed stems per task, family filter, variant choice."""

import random

import pytest

from polsess_hf.data.variants import (
    ALL_VARIANTS,
    INDOOR_VARIANTS,
    OUTDOOR_VARIANTS,
    REMOVED_BY_VARIANT,
    choose_eval_variant,
    compatible_variants,
    family_filter,
    removed_stems,
    stems_to_load,
    validate_task,
    validate_variants,
    variant_families,
)


def test_eight_distinct_variants_and_c_in_both_families():
    assert len(ALL_VARIANTS) == 8 == len(set(INDOOR_VARIANTS) | set(OUTDOOR_VARIANTS))
    assert set(INDOOR_VARIANTS) & set(OUTDOOR_VARIANTS) == {"C"}
    assert variant_families("C") == (True, False)
    assert variant_families("SER") == (True,)
    assert variant_families("SE") == (False,)


# The spec's table (polsess_data.md §3), written out independently of the module.
SPEC_TABLE = {
    (True, "SER"): set(),
    (True, "SR"): {"event", "ev_reverb"},
    (True, "ER"): {"scene"},
    (True, "R"): {"scene", "event", "ev_reverb"},
    (True, "C"): {"scene", "event", "ev_reverb", "sp1_reverb", "sp2_reverb"},
    (False, "SE"): set(),
    (False, "S"): {"event"},
    (False, "E"): {"scene"},
    (False, "C"): {"scene", "event"},
}


@pytest.mark.parametrize("key", sorted(SPEC_TABLE, key=str))
def test_removed_stems_match_the_spec_for_sb_and_eb(key):
    is_indoor, variant = key
    assert set(REMOVED_BY_VARIANT[key]) == SPEC_TABLE[key]
    for task in ("SB", "EB"):
        assert set(removed_stems(variant, is_indoor, task)) == SPEC_TABLE[key]


@pytest.mark.parametrize("key", sorted(SPEC_TABLE, key=str))
def test_es_also_removes_speaker2_and_its_tail_once(key):
    is_indoor, variant = key
    removed = removed_stems(variant, is_indoor, "ES")
    assert len(removed) == len(set(removed)), f"a stem is subtracted twice: {removed}"
    expected = SPEC_TABLE[key] | {"speaker2"} | ({"sp2_reverb"} if is_indoor else set())
    assert set(removed) == expected
    assert "speaker1" not in removed  # the target speaker is never touched
    if variant != "C":
        assert "sp1_reverb" not in removed  # speaker 1's tail goes only with C


def test_variant_letters_name_what_is_kept():
    # S kept ⇔ scene not removed; E kept ⇔ event not removed; R kept (indoor) ⇔ speaker tails not removed.
    for (is_indoor, variant), removed in REMOVED_BY_VARIANT.items():
        assert ("S" in variant) == ("scene" not in removed)
        assert ("E" in variant) == ("event" not in removed)
        if is_indoor:
            assert ("E" in variant) == ("ev_reverb" not in removed)
            assert ("R" in variant) == ("sp1_reverb" not in removed)


def test_wrong_family_variant_is_rejected():
    with pytest.raises(ValueError, match="does not apply to an outdoor row"):
        removed_stems("SER", False, "SB")
    with pytest.raises(ValueError, match="does not apply to an indoor row"):
        removed_stems("SE", True, "SB")


def test_stems_to_load_is_lazy():
    assert stems_to_load("SER", True, "SB") == ("mix", "speaker1", "speaker2")
    assert stems_to_load("S", False, "SB") == ("mix", "speaker1", "speaker2", "event")
    everything = {"mix", "speaker1", "speaker2", "scene", "event", "ev_reverb", "sp1_reverb", "sp2_reverb"}
    assert set(stems_to_load("C", True, "ES")) == everything


def test_family_filter_rules():
    assert family_filter(None) is None and family_filter([]) is None
    assert family_filter(["SER"]) is True and family_filter(["R", "SR"]) is True
    assert family_filter(["SE"]) is False and family_filter(["S", "E"]) is False
    assert family_filter(["C"]) is None and family_filter(["C", "R"]) is None and family_filter(["SER", "SE"]) is None


def test_compatible_variants_keep_the_given_order():
    assert compatible_variants(["C", "R"], True) == ("C", "R")
    assert compatible_variants(["C", "R"], False) == ("C",)
    assert compatible_variants(None, True) == INDOOR_VARIANTS
    assert compatible_variants(None, False) == OUTDOOR_VARIANTS
    with pytest.raises(ValueError, match="no variant in \\['SER'\\] applies to an outdoor row"):
        compatible_variants(["SER"], False)


def test_eval_choice_is_the_thesis_rule():
    options = ("R", "SR", "S", "SER")
    for index in range(50):
        assert choose_eval_variant(options, index) == random.Random(index).choice(list(options))


def test_validation_errors_name_the_value():
    assert validate_variants(None) is None and validate_variants([]) is None
    assert validate_variants(["SER", "SE"]) == ("SER", "SE")
    with pytest.raises(ValueError, match="unknown MM-IPC variant\\(s\\) \\['XR'\\]"):
        validate_variants(["SER", "XR"])
    with pytest.raises(ValueError, match="got the string 'SER'"):
        validate_variants("SER")
    with pytest.raises(ValueError, match="more than once"):
        validate_variants(["R", "R"])
    with pytest.raises(ValueError, match="task must be one of"):
        validate_task("SS")
