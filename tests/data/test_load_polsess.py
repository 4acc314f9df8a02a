"""load_polsess: first-N rows after the family filter, variant choice, item format and the error paths."""

import csv
import random
import re
import time
import wave

import numpy as np
import pytest
import torch

from polsess_hf.data import AudioReadError, load_polsess
from polsess_hf.data.audio import read_audio
from polsess_hf.data.loading import training_draw


def _csv(root, split):
    with open(root / split / f"corpus_{root.name}_{split}_final.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _indoor_flags(root, split):
    return [row["reverbForSpeaker1"] != "" for row in _csv(root, split)]


# --- rows: family filter, then the first N (the thesis's train_max_samples) -----------------------------------
@pytest.mark.parametrize(
    "variants,family",
    [(["R"], True), (["SER", "SR"], True), (["SE"], False), (["S", "E"], False), (["C"], None), (["SER", "SE"], None),
     (None, None), (["C", "R"], None)],
)  # fmt: skip
@pytest.mark.parametrize("max_samples", [None, 5])
def test_first_n_rows_after_the_family_filter(mini_root, cache_dir, variants, family, max_samples):
    flags = _indoor_flags(mini_root, "train")
    expected = [row for row, indoor in enumerate(flags) if family is None or indoor == family]
    if max_samples is not None:
        expected = expected[:max_samples]
    dataset = load_polsess(mini_root, "train", variants=variants, max_samples=max_samples, cache_dir=cache_dir)
    assert dataset.rows.tolist() == expected
    assert len(dataset) == len(expected)
    ids = [row["mixFile"] for row in _csv(mini_root, "train")]
    assert [dataset[i]["id"] for i in range(len(dataset))] == [ids[row] for row in expected]


def test_max_samples_larger_than_the_split_and_zero(mini_root, cache_dir):
    assert len(load_polsess(mini_root, "val", max_samples=10_000, cache_dir=cache_dir)) == 8
    assert len(load_polsess(mini_root, "val", max_samples=0, cache_dir=cache_dir)) == 0
    with pytest.raises(ValueError, match="max_samples must be a non-negative integer"):
        load_polsess(mini_root, "val", max_samples=-1, cache_dir=cache_dir)


# --- variant choice ------------------------------------------------------------------------------------------------
def test_training_variants_are_random_but_reproducible_from_seed_epoch_index(mini_root, cache_dir):
    variants = ["C", "R", "SR", "S"]
    first = load_polsess(mini_root, "train", variants=variants, seed=3, cache_dir=cache_dir)
    again = load_polsess(mini_root, "train", variants=variants, seed=3, cache_dir=cache_dir)
    other_seed = load_polsess(mini_root, "train", variants=variants, seed=4, cache_dir=cache_dir)
    draws = {}
    for epoch in (1, 2, 3):
        for dataset in (first, again, other_seed):
            dataset.set_epoch(epoch)
        draws[epoch] = [first.variant_for(i) for i in range(len(first))]
        assert draws[epoch] == [again.variant_for(i) for i in range(len(again))]
        assert draws[epoch] == [first[i]["variant"] for i in range(len(first))]
        flags = [first.metadata(i)["is_indoor"] for i in range(len(first))]
        for variant, indoor in zip(draws[epoch], flags):
            assert variant in (("C", "R", "SR") if indoor else ("C", "S"))
    assert draws[1] != draws[2] != draws[3]  # a new draw each epoch
    other_seed.set_epoch(1)
    assert [other_seed.variant_for(i) for i in range(len(other_seed))] != draws[1]
    # The documented rule itself.
    first.set_epoch(2)
    for index in range(len(first)):
        compatible = ("C", "R", "SR") if first.metadata(index)["is_indoor"] else ("C", "S")
        assert first.variant_for(index) == compatible[training_draw(3, 2, index) % len(compatible)]


def test_training_draw_is_roughly_uniform():
    counts = np.bincount([training_draw(0, 1, i) % 3 for i in range(30_000)], minlength=3)
    assert np.all(np.abs(counts / 30_000 - 1 / 3) < 0.015)


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_variants_are_deterministic_per_index_as_in_the_thesis(mini_root, cache_dir, split):
    variants = ["R", "SR", "ER", "S", "E"]
    dataset = load_polsess(mini_root, split, variants=variants, cache_dir=cache_dir)
    assert not dataset.random_variants
    before = [dataset.variant_for(i) for i in range(len(dataset))]
    dataset.set_epoch(7)
    assert [dataset.variant_for(i) for i in range(len(dataset))] == before
    for index, variant in enumerate(before):
        family = ("R", "SR", "ER") if dataset.metadata(index)["is_indoor"] else ("S", "E")
        assert variant == random.Random(index).choice(list(family))


def test_validation_pool_ser_se_is_every_row_unmodified(mini_root, cache_dir):
    dataset = load_polsess(mini_root, "val", variants=["SER", "SE"], cache_dir=cache_dir)
    assert len(dataset) == 8
    assert all(dataset[i]["variant"] == ("SER" if dataset[i]["is_indoor"] else "SE") for i in range(8))


def test_forced_variant_and_item_format(mini_root, cache_dir):
    clean = load_polsess(mini_root, "test", variant="C", task="EB", cache_dir=cache_dir)
    assert len(clean) == 6 and {clean[i]["variant"] for i in range(6)} == {"C"}
    item = clean[0]
    assert set(item) == {"input_values", "labels", "variant", "is_indoor", "id"}
    assert item["input_values"].shape == (32000,) and item["labels"].shape == (1, 32000)
    assert item["input_values"].dtype == torch.float32 and isinstance(item["is_indoor"], bool)
    indoor_only = load_polsess(mini_root, "test", variant="ER", cache_dir=cache_dir)
    assert all(indoor_only[i]["is_indoor"] for i in range(len(indoor_only)))
    with pytest.raises(ValueError, match="either variant='C' or variants"):
        load_polsess(mini_root, "test", variant="C", variants=["C"], cache_dir=cache_dir)
    with pytest.raises(IndexError):
        clean[6]


def test_argument_errors(mini_root, cache_dir):
    with pytest.raises(ValueError, match="task must be one of"):
        load_polsess(mini_root, "val", task="SS", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="unknown MM-IPC variant"):
        load_polsess(mini_root, "val", variants=["SEX"], cache_dir=cache_dir)
    with pytest.raises(ValueError, match="split must be one of"):
        load_polsess(mini_root, "dev", cache_dir=cache_dir)
    dataset = load_polsess(mini_root, "val", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="epoch must be an integer ≥ 1"):
        dataset.set_epoch(0)


def test_missing_split_is_reported(generator_root, cache_dir):
    with pytest.raises(FileNotFoundError, match="has no test split"):
        load_polsess(generator_root, "test", cache_dir=cache_dir)


# --- decoding and file errors ---------------------------------------------------------------------------------
def _write_wav(path, samples, rate=8000, channels=1):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def test_decoding_is_int16_over_32768_and_matches_soundfile(tmp_path):
    import soundfile as sf

    samples = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    _write_wav(tmp_path / "a.wav", samples)
    decoded, rate = read_audio(str(tmp_path / "a.wav"))
    assert rate == 8000 and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded[:, 0], samples.astype(np.float32) / 32768)
    np.testing.assert_array_equal(decoded, sf.read(str(tmp_path / "a.wav"), dtype="float32", always_2d=True)[0])
    # A file the fast path does not parse (float WAV) goes through soundfile.
    sf.write(tmp_path / "f.wav", np.array([0.5, -0.25], dtype=np.float32), 8000, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(str(tmp_path / "f.wav"))[0][:, 0], [0.5, -0.25])


