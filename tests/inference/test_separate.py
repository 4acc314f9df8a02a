"""separate(): lengths from 1 sample to minutes, 8/16/44.1 kHz, mono and stereo, speaker order across chunks,
overlap-add exactness, bounded memory (structurally), and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile
import torch

from polsess_hf.data.audio import AudioReadError
from polsess_hf.inference import _separate_mono, best_permutation, separate
from polsess_hf.losses import si_sdr
from separation_fakes import CallRecorder, IdentitySeparator, OracleSeparator, make_tiny, speech_like

CHUNK = 32_000  # default chunk at the 8 kHz model rate: 4 s
OVERLAP = 8_000  # default overlap: 1 s


def _si_sdr(estimates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return si_sdr(torch.from_numpy(np.ascontiguousarray(estimates)), torch.from_numpy(np.ascontiguousarray(targets))).numpy()


# -- lengths, rates, channels ---------------------------------------------------------------------------------
# Input lengths chosen so that, after resampling to 8 kHz, they are 1 sample, short, exactly one chunk and one
# chunk + 1 sample (ceil(T·8000/rate) samples at the model rate); the last needs a second, 8001-sample chunk.
LENGTHS = {
    8000: {"1": 1, "short": 2_400, "chunk": 32_000, "chunk+1": 32_001},
    16000: {"1": 1, "short": 4_800, "chunk": 64_000, "chunk+1": 64_001},
    44100: {"1": 1, "short": 13_230, "chunk": 176_400, "chunk+1": 176_401},
}
MODEL_LENGTH = {"1": 1, "short": 2_400, "chunk": 32_000, "chunk+1": 32_001}


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
@pytest.mark.parametrize("case", ["1", "short", "chunk", "chunk+1"])
@pytest.mark.parametrize("stereo", [False, True], ids=["mono", "stereo"])
def test_output_has_the_input_length_and_rate(tiny_convtasnet, rate, case, stereo):
    length = LENGTHS[rate][case]
    rng = np.random.default_rng(length)
    audio = (0.1 * rng.standard_normal((2, length) if stereo else length)).astype(np.float32)
    recorder = CallRecorder(tiny_convtasnet)
    estimates = separate(tiny_convtasnet, audio, rate)
    assert estimates.shape == (2, length) and estimates.dtype == np.float32
    assert np.isfinite(estimates).all()
    assert length == 1 or np.abs(estimates).max() > 0
    model_length = MODEL_LENGTH[case]
    expected = [(1, model_length)] if model_length <= CHUNK else [(1, CHUNK), (1, model_length - CHUNK + OVERLAP)]
    assert recorder.shapes == expected


@pytest.mark.parametrize("model_type", ["convtasnet", "dprnn", "sepformer", "spmamba"])
def test_every_architecture_separates_chunked_stereo(model_type):
    model = make_tiny(model_type)
    recorder = CallRecorder(model)
    audio = np.stack([speech_like(9.0, 16000, seed=1), speech_like(9.0, 16000, seed=2)])  # 72 000 samples at 8 kHz
    estimates = separate(model, audio, 16000, batch_size=2)
    assert estimates.shape == (2, 144_000) and np.isfinite(estimates).all()
    # chunks start at 0, 24 000, 48 000; the third is 72 000 − 48 000 = 24 000 long, so it runs on its own
    assert recorder.shapes == [(2, CHUNK), (1, 24_000)]


def test_three_minutes_in_bounded_batches(tiny_convtasnet):
    """3 min at 8 kHz: the network only ever sees batches of ≤ 4 chunks of ≤ 4 s, and no batch's estimates are
    still alive when the next batch runs (chunks are stitched as they come, not collected first)."""
    audio = speech_like(180.0, 8000, seed=3)
    recorder = CallRecorder(tiny_convtasnet)
    estimates = separate(tiny_convtasnet, audio, 8000, batch_size=4)
    assert estimates.shape == (2, 1_440_000) and np.isfinite(estimates).all()
    # hop 24 000: chunks start at 0, 24 000, …, 1 416 000 (60 chunks); the first 59 are full, the last is
    # 1 440 000 − 1 416 000 = 24 000 long → 14 batches of 4, one of 3, then the short one.
    assert recorder.shapes == [(4, CHUNK)] * 14 + [(3, CHUNK), (1, 24_000)]
    assert max(recorder.alive_at_call) <= 1, recorder.alive_at_call
    assert all(recorder.eval_mode)


def test_chunked_agrees_with_single_pass(tiny_convtasnet):
    audio = speech_like(20.0, 8000, seed=4) + speech_like(20.0, 8000, seed=5)
    single = separate(tiny_convtasnet, audio, 8000, chunk_seconds=None)
    chunked = separate(tiny_convtasnet, audio, 8000)
    agreement = _si_sdr(chunked, single)
    assert (agreement > 25).all(), agreement


def test_model_folder_and_mode(tiny_model_dir, tiny_convtasnet):
    audio = speech_like(5.0, 8000, seed=6)
    np.testing.assert_array_equal(separate(str(tiny_model_dir), audio), separate(tiny_convtasnet, audio))
    tiny_convtasnet.train()
    recorder = CallRecorder(tiny_convtasnet)
    separate(tiny_convtasnet, audio)
    assert recorder.eval_mode == [True, True] and tiny_convtasnet.training  # eval inside, mode restored


# -- speaker order across chunks ------------------------------------------------------------------------------
def test_speaker_order_is_aligned_across_chunks():
    """An oracle returns the true sources but swaps them in some chunks; the stitched output must be the sources
    in the first chunk's order (also where speaker 2 is silent on an overlap), naive stitching must not be."""
    rate, chunk, overlap, hop = 8000, 16_000, 4_000, 12_000
    sources = np.stack([speech_like(20.0, rate, seed=11), speech_like(20.0, rate, seed=12)])
    sources[1, 35_000:41_000] = 0  # speaker 2 silent on the overlap of chunks 2 and 3 ([36 000, 40 000))
    mixture = sources.sum(axis=0)
    swapped = {1, 2, 4, 7, 8, 11}  # 13 chunks: starts 0, 12 000, …, 144 000
    oracle = OracleSeparator(mixture, sources, lambda start: (1, 0) if start // hop in swapped else (0, 1))

    estimates = separate(oracle, mixture, rate, chunk_seconds=2.0, overlap=0.5, batch_size=3)
    assert sorted(oracle.starts) == list(range(0, 144_001, hop))
    np.testing.assert_allclose(estimates, sources, atol=1e-6)

    naive = _separate_mono(oracle, mixture, chunk=chunk, overlap=overlap, batch_size=3, device=torch.device("cpu"),
                           align=False)
    assert (_si_sdr(naive, sources) < 5).all()
    assert (_si_sdr(naive[::-1], sources) < 5).all()


def test_three_speakers_in_random_orders():
    rate, hop = 8000, 12_000
    sources = np.stack([speech_like(12.0, rate, seed=20 + k) for k in range(3)])
    mixture = sources.sum(axis=0)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(3) for _ in range(20)]
    oracle = OracleSeparator(mixture, sources, lambda start: orders[start // hop])
    estimates = separate(oracle, mixture, rate, chunk_seconds=2.0, overlap=0.5)
    np.testing.assert_allclose(estimates, sources[orders[0]], atol=1e-6)


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_best_permutation_recovers_a_known_order(order):
    reference = np.random.default_rng(1).standard_normal((3, 500))
    estimates = 0.3 * reference[list(order)] + 0.01 * np.random.default_rng(2).standard_normal((3, 500))
    perm = best_permutation(reference, estimates)
    assert list(np.asarray(order)[perm]) == [0, 1, 2]


def test_best_permutation_keeps_the_order_on_silence():
    assert list(best_permutation(np.zeros((2, 100)), np.zeros((2, 100)))) == [0, 1]


# -- overlap-add and resampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 100, 16_000, 16_001, 40_000, 100_003])
@pytest.mark.parametrize("chunk_seconds, overlap", [(2.0, 0.5), (2.0, 1.0), (0.5, 0.01)])
def test_identity_network_gives_back_its_input(length, chunk_seconds, overlap):
    audio = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    model = IdentitySeparator()
    estimates = separate(model, audio, 8000, chunk_seconds=chunk_seconds, overlap=overlap)
    np.testing.assert_allclose(estimates[0], audio, atol=1e-6)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_resampling_round_trip_keeps_a_band_limited_signal(rate):
    t = np.arange(3 * rate) / rate
    audio = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    estimates = separate(IdentitySeparator(), audio, rate)  # identity at 8 kHz: output = low-passed input
    assert estimates.shape == (1, audio.size)
    interior = slice(rate // 20, -rate // 20)  # the polyphase filter's edge transients excluded
    assert np.abs(estimates[0, interior] - audio[interior]).max() < 1e-2
    assert _si_sdr(estimates[0], audio) > 30


def test_stereo_is_downmixed_to_the_channel_mean(tiny_convtasnet):
    left, right = speech_like(6.0, 16000, seed=7), speech_like(6.0, 16000, seed=8)
    stereo = separate(tiny_convtasnet, np.stack([left, right]), 16000)
    mono = separate(tiny_convtasnet, (left + right) / 2, 16000)
    np.testing.assert_allclose(stereo, mono, atol=1e-6)


def test_tensor_in_tensor_out(tiny_convtasnet):
    audio = speech_like(5.0, 16000, seed=9)
    from_tensor = separate(tiny_convtasnet, torch.from_numpy(audio).double(), 16000)
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.dtype == torch.float32
    np.testing.assert_array_equal(from_tensor.numpy(), separate(tiny_convtasnet, audio, 16000))


def test_file_input_reads_its_rate(tiny_convtasnet, tmp_path):
    audio = np.stack([speech_like(3.0, 22050, seed=10), speech_like(3.0, 22050, seed=11)])
    path = tmp_path / "stereo.flac"
    soundfile.write(path, audio.T, 22050, subtype="PCM_16")
    decoded, _ = soundfile.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(separate(tiny_convtasnet, path), separate(tiny_convtasnet, decoded.T, 22050))
    with pytest.raises(ValueError, match="stereo.flac is sampled at 22050 Hz but sampling_rate=16000"):
        separate(tiny_convtasnet, path, 16000)


# -- edge cases and errors --------------------------------------------------------------------------------------
def test_silence_gives_zeros_without_running_the_network(tiny_convtasnet):
    recorder = CallRecorder(tiny_convtasnet)
    estimates = separate(tiny_convtasnet, np.zeros((2, 50_000), np.float32), 16000)
    assert estimates.shape == (2, 50_000) and not estimates.any() and recorder.shapes == []
    faint = separate(tiny_convtasnet, np.full(20_000, 1e-30, np.float32), 8000)  # not digital silence: runs
    assert np.isfinite(faint).all() and len(recorder.shapes) == 1


@pytest.mark.parametrize(
    "audio, match",
    [
        (np.zeros(0, np.float32), r"empty \(0 samples\)"),
        (np.zeros((2, 0), np.float32), r"empty \(0 samples\)"),
        (np.zeros((0, 10), np.float32), "no channels"),
        (np.zeros((1, 2, 100), np.float32), r"shape \(time_steps,\) or \(channels, time_steps\), got shape \(1, 2, 100\)"),
        (np.float32(0.5), r"got shape \(\)"),
        (np.zeros((48_000, 2), np.float32), r"\(48000, 2\).*pass its transpose \(audio.T\)"),
        (np.zeros(100, np.int16), "floating-point waveform .* divide by 32768"),
        ([0.1, 0.2], "file path, a numpy array or a torch tensor"),
    ],
    ids=["empty", "empty-stereo", "no-channels", "3d", "0d", "time-major", "int16", "list"],
)
def test_bad_audio_is_refused_clearly(tiny_convtasnet, audio, match):
    with pytest.raises((ValueError, TypeError), match=match):
        separate(tiny_convtasnet, audio, 8000)


def test_non_finite_samples_are_reported_with_their_position(tiny_convtasnet):
    audio = np.zeros((2, 16_000), np.float32)
    audio[1, 8_000] = np.nan
    audio[0, 12_000] = np.inf
    with pytest.raises(ValueError, match=r"1 NaN and 1 infinite sample\(s\).*first at sample 8000 \(0.500 s\)"):
        separate(tiny_convtasnet, audio, 16000)


def test_unreadable_files_name_the_path(tiny_convtasnet, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioReadError, match="broken.wav"):
        separate(tiny_convtasnet, broken)
    with pytest.raises(AudioReadError, match="missing.wav"):
        separate(tiny_convtasnet, tmp_path / "missing.wav")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chunk_seconds": 0}, "chunk_seconds"),
        ({"chunk_seconds": float("nan")}, "chunk_seconds"),
        ({"overlap": 0}, r"overlap` must be in \(0, chunk_seconds / 2\]"),
        ({"chunk_seconds": 2.0, "overlap": 1.5}, r"\(0, 1\] seconds, got overlap=1.5"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampling_rate": -8000}, "sampling_rate"),
        ({"sampling_rate": 8000.5}, "sampling_rate"),
    ],
)
def test_bad_options_are_refused(tiny_convtasnet, kwargs, match):
    with pytest.raises(ValueError, match=match):
        separate(tiny_convtasnet, np.ones(100, np.float32), **kwargs)


def test_bad_models_are_refused(tmp_path):
    with pytest.raises(OSError, match="no_model_here"):
        separate(str(tmp_path / "no_model_here"), np.ones(100, np.float32))
    with pytest.raises(TypeError, match="must be a separator"):
        separate(object(), np.ones(100, np.float32))
    plain = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="config.sampling_rate"):
        separate(plain, np.ones(100, np.float32))


def test_non_finite_model_output_is_reported():
    class Broken(IdentitySeparator):
        def forward(self, input_values):
            return types.SimpleNamespace(estimates=torch.full_like(input_values, float("nan")).unsqueeze(1))

    with pytest.raises(RuntimeError, match=r"non-finite estimates .* between 0.00 s and 4.00 s"):
        separate(Broken(), np.ones(80_000, np.float32), 8000, chunk_seconds=4.0, overlap=1.0)


def test_package_exports_separate_lazily():
    code = (
        "import sys, polsess_hf\n"
        "assert 'polsess_hf.inference' not in sys.modules, 'inference imported at package import'\n"
        "from polsess_hf import separate\n"
        "import polsess_hf.inference\n"
        "assert separate is polsess_hf.inference.separate and polsess_hf.separate is separate\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
