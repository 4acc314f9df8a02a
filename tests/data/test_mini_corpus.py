"""The generated mini corpus: exact PolSESS layout and CSV, file format, physics of the stems, determinism, CLI."""

import csv
import filecmp
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_helpers import N_TEST, N_TRAIN, N_VAL, read_f64
from polsess_hf.data import load_polsess
from polsess_hf.data.mini import FORK_COLUMNS, MIN_PITCH_RATIO, NUM_SAMPLES, main, make_mini_polsess
from polsess_hf.data.variants import STEM_COLUMNS, STEM_FOLDERS

FOLDERS = {"mix", "clean", "scene", "event", "sp1_reverb", "sp2_reverb", "ev_reverb"}


def _rows(root, split):
    with open(root / split / f"corpus_{root.name}_{split}_final.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_and_csv_schema(mini_root):
    for split, count in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        entries = {p.name for p in (mini_root / split).iterdir()}
        assert entries == FOLDERS | {f"corpus_mini_polsess_{split}_final.csv"}
        with open(mini_root / split / f"corpus_mini_polsess_{split}_final.csv", newline="") as handle:
            header = next(csv.reader(handle))
        assert header == list(FORK_COLUMNS)
        rows = _rows(mini_root, split)
        assert len(rows) == count
        indoor = [row["reverbForSpeaker1"] != "" for row in rows]
        assert sum(indoor) == (count + 1) // 2  # both families, half and half
        for row, is_indoor in zip(rows, indoor):
            assert row["subset"] == split
            assert re.fullmatch(r"[a-z0-9]{16}\.wav", row["speaker1File"])
            parts = [row["speaker1File"], row["speaker2File"], row["sceneFile"], row["eventFile"]]
            expected_mix = "-".join(p[:-4] for p in parts)
            if is_indoor:
                revid = row["reverbForSpeaker1"][4:-4]
                assert row["reverbForSpeaker2"] == f"sp2_{revid}.wav" and row["reverbForEvent"] == f"ev_{revid}.wav"
                expected_mix += f"-{revid}"
                assert row["preDelay1"] != "NaN" and float(row["preDelay2"]) <= float(row["preDelay1"])
            else:
                assert row["reverbForSpeaker2"] == row["reverbForEvent"] == "" and row["decay"] == "NaN"
            assert row["mixFile"] == expected_mix + ".wav"
            assert -5 <= int(row["SSR"]) <= 5 and -14 <= float(row["sceneOffsetDB"]) <= 0


def test_every_file_is_8khz_16bit_mono_4s(mini_root):
    for path in (mini_root / "val").glob("*/*.wav"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (8000, 1, NUM_SAMPLES, "PCM_16")


def _stems(root, split, row):
    stems = {}
    for stem, column in STEM_COLUMNS.items():
        if row[column]:
            stems[stem] = read_f64(root / split / STEM_FOLDERS[stem] / row[column])
    return stems


def test_mix_is_the_sum_of_its_stems_and_levels_follow_the_generator(mini_root):
    for row in _rows(mini_root, "train"):
        stems = _stems(mini_root, "train", row)
        residual = stems["mix"] - sum(v for k, v in stems.items() if k != "mix")
        assert np.sqrt(np.mean(residual**2)) < 4e-5  # independent 16-bit quantisation of ≤ 8 files
        s1, s2 = stems["speaker1"], stems["speaker2"]
        assert 20 * np.log10(np.linalg.norm(s1) / np.linalg.norm(s2)) == pytest.approx(int(row["SSR"]), abs=0.05)
        scene_db = 20 * np.log10(np.sqrt(np.mean(stems["scene"] ** 2)) / np.sqrt(np.mean((s1 + s2) ** 2)))
        assert scene_db == pytest.approx(float(row["sceneOffsetDB"]), abs=0.05)
        assert np.abs(stems["mix"]).max() < 0.999


def test_reverb_stems_are_wet_only_tails(mini_root):
    for row in _rows(mini_root, "train"):
        if not row["reverbForSpeaker1"]:
            continue
        stems = _stems(mini_root, "train", row)
        pairs = (("speaker1", "sp1_reverb", "preDelay1"), ("event", "ev_reverb", "preDelayForEvent"))
        for source, tail, delay in pairs:
            # Silent during the pre-delay: no direct path in the stored stem.
            assert np.all(stems[tail][: int(float(row[delay]) * 8000) - 1] == 0)
            dry, wet = stems[source], stems[tail]
            correlation = np.dot(dry, wet) / (np.linalg.norm(dry) * np.linalg.norm(wet) + 1e-12)
            assert abs(correlation) < 0.5, "the tail must not contain the dry signal"
        assert np.sqrt(np.mean(stems["sp1_reverb"] ** 2)) < np.sqrt(np.mean(stems["speaker1"] ** 2))


def _pitch(signal):
    """Median autocorrelation pitch (Hz) over voiced 40 ms frames."""
    estimates = []
    for start in range(0, len(signal) - 320, 320):
        frame = signal[start : start + 320] - signal[start : start + 320].mean()
        if np.sqrt(np.mean(frame**2)) < 0.3 * np.sqrt(np.mean(signal**2)):
            continue
        ac = np.correlate(frame, frame, "full")[319:]
        lag = 20 + np.argmax(ac[20:110])  # 73–400 Hz
        if ac[lag] > 0.5 * ac[0]:
            estimates.append(8000 / lag)
    return np.median(estimates)


def test_speech_has_two_distinct_voices_with_pauses(mini_root):
    for row in _rows(mini_root, "val"):
        f0 = [float(re.search(r"f0_([0-9.]+)Hz", row[f"speech{k}OryginalPath"]).group(1)) for k in (1, 2)]
        assert max(f0) / min(f0) >= MIN_PITCH_RATIO - 1e-3
        stems = _stems(mini_root, "val", row)
        measured = [_pitch(stems["speaker1"]), _pitch(stems["speaker2"])]
        assert (measured[0] > measured[1]) == (f0[0] > f0[1]), f"declared {f0}, measured {measured}"
        for speech in (stems["speaker1"], stems["speaker2"]):
            frames = speech[: len(speech) // 400 * 400].reshape(-1, 400)  # 50 ms
            energy = np.sqrt(np.mean(frames**2, axis=1))
            quiet = np.mean(energy < 0.05 * energy.max())
            assert 0.03 < quiet < 0.7, f"speech needs pauses and syllables, quiet fraction {quiet:.2f}"


def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    first = make_mini_polsess(tmp_path / "one" / "corpus", 3, 1, 0, seed=5)
    second = make_mini_polsess(tmp_path / "two" / "corpus", 3, 1, 0, seed=5, num_workers=2)
    third = make_mini_polsess(tmp_path / "three" / "corpus", 3, 1, 0, seed=6)
    for split in ("train", "val"):
        left = sorted(p.relative_to(first) for p in (first / split).rglob("*.wav"))
        right = sorted(p.relative_to(second) for p in (second / split).rglob("*.wav"))
        assert left == right
        assert all(filecmp.cmp(first / p, second / p, shallow=False) for p in left)
        csv_name = f"corpus_corpus_{split}_final.csv"
        assert filecmp.cmp(first / split / csv_name, second / split / csv_name, shallow=False)
    assert _rows(first, "train")[0]["mixFile"] != _rows(third, "train")[0]["mixFile"]
    assert not (first / "test").exists()  # n_test=0 writes no split


def test_generator_schema_and_argument_errors(generator_root, tmp_path):
    rows = _rows(generator_root, "train")
    assert len(rows[0]) == 31 and "sceneRandomDB" not in rows[0]
    with pytest.raises(ValueError, match="schema must be"):
        make_mini_polsess(tmp_path / "x", 1, 0, 0, schema="matlab")
    with pytest.raises(ValueError, match="n_val must be a non-negative integer"):
        make_mini_polsess(tmp_path / "x", 1, -1, 0)


def test_cli_round_trip(tmp_path, cache_dir, capsys):
    root = tmp_path / "cli_corpus"
    assert main([str(root), "--train", "2", "--val", "1", "--test", "1", "--seed", "9"]) == 0
    assert "wrote a mini PolSESS corpus" in capsys.readouterr().out
    dataset = load_polsess(root, "test", task="SB", cache_dir=cache_dir)
    assert len(dataset) == 1 and dataset[0]["labels"].shape == (2, NUM_SAMPLES)


def test_console_script_is_installed(tmp_path):
    script = subprocess.run(
        [sys.executable, "-c", "from importlib.metadata import entry_points; "
         "print([e.value for e in entry_points(group='console_scripts') if e.name == 'polsess-make-mini'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "polsess_hf.data.mini:main" in script.stdout
