"""Libri2Mix evaluation loader on a small fake tree with utterances of different lengths."""

import wave

import numpy as np
import pytest
import torch

from polsess_hf.data import AudioReadError, SeparationCollator, load_libri2mix


def _write(path, samples, rate=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, dtype="<i2").tobytes())


@pytest.fixture
def libri_root(tmp_path):
    root = tmp_path / "Libri2Mix"
    rng = np.random.default_rng(0)
    split = root / "wav8k" / "min" / "test"
    # Written out of order: the loader must sort. Sources are longer than the mixture for "b" (trimmed).
    for name, length in (("c_03.wav", 9000), ("a_01.wav", 12000), ("b_02.wav", 7000)):
        s1 = rng.integers(-3000, 3000, length + (500 if name.startswith("b") else 0))
        s2 = rng.integers(-3000, 3000, length + (500 if name.startswith("b") else 0))
        _write(split / "s1" / name, s1)
        _write(split / "s2" / name, s2)
        _write(split / "mix_clean" / name, (s1[:length] + s2[:length]) // 2)
        _write(split / "mix_both" / name, (s1[:length] + s2[:length]) // 2 + rng.integers(-100, 100, length))
    return root


def test_items_are_sorted_trimmed_and_in_the_polsess_format(libri_root):
    dataset = load_libri2mix(libri_root, "test")
    assert dataset.names == ["a_01.wav", "b_02.wav", "c_03.wav"] and len(dataset) == 3
    item = dataset[1]
    assert set(item) == {"input_values", "labels", "variant", "is_indoor", "id"}
    assert item["input_values"].shape == (7000,) and item["labels"].shape == (2, 7000)
    assert item["input_values"].dtype == torch.float32 and item["variant"] == "mix_clean" and item["id"] == "b_02.wav"
    np.testing.assert_allclose(
        item["input_values"].numpy(),
        np.floor((item["labels"][0] + item["labels"][1]).numpy() * 32768 / 2) / 32768,
        atol=1 / 32768,
    )
    noisy = load_libri2mix(libri_root, "test", mixture="mix_both", max_samples=2)
    assert len(noisy) == 2 and noisy[0]["variant"] == "mix_both"


def test_padded_evaluation_batch(libri_root):
    dataset = load_libri2mix(libri_root)
    batch = SeparationCollator("pad")([dataset[i] for i in range(3)])
    assert batch["input_values"].shape == (3, 12000) and batch["lengths"].tolist() == [12000, 7000, 9000]


def test_errors(libri_root, tmp_path):
    with pytest.raises(ValueError, match="task 'SB' only"):
        load_libri2mix(libri_root, task="ES")
    with pytest.raises(ValueError, match="split must be one of"):
        load_libri2mix(libri_root, "eval")
    with pytest.raises(FileNotFoundError, match="no Libri2Mix folder .*wav16k/min/test/mix_clean"):
        load_libri2mix(libri_root, sample_rate=16000)
    with pytest.raises(FileNotFoundError, match="It exists one level down: pass root="):
        load_libri2mix(libri_root.parent)
    (libri_root / "wav8k" / "min" / "test" / "s2" / "c_03.wav").unlink()
    with pytest.raises(FileNotFoundError, match="1 source file\\(s\\) of .* are missing:\n  .*s2/c_03.wav"):
        load_libri2mix(libri_root)
    assert len(load_libri2mix(libri_root, max_samples=2)) == 2  # the missing file is not among the first two


def test_sample_rate_is_checked_against_the_folder(libri_root):
    _write(libri_root / "wav8k" / "min" / "test" / "mix_clean" / "a_01.wav", np.zeros(24000), rate=16000)
    dataset = load_libri2mix(libri_root)
    message = "sampled at 16000 Hz but 8000 Hz was expected \\(Libri2Mix test/mix_clean, item 0\\)"
    with pytest.raises(AudioReadError, match=message):
        dataset[0]


def test_split_aliases(libri_root):
    (libri_root / "wav8k" / "min" / "dev").mkdir()
    with pytest.raises(FileNotFoundError, match="min/dev/mix_clean"):
        load_libri2mix(libri_root, "val")
