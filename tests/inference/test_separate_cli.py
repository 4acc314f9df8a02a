"""polsess-separate: one WAV per source at the input's rate and length, clipping handling, per-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from polsess_hf.inference import _write_sources, main, separate
from separation_fakes import speech_like


def _write_inputs(folder: Path) -> tuple[Path, Path]:
    stereo = folder / "call.wav"  # 16 kHz stereo PCM
    soundfile.write(stereo, np.stack([speech_like(3.0, 16000, 1), speech_like(3.0, 16000, 2)]).T, 16000, subtype="PCM_16")
    mono = folder / "field.flac"  # 44.1 kHz mono FLAC, 1.5 s
    soundfile.write(mono, speech_like(1.5, 44100, 3), 44100)
    return stereo, mono


def test_writes_one_float_wav_per_source_at_the_input_rate(tiny_model_dir, tmp_path, capsys):
    stereo, mono = _write_inputs(tmp_path)
    out_dir = tmp_path / "separated"
    assert main([str(stereo), str(mono), "--model", str(tiny_model_dir), "--out-dir", str(out_dir), "--device", "cpu"]) == 0
    expected = [out_dir / f"{name}_spk{k}.wav" for name in ("call", "field") for k in (1, 2)]
    assert capsys.readouterr().out.split() == [str(path) for path in expected]
    for path, (rate, frames) in zip(expected, [(16000, 48000)] * 2 + [(44100, 66150)] * 2):
        info = soundfile.info(path)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (rate, frames, 1, "FLOAT")
    # the files hold exactly what separate() returns for the decoded input
    decoded, _ = soundfile.read(stereo, dtype="float32", always_2d=True)
    reference = separate(str(tiny_model_dir), decoded.T, 16000)
    for k in range(2):
        np.testing.assert_array_equal(soundfile.read(expected[k], dtype="float32")[0], reference[k])


def test_chunk_options_reach_separate(tiny_model_dir, tmp_path):
    stereo, _ = _write_inputs(tmp_path)
    main([str(stereo), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path / "one_pass"), "--chunk-seconds", "0"])
    decoded, _ = soundfile.read(stereo, dtype="float32", always_2d=True)
    single = separate(str(tiny_model_dir), decoded.T, 16000, chunk_seconds=None)
    np.testing.assert_array_equal(soundfile.read(tmp_path / "one_pass" / "call_spk1.wav", dtype="float32")[0], single[0])


def test_pcm16_scales_all_sources_together_only_when_they_would_clip(tmp_path):
    loud = np.stack([np.linspace(-3, 3, 1000), np.linspace(-1.5, 1.5, 1000)]).astype(np.float32)
    paths = _write_sources(loud, 8000, tmp_path, "loud", "PCM_16")
    first, second = (soundfile.read(path)[0] for path in paths)
    assert abs(np.abs(first).max() - 0.99) < 1e-4
    assert abs(np.abs(second).max() - 0.495) < 1e-4  # relative level kept
    quiet = 0.5 * loud / 3
    paths = _write_sources(quiet, 8000, tmp_path, "quiet", "PCM_16")
    np.testing.assert_allclose(soundfile.read(paths[0])[0], quiet[0], atol=1 / 32768)


def test_a_bad_file_is_reported_and_the_others_still_written(tiny_model_dir, tmp_path, capsys):
    stereo, _ = _write_inputs(tmp_path)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    silent_nan = tmp_path / "nan.wav"
    soundfile.write(silent_nan, np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    code = main([str(broken), str(silent_nan), str(stereo), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {broken}:" in captured.err and "cannot decode" in captured.err
    assert f"error: {silent_nan}: `audio` contains 1 NaN" in captured.err
    assert captured.out.split() == [str(tmp_path / "o" / f"call_spk{k}.wav") for k in (1, 2)]


def test_clashing_names_and_bad_models_are_refused(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a" / "x.wav"), str(tmp_path / "b" / "x.wav"), "--model", "m", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "['x']" in capsys.readouterr().err
    assert main([str(tmp_path / "x.wav"), "--model", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path)]) == 2
    assert "cannot load a separator from" in capsys.readouterr().err
