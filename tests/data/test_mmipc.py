"""MM-IPC inputs and targets for every variant, both families and all three tasks, against float64 stem arithmetic."""

import numpy as np
import pytest
import torch

from data_helpers import read_f64
from polsess_hf.data import load_polsess
from polsess_hf.data.variants import INDOOR_VARIANTS, OUTDOOR_VARIANTS, STEMS

# The spec's formula written out independently: which stems each (family, variant) subtracts from the mix.
BACKGROUND = {
    (True, "SER"): [],
    (True, "SR"): ["event", "ev_reverb"],
    (True, "ER"): ["scene"],
    (True, "R"): ["scene", "event", "ev_reverb"],
    (True, "C"): ["scene", "event", "ev_reverb", "sp1_reverb", "sp2_reverb"],
    (False, "SE"): [],
    (False, "S"): ["event"],
    (False, "E"): ["scene"],
    (False, "C"): ["scene", "event"],
}
CASES = [(True, v) for v in INDOOR_VARIANTS] + [(False, v) for v in OUTDOOR_VARIANTS]


def _expected(meta: dict, is_indoor: bool, variant: str, task: str):
    stems = {s: read_f64(meta[f"{s}_path"]) for s in STEMS if meta[f"{s}_path"] is not None}
    removed = set(BACKGROUND[(is_indoor, variant)])
    if task == "ES":
        removed |= {"speaker2"} | ({"sp2_reverb"} if is_indoor else set())
    expected_input = stems["mix"] - sum((stems[s] for s in removed), np.zeros_like(stems["mix"]))
    s1, s2 = stems["speaker1"], stems["speaker2"]
    expected_labels = {"SB": np.stack([s1, s2]), "EB": (s1 + s2)[None], "ES": s1[None]}[task]
    return expected_input, expected_labels


@pytest.mark.parametrize("task", ["SB", "EB", "ES"])
@pytest.mark.parametrize("is_indoor,variant", CASES, ids=[f"{'in' if i else 'out'}-{v}" for i, v in CASES])
def test_input_and_labels_equal_float64_stem_arithmetic(mini_root, cache_dir, task, is_indoor, variant):
    dataset = load_polsess(mini_root, "val", task=task, variant=variant, cache_dir=cache_dir)
    positions = [i for i in range(len(dataset)) if dataset.metadata(i)["is_indoor"] == is_indoor][:2]
    assert positions, "the fixture corpus must have rows of both families"
    for position in positions:
        item = dataset[position]
        meta = dataset.metadata(position)
        assert item["variant"] == variant and item["is_indoor"] == is_indoor and item["id"] == meta["mixFile"]
        expected_input, expected_labels = _expected(meta, is_indoor, variant, task)
        assert item["input_values"].dtype == item["labels"].dtype == torch.float32
        assert tuple(item["labels"].shape) == expected_labels.shape == ({"SB": 2}.get(task, 1), 32000)
        # float32 accumulation of ≤ 6 terms of magnitude < 1: errors ~1e-7.
        np.testing.assert_allclose(item["input_values"].numpy(), expected_input, rtol=0, atol=2e-6)
        np.testing.assert_allclose(item["labels"].numpy(), expected_labels, rtol=0, atol=2e-6)


@pytest.mark.parametrize("is_indoor,variant", [(True, "SER"), (False, "SE")])
def test_full_complexity_variants_are_the_raw_mix_file(mini_root, cache_dir, is_indoor, variant):
    dataset = load_polsess(mini_root, "val", variant=variant, cache_dir=cache_dir)
    for position in range(len(dataset)):
        mix = read_f64(dataset.metadata(position)["mix_path"])
        np.testing.assert_array_equal(dataset[position]["input_values"].numpy(), mix.astype(np.float32))


def test_es_clean_reproduces_dry_speaker1_to_the_16bit_floor(mini_root, cache_dir):
    """ES + C cancels every layer but dry speaker 1 (the identity the thesis audits on real data, ~1e-4 RMS)."""
    dataset = load_polsess(mini_root, "train", task="ES", variant="C", cache_dir=cache_dir)
    for position in range(len(dataset)):
        item = dataset[position]
        residual = item["input_values"].numpy().astype(np.float64) - item["labels"][0].numpy()
        assert np.sqrt(np.mean(residual**2)) < 1e-4
        assert np.sqrt(np.mean(item["labels"][0].numpy() ** 2)) > 1e-2  # and speaker 1 is really there


def test_sb_clean_is_the_dry_two_speaker_mixture(mini_root, cache_dir):
    dataset = load_polsess(mini_root, "train", task="SB", variant="C", cache_dir=cache_dir)
    for position in range(len(dataset)):
        item = dataset[position]
        residual = item["input_values"].numpy().astype(np.float64) - item["labels"].numpy().sum(0)
        assert np.sqrt(np.mean(residual**2)) < 1e-4