def _broken_copy(corpus_copy, name):
    root = corpus_copy(name)
    row = _csv(root, "val")[3]
    return root, row


def test_wrong_sample_rate_is_caught_at_load_time(corpus_copy, cache_dir):
    root, _ = _broken_copy(corpus_copy, "rate16k")
    first = _csv(root, "val")[0]
    _write_wav(root / "val" / "mix" / first["mixFile"], np.zeros(64000, np.int16), rate=16000)
    message = r"sampled at 16000 Hz but 8000 Hz was expected \(split 'val', CSV row 0, column mixFile"
    with pytest.raises(AudioReadError, match=message):
        load_polsess(root, "val", cache_dir=cache_dir)
    assert len(load_polsess(root, "val", cache_dir=cache_dir, sample_rate=None)) == 8  # opt-out


@pytest.mark.parametrize("damage", ["stereo", "garbage", "short", "deleted"])
def test_broken_files_name_the_file_and_the_row(corpus_copy, cache_dir, damage):
    root, row = _broken_copy(corpus_copy, f"broken_{damage}")
    path = root / "val" / "clean" / row["speaker1File"]
    if damage == "stereo":
        _write_wav(path, np.zeros(64000, np.int16), channels=2)
        pattern = "has 2 channels but the corpus is mono"
    elif damage == "garbage":
        path.write_bytes(b"RIFF....not audio at all" * 10)
        pattern = "cannot decode"
    elif damage == "short":
        _write_wav(path, np.zeros(31000, np.int16))
        pattern = "has 31000 samples but the mix .* has 32000"
    else:
        dataset = load_polsess(root, "val", cache_dir=cache_dir)  # prepared while the file still existed
        path.unlink()
        message = rf"cannot open {re.escape(str(path))}.*CSV row 3, column speaker1File"
        with pytest.raises(AudioReadError, match=message):
            dataset[3]
        return
    dataset = load_polsess(root, "val", cache_dir=cache_dir)
    dataset[2]  # other rows are fine
    with pytest.raises(AudioReadError, match=pattern) as error:
        dataset[3]
    assert str(path) in str(error.value) and "CSV row 3" in str(error.value)


# --- speed ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_prepared_16k_row_index_loads_in_under_10_seconds(mini_root, tmp_path):
    root = tmp_path / "big16k"
    (root / "train").mkdir(parents=True)
    for folder in ("mix", "clean", "scene", "event", "sp1_reverb", "sp2_reverb", "ev_reverb"):
        (root / "train" / folder).symlink_to(mini_root / "train" / folder)
    lines = (mini_root / "train" / f"corpus_{mini_root.name}_train_final.csv").read_text().splitlines()
    body = [lines[1 + i % (len(lines) - 1)] for i in range(16_000)]
    (root / "train" / "corpus_big16k_train_final.csv").write_text("\n".join([lines[0]] + body) + "\n")
    load_polsess(root, "train", cache_dir=tmp_path / "cache")  # prepare once
    start = time.perf_counter()
    dataset = load_polsess(root, "train", curriculum="standard", max_samples=16_000, cache_dir=tmp_path / "cache")
    elapsed = time.perf_counter() - start
    assert len(dataset) == 16_000 and elapsed < 10.0
