"""A small, generated corpus in the exact PolSESS layout, for demos, tests and CI without the real corpus.

:func:`make_mini_polsess` writes ``<out_dir>/{train,val,test}/`` with the PolSESS folders (``mix``, ``clean``,
``scene``, ``event``, ``sp1_reverb``, ``sp2_reverb``, ``ev_reverb``) and the metadata CSV
``<out_dir>/<split>/corpus_<basename(out_dir)>_<split>_final.csv`` in the generator's column layout (the
34-column fork schema by default, the 31-column original with ``schema="generator"``). Everything is 8 kHz,
16-bit PCM, mono, 4 s (32 000 samples), like the thesis corpora.

What each row contains, mirroring the MATLAB generator (``s17060/PolSESS``):

* **two distinct synthetic voices** (``clean/``): a band-limited glottal pulse train with a moving pitch
  contour (phrase declination, syllable accents, slow drift), shaped by moving formants (vowel targets scaled by
  the speaker's vocal-tract factor), with syllable rhythm (onset consonants as noise bursts, vowel nuclei,
  attack/decay), word gaps and longer pauses. The two voices of a row differ in pitch by at least
  :data:`MIN_PITCH_RATIO` and in formant scale, so a small separator can learn to tell them apart. Speaker 2 is
  scaled to an integer SSR in [−5, 5] dB, ``SSR = 20·log10(‖s1‖/‖s2‖)``;
* **a scene** (``scene/``): coloured noise with slow level modulation plus class-specific texture (mains hum,
  rumble, bird chirps, waves, traffic swells), at ``RMS(scene) = RMS(s1 + s2)·10^(o/20)``, o ~ U[−14, 0] dB
  (the fork's rule; ``sceneOffsetDB`` = o, ``sceneRandomDB`` = o + 14, ``sceneVolumeGain`` = the gain applied);
* **a dry sound event** (``event/``) matching the scene's family (knocks, rings, barks, clinks, horns, sirens, …);
* **indoor rows only: wet-only reverb tails** (``sp1_reverb/``, ``sp2_reverb/``, ``ev_reverb/``): each dry
  source convolved with a synthetic room tail (exponentially decaying noise with pre-delay, low-pass and
  frequency-dependent decay) that contains no direct path, like the generator's reverberator at WetDryMix = 1;
* ``mix = s1 + s2 + scene + event (+ ev_reverb + sp1_reverb + sp2_reverb indoors)``, computed in float64 from
  the unquantised stems; every file is then quantised on its own (``round(x·32768)``), so ``mix − Σ stems`` leaves
  the same 16-bit residual as the real corpus (≈ 1e-5 RMS here).

Deviation from the generator, on purpose: a row whose mixture or any stem would exceed 0.95 is scaled down as a
whole (mix and stems by the same factor) instead of being regenerated, so a seed maps to a fixed corpus row by row
and no stem is ever clipped. Rows are split into indoor and outdoor half and half, in a seeded random order.
Generation is deterministic in ``seed`` (each row has its own ``SeedSequence([seed, split, row])``, so any
``num_workers`` gives the same bytes) and costs a few tens of milliseconds of CPU per row.

CLI: ``polsess-make-mini OUT_DIR --train 200 --val 50 --test 50 --seed 0 [--num-workers 4]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .variants import STEM_COLUMNS, STEM_FOLDERS

__all__ = [
    "make_mini_polsess",
    "main",
    "SAMPLE_RATE",
    "NUM_SAMPLES",
    "GENERATOR_COLUMNS",
    "FORK_COLUMNS",
    "MIN_PITCH_RATIO",
    "INDOOR_SCENES",
    "OUTDOOR_SCENES",
]

SAMPLE_RATE = 8000
NUM_SAMPLES = 4 * SAMPLE_RATE
#: The two voices of a row differ in mean pitch by at least this factor (≈ 3.9 semitones).
MIN_PITCH_RATIO = 1.25

#: The 31 columns of ``generatePolSESSInit.m`` (spelling "Oryginal" included), in order.
GENERATOR_COLUMNS: tuple[str, ...] = (
    "subset", "speech1OryginalPath", "speech1Start", "speech1End", "speech2OryginalPath", "speech2Start",
    "speech2End", "SSR", "sceneOryginalPath", "sceneStart", "sceneEnd", "eventOryginalPath", "eventStart",
    "eventEnd", "speaker1File", "speaker2File", "eventFile", "sceneFile", "reverbForSpeaker1", "reverbForSpeaker2",
    "reverbForEvent", "mixFile", "sceneClass", "eventClass", "preDelayForEvent", "preDelay1", "preDelay2",
    "highCut", "diffusion", "decay", "freqDamp",
)  # fmt: skip
#: The thesis author's fork inserts three scene-level columns after ``sceneEnd`` (34 columns).
FORK_COLUMNS: tuple[str, ...] = (
    GENERATOR_COLUMNS[: GENERATOR_COLUMNS.index("sceneEnd") + 1]
    + ("sceneRandomDB", "sceneOffsetDB", "sceneVolumeGain")
    + GENERATOR_COLUMNS[GENERATOR_COLUMNS.index("sceneEnd") + 1 :]
)

# Scene classes of the TUT/TAU corpora the generator draws from, split by its indoor/outdoor table.
INDOOR_SCENES: tuple[str, ...] = ("cafe/restaurant", "home", "office", "library", "metro_station", "grocery_store")
OUTDOOR_SCENES: tuple[str, ...] = ("park", "street_traffic", "beach", "residential_area", "city_center", "forest_path")
_INDOOR_EVENTS = ("door_knock", "phone_ring", "glass_clink", "keyboard_typing", "footsteps", "dog_bark")
_OUTDOOR_EVENTS = ("car_horn", "siren", "dog_bark", "bird_chirp", "footsteps")

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_ID_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))

# Vowel formant targets (F1, F2, F3, F4 in Hz) for an adult voice with vocal-tract factor 1; Polish a e i y o u.
_VOWELS = np.array(
    [
        [730.0, 1250.0, 2500.0, 3350.0],  # a
        [550.0, 1750.0, 2500.0, 3400.0],  # e
        [300.0, 2250.0, 2950.0, 3500.0],  # i
        [420.0, 1650.0, 2450.0, 3350.0],  # y
        [520.0, 900.0, 2400.0, 3300.0],  # o
        [330.0, 780.0, 2300.0, 3250.0],  # u
    ]
)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0, 250.0])
_FORMANT_GAINS = np.array([1.0, 0.6, 0.28, 0.12])

_NFFT = 256
_HOP = 64
_FREQS = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE)  # (129,)
# Periodic Hann (overlap-adds to a constant at hop = NFFT/4). The STFT path runs in float32: with float64
# frames the FFTs are memory-bound and ~4x slower here, and 16-bit output needs no more precision.
_WINDOW = np.hanning(_NFFT + 1)[:-1].astype(np.float32)
_OLA_GAIN = float(np.sum(_WINDOW.astype(np.float64) ** 2) / _HOP)


# ---------------------------------------------------------------------------------------------------------------
# Small DSP helpers (vectorised numpy; everything works on float64 signals of NUM_SAMPLES samples)
# ---------------------------------------------------------------------------------------------------------------
# Left padding so that every signal sample is covered by NFFT/HOP frames (a constant window-square sum).
_PAD_LEFT = _NFFT - _HOP


def _frames(signal: np.ndarray) -> np.ndarray:
    """Windowed frames ``(..., n_frames, NFFT)`` of signals ``(..., n)``.

    Frame j is centred on sample ``j·HOP + NFFT/2 − _PAD_LEFT``.
    """
    padded = np.pad(signal.astype(np.float32), [(0, 0)] * (signal.ndim - 1) + [(_PAD_LEFT, _NFFT)])
    n_frames = 1 + (padded.shape[-1] - _NFFT) // _HOP
    view = np.lib.stride_tricks.sliding_window_view(padded, _NFFT, axis=-1)[..., ::_HOP, :][..., :n_frames, :]
    return view * _WINDOW


def _stft(signal: np.ndarray) -> np.ndarray:
    """STFT ``(..., n_frames, NFFT/2 + 1)`` of signals ``(..., n)`` with a periodic Hann window, hop NFFT/4."""
    return np.fft.rfft(_frames(signal), axis=-1)


def _istft(spectrum: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft` (exact reconstruction for an unmodified spectrum)."""
    frames = np.fft.irfft(spectrum, n=_NFFT, axis=-1) * _WINDOW
    n_frames = frames.shape[0]
    out = np.zeros(_HOP * (n_frames - 1) + _NFFT, dtype=np.float32)
    for offset in range(_NFFT // _HOP):  # 4 strided adds instead of a loop over hundreds of frames
        block = frames[offset :: (_NFFT // _HOP)].reshape(-1)
        start = offset * _HOP
        out[start : start + block.size] += block
    return out[_PAD_LEFT : _PAD_LEFT + length].astype(np.float64) / _OLA_GAIN


def _frame_times(n_samples: int) -> np.ndarray:
    """Centre times (s) of the :func:`_stft` frames of an ``n_samples`` signal."""
    n_frames = 1 + (n_samples + _PAD_LEFT) // _HOP
    return (np.arange(n_frames) * _HOP + _NFFT // 2 - _PAD_LEFT) / SAMPLE_RATE


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis (edges renormalised), used to glide between syllable targets."""
    if width <= 1:
        return x
    # Running sums: O(n) whatever the width (np.convolve would be O(n·width)).
    pad_lo, pad_hi = width // 2, width - 1 - width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad_lo, pad_hi)])
    counts = np.pad(np.ones(x.shape[-1]), (pad_lo, pad_hi))
    csum = np.cumsum(np.pad(padded, [(0, 0)] * (x.ndim - 1) + [(1, 0)]), axis=-1)
    ccount = np.cumsum(np.pad(counts, (1, 0)))
    return (csum[..., width:] - csum[..., :-width]) / (ccount[width:] - ccount[:-width])


def _frame_gate(starts: np.ndarray, ends: np.ndarray, ramp_s: float, times: np.ndarray) -> np.ndarray:
    """A 0..1 gate at ``times`` (s): 1 inside each [start, end) interval, raised-cosine edges of ``ramp_s``."""
    if len(starts) == 0:
        return np.zeros_like(times)
    rise = (times[None, :] - (starts[:, None] - ramp_s)) / ramp_s
    fall = ((ends[:, None] + ramp_s) - times[None, :]) / ramp_s
    gate = np.clip(np.minimum(rise, fall), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * gate)).max(axis=0)


def _coloured_noise(rng: np.random.Generator, beta: float, n: int = NUM_SAMPLES) -> np.ndarray:
    """Unit-RMS noise with power spectrum ∝ 1/f^beta (0 white, 1 pink, 2 brown)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum *= 1.0 / np.maximum(freqs, 20.0) ** (beta / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _bandpass_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Unit-RMS noise band-limited to [low, high] Hz (FFT brick-wall with soft edges)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    width = max(50.0, 0.1 * (high - low))
    shape = 1 / (1 + np.exp(-(freqs - low) / (0.25 * width))) * 1 / (1 + np.exp((freqs - high) / (0.25 * width)))
    noise = np.fft.irfft(spectrum * shape, n=n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


# ---------------------------------------------------------------------------------------------------------------
# Speech
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Voice:
    f0: float  # mean pitch (Hz)
    tract: float  # formant scale factor (shorter vocal tract → higher formants)
    syllable_s: float  # mean syllable duration (s)
    tilt_db_per_octave: float  # glottal spectral slope above 500 Hz
    breathiness: float  # aspiration noise relative to the voiced source


def _draw_voices(rng: np.random.Generator) -> tuple[_Voice, _Voice]:
    """Two voices whose mean pitches differ by ≥ MIN_PITCH_RATIO (and whose tract factors follow the pitch)."""
    lo, hi = math.log(85.0), math.log(255.0)
    gap = math.log(MIN_PITCH_RATIO)
    log_f0_1 = rng.uniform(lo, hi)
    # Pitch of voice 2: uniform over [lo, hi] minus the exclusion band around voice 1 (always non-empty, since
    # the range spans 1.1 octaves and the band is 2·0.32 octaves at most).
    below = max(0.0, (log_f0_1 - gap) - lo)
    above = max(0.0, hi - (log_f0_1 + gap))
    u = rng.uniform(0.0, below + above)
    log_f0_2 = lo + u if u < below else log_f0_1 + gap + (u - below)

    def voice(log_f0: float) -> _Voice:
        position = (log_f0 - lo) / (hi - lo)  # 0 = lowest voice, 1 = highest
        return _Voice(
            f0=math.exp(log_f0),
            tract=float(np.clip(0.88 + 0.3 * position + rng.normal(0, 0.04), 0.82, 1.25)),
            syllable_s=float(rng.uniform(0.15, 0.24)),
            tilt_db_per_octave=float(rng.uniform(-12.0, -7.0)),
            breathiness=float(rng.uniform(0.02, 0.08)),
        )

    return voice(log_f0_1), voice(log_f0_2)


def _syllable_plan(rng: np.random.Generator, voice: _Voice, duration: float) -> list[tuple[float, float, int, str]]:
    """Syllables ``(start_s, end_s, vowel_index, onset)`` laid out as words separated by gaps and pauses.

    ``onset`` is the syllable's initial consonant class: "" (none), "fricative", "plosive" or "nasal".
    """
    syllables = []
    # A 4 s PolSESS clip is cut from running speech: it may start mid-word or in a pause.
    t = rng.uniform(-0.15, 0.5)
    while t < duration:
        n_syllables = int(rng.integers(1, 5))
        for _ in range(n_syllables):
            length = float(np.clip(rng.normal(voice.syllable_s, 0.04), 0.09, 0.38))
            onset = str(rng.choice(["", "fricative", "plosive", "nasal"], p=[0.3, 0.3, 0.25, 0.15]))
            syllables.append((t, t + length, int(rng.integers(len(_VOWELS))), onset))
            t += length
        # Word gap (short) or phrase pause (long), as in read and conversational speech.
        t += rng.uniform(0.25, 0.7) if rng.random() < 0.25 else rng.uniform(0.03, 0.14)
    return [s for s in syllables if s[1] > 0 and s[0] < duration]


def _synthesise_speech(rng: np.random.Generator, voice: _Voice, n: int = NUM_SAMPLES) -> np.ndarray:
    """One unit-RMS utterance ``(n,)`` from a voice: moving pitch and formants, syllable rhythm, pauses.

    Source-filter synthesis in the STFT domain: every control signal (pitch, gates, formants, loudness) lives
    at the 8 ms frame rate, so only the excitation is built sample by sample.
    """
    plan = _syllable_plan(rng, voice, n / SAMPLE_RATE)
    frame_t = _frame_times(n)
    starts = np.array([s[0] for s in plan])
    ends = np.array([s[1] for s in plan])

    # Pitch contour in octaves: slow drift + per-phrase declination + Gaussian accents on some syllables.
    octaves = 0.06 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * frame_t + rng.uniform(0, 2 * np.pi))
    octaves += 0.12 - 0.24 * ((frame_t % rng.uniform(1.6, 2.6)) / 2.6)
    accented = rng.random(len(plan)) < 0.45
    if accented.any():
        centres = 0.5 * (starts + ends)[accented]
        widths = 0.35 * (ends - starts)[accented]
        heights = rng.uniform(0.08, 0.25, size=accented.sum())
        bumps = np.exp(-0.5 * ((frame_t[None] - centres[:, None]) / widths[:, None]) ** 2)  # (accents, frames)
        octaves += (heights[:, None] * bumps).sum(0)
    f0 = np.interp(np.arange(n) / SAMPLE_RATE, frame_t, voice.f0 * 2.0**octaves)
    # Band-limited pulse train (Dirichlet kernel): K harmonics, all below 3.9 kHz at the highest pitch reached.
    n_harmonics = max(1, int(3900.0 / f0.max()))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    half = np.sin(phase / 2)
    safe = np.abs(half) > 1e-6
    pulses = np.where(safe, np.sin((n_harmonics + 0.5) * phase) / (2 * np.where(safe, half, 1.0)) - 0.5, n_harmonics)
    voiced = pulses / math.sqrt(n_harmonics / 2) + voice.breathiness * rng.standard_normal(n)  # unit power
    excitation = _stft(np.stack([voiced, rng.standard_normal(n)]))  # (2, n_frames, n_bins)

    # Gates: vowel nuclei are voiced; consonant onsets are a noise band (fricative), a short burst (plosive) or
    # a low voiced murmur (nasal).
    onset = np.array([{"": 0.0, "fricative": 0.07, "plosive": 0.025, "nasal": 0.05}[s[3]] for s in plan])
    is_noise = np.array([s[3] in ("fricative", "plosive") for s in plan], dtype=bool)
    is_nasal = np.array([s[3] == "nasal" for s in plan], dtype=bool)
    voiced_gate = _frame_gate(starts + onset, ends - 0.02, 0.02, frame_t)
    noise_gate = _frame_gate(starts[is_noise], (starts + onset)[is_noise], 0.008, frame_t)
    nasal_gate = _frame_gate(starts[is_nasal], (starts + onset)[is_nasal], 0.01, frame_t)

    # Syllable loudness (stress): one level per syllable, glided over 40 ms.
    loudness = np.ones_like(frame_t)
    levels = 10 ** (rng.uniform(-6.0, 2.0, size=len(plan)) / 20)
    for (start, end, _, _), level in zip(plan, levels):
        loudness[(frame_t >= start) & (frame_t < end)] = level
    loudness = _smooth(loudness, 5)

    # Formant tracks at frame rate: each syllable's vowel target, glided between syllables (~40 ms smoothing).
    targets = np.full((len(frame_t), 4), np.nan)
    for start, end, vowel, _ in plan:
        targets[(frame_t >= start) & (frame_t < end)] = _VOWELS[vowel] * voice.tract
    filled = ~np.isnan(targets[:, 0])
    if filled.any():
        for k in range(4):
            targets[:, k] = np.interp(frame_t, frame_t[filled], targets[filled, k])
    else:
        targets[:] = _VOWELS[0] * voice.tract
    formants = np.minimum(_smooth(targets.T, 5).T, 3800.0).astype(np.float32)  # (n_frames, 4)

    # Spectral envelopes (n_frames, n_bins): resonances on a glottal tilt; fricatives get a high band.
    freqs = _FREQS.astype(np.float32)
    half_bw = (0.5 * _FORMANT_BANDWIDTHS * voice.tract).astype(np.float32)
    vowel_env = np.zeros((len(frame_t), len(freqs)), dtype=np.float32)
    for k in range(4):  # one 2-D pass per formant: ~6x faster than one 3-D broadcast (cache-friendly)
        detuning = (freqs[None, :] - formants[:, k : k + 1]) * np.float32(1.0 / half_bw[k])
        vowel_env += np.float32(_FORMANT_GAINS[k]) / (1.0 + detuning * detuning)  # resonance power shape
    vowel_env *= np.float32(10) ** (voice.tilt_db_per_octave * np.log2(np.maximum(_FREQS, 500.0) / 500.0) / 20)
    fric_env = (np.exp(-0.5 * ((_FREQS - rng.uniform(2600.0, 3600.0)) / 700.0) ** 2) + 0.05).astype(np.float32)
    nasal_env = (1.0 / np.sqrt(1.0 + ((_FREQS - 250.0 * voice.tract) / 120.0) ** 2)).astype(np.float32)

    voiced_gain = (loudness * voiced_gate).astype(np.float32)[:, None]
    nasal_gain = (0.5 * loudness * nasal_gate).astype(np.float32)[:, None]
    voiced_filter = voiced_gain * vowel_env + nasal_gain * nasal_env
    noise_filter = (0.12 * loudness * noise_gate).astype(np.float32)[:, None] * fric_env[None, :]
    speech = _istft(excitation[0] * voiced_filter + excitation[1] * noise_filter, n)
    return speech / (_rms(speech) + 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Scenes, events, reverb
# ---------------------------------------------------------------------------------------------------------------
def _synthesise_scene(rng: np.random.Generator, scene_class: str, n: int = NUM_SAMPLES) -> np.ndarray:
    """Unit-RMS background ``(n,)``: coloured noise with slow level changes and a class-specific texture."""
    t = np.arange(n) / SAMPLE_RATE
    base = _coloured_noise(rng, rng.uniform(0.6, 1.8), n)
    base *= 1 + rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * t + rng.uniform(0, 6.3))
    texture = np.zeros(n)
    if scene_class in ("office", "home", "library", "grocery_store"):
        mains = rng.choice([50.0, 60.0])  # hum at mains harmonics
        texture = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in (2, 3, 4))
    elif scene_class in ("metro_station", "street_traffic", "city_center"):
        texture = _coloured_noise(rng, 2.4, n) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t) ** 2)
    elif scene_class == "cafe/restaurant":
        # Distant clatter: sparse short high-frequency clicks.
        clicks = np.zeros(n)
        clicks[rng.integers(0, n, size=int(rng.integers(8, 25)))] = rng.uniform(-1, 1, size=1)
        texture = np.convolve(clicks, np.exp(-np.arange(200) / 30.0) * np.sin(np.arange(200) * 2.1), mode="same")
    elif scene_class in ("park", "forest_path", "residential_area"):
        for _ in range(int(rng.integers(2, 7))):  # bird chirps: fast downward sweeps around 2.5-3.5 kHz
            start = rng.uniform(0, 3.8)
            seg = (t >= start) & (t < start + 0.12)
            local = t[seg] - start
            freq = rng.uniform(2500, 3600) - 6000 * local
            texture[seg] += np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.hanning(seg.sum())
    elif scene_class == "beach":
        texture = _coloured_noise(rng, 1.0, n) * np.sin(np.pi * (t / rng.uniform(2.5, 5.0) + rng.uniform(0, 1))) ** 4
    scene = base + rng.uniform(0.2, 0.6) * texture / (_rms(texture) + 1e-12) if np.any(texture) else base
    return scene / (_rms(scene) + 1e-12)


def _synthesise_event(rng: np.random.Generator, event_class: str, n: int = NUM_SAMPLES) -> np.ndarray:
    """Dry event ``(n,)`` with peak 1: one to three occurrences of a class-specific sound, silence elsewhere."""
    event = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        start = int(rng.uniform(0.0, 3.4) * SAMPLE_RATE)
        if event_class == "door_knock" or event_class == "footsteps":
            hits = 4 if event_class == "door_knock" else 5
            spacing = 0.16 if event_class == "door_knock" else 0.45
            length = int(0.06 * SAMPLE_RATE)
            decay = np.exp(-np.arange(length) / (0.012 * SAMPLE_RATE))
            centre = rng.uniform(150, 400) if event_class == "door_knock" else rng.uniform(80, 200)
            shape = _bandpass_noise(rng, length, centre * 0.5, centre * 3)[:length] * decay
            for k in range(hits):
                s = start + int(k * spacing * SAMPLE_RATE)
                if s + length < n:
                    event[s : s + length] += shape * rng.uniform(0.6, 1.0)
            continue
        length = int(rng.uniform(0.25, 0.8) * SAMPLE_RATE)
        length = min(length, n - start)
        local = np.arange(length) / SAMPLE_RATE
        if event_class == "phone_ring":
            tone = np.sin(2 * np.pi * 1000 * local) + np.sin(2 * np.pi * 1250 * local)
            sound = tone * (np.sin(2 * np.pi * 20 * local) > 0)
        elif event_class == "glass_clink":
            sound = sum(np.sin(2 * np.pi * f * local) for f in rng.uniform(2000, 3800, size=3))
            sound *= np.exp(-local / 0.08)
        elif event_class == "keyboard_typing":
            sound = np.zeros(length)
            clicks = rng.integers(0, max(1, length - 80), size=int(length / 600) + 2)
            for c in clicks:
                sound[c : c + 80] += _bandpass_noise(rng, 80, 1500, 3800)[:80] * np.exp(-np.arange(80) / 15.0)
        elif event_class == "dog_bark":
            f0 = rng.uniform(350, 650)
            length = min(int(0.18 * SAMPLE_RATE), length)
            local = local[:length]
            sound = sum(np.sin(2 * np.pi * f0 * k * local * (1 - 0.8 * local)) / k for k in range(1, 6))
            sound = sound + 0.3 * rng.standard_normal(length)
            sound *= np.sin(np.pi * local / local[-1]) ** 0.5
        elif event_class == "car_horn":
            f0 = rng.uniform(350, 500)
            sound = sum(np.sign(np.sin(2 * np.pi * f0 * k * local)) / k**1.5 for k in (1, 2, 3))
        elif event_class == "siren":
            freq = 900 + 300 * np.sin(2 * np.pi * 1.5 * local)
            sound = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE)
        else:  # bird_chirp
            freq = rng.uniform(2800, 3700) - 4000 * (local % 0.1)
            sound = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * (local % 0.1 < 0.06)
        fade = np.minimum(1.0, np.minimum(local, local[-1] - local) / 0.01)
        event[start : start + length] += sound[:length] * fade
    return event / (np.max(np.abs(event)) + 1e-12)


@dataclass(frozen=True)
class _Room:
    pre_delay_1: float  # s, speaker 1
    pre_delay_2: float  # s, speaker 2 (slightly shorter, as in the generator)
    pre_delay_event: float  # s
    high_cut: float  # Hz, low-pass of the tail
    diffusion: float  # 0..1: density of the early reflections
    decay: float  # 0..1: MATLAB's DecayFactor (high = small room, short tail)
    freq_damp: float  # 0..1: extra decay of high frequencies
    wet_db: float  # tail energy relative to the dry source


def _draw_room(rng: np.random.Generator) -> _Room:
    delshift = rng.uniform(0.0, 0.03)
    pre_delay_1 = 0.005 + delshift
    return _Room(
        pre_delay_1=pre_delay_1,
        pre_delay_2=pre_delay_1 - delshift * rng.uniform(0.0, 0.3),
        pre_delay_event=rng.uniform(0.005, 0.035),
        high_cut=rng.uniform(2500.0, 3900.0),
        diffusion=rng.uniform(0.3, 0.9),
        decay=rng.uniform(0.2, 0.7),
        freq_damp=rng.uniform(0.1, 0.7),
        wet_db=rng.uniform(-10.0, -4.0),
    )


def _room_tail(rng: np.random.Generator, room: _Room) -> np.ndarray:
    """Wet-only impulse response without its pre-delay ``(L,)``: no direct path, only reflections and tail."""
    rt60 = 0.25 + 0.9 * (1.0 - room.decay)  # DecayFactor 0.2 → 0.97 s, 0.7 → 0.52 s
    length = int(min(1.2, 1.1 * rt60) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    low = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    low *= 1 / (1 + (freqs / room.high_cut) ** 4)
    # Frequency-dependent decay: split at 1.5 kHz, high band decays faster with freq_damp.
    split = freqs > 1500.0
    low_band = np.fft.irfft(np.where(split, 0, low), n=length) * np.exp(-6.91 * t / rt60)
    high_rt = rt60 * (1.0 - 0.7 * room.freq_damp)
    high_band = np.fft.irfft(np.where(split, low, 0), n=length) * np.exp(-6.91 * t / high_rt)
    tail = low_band + high_band
    # Sparse early reflections in the first 50 ms; diffusion sets how many.
    for _ in range(int(4 + 16 * room.diffusion)):
        tail[int(rng.uniform(0.0, 0.05) * SAMPLE_RATE)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
    tail[: int(0.002 * SAMPLE_RATE)] *= np.linspace(0.0, 1.0, int(0.002 * SAMPLE_RATE))  # no direct click
    return tail / (np.sqrt(np.sum(tail**2)) + 1e-12)


def _reverberate(dry: np.ndarray, tail: np.ndarray, pre_delay_s: float, wet_db: float) -> np.ndarray:
    """Wet-only signal ``(len(dry),)``: dry ⊛ tail, delayed by the pre-delay, cut to the clip, at ``wet_db``."""
    n = len(dry)
    size = 1 << int(math.ceil(math.log2(n + len(tail))))
    wet = np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(tail, size), size)[:n]
    shift = int(round(pre_delay_s * SAMPLE_RATE))
    wet = np.concatenate([np.zeros(shift), wet[: n - shift]])
    return wet / (_rms(wet) + 1e-12) * _rms(dry) * 10 ** (wet_db / 20)


# ---------------------------------------------------------------------------------------------------------------
# Rows and files
# ---------------------------------------------------------------------------------------------------------------
def _file_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_ID_ALPHABET, size=16))


def _quantise(x: np.ndarray) -> np.ndarray:
    """float → int16 as ``round(x·32768)`` clipped to the int16 range (decoding /32768 inverts it exactly)."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _make_row(seed: int, split: str, row: int, is_indoor: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """One corpus row: the CSV record and the float64 stems keyed by stem name (see :mod:`.variants`)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], row]))
    voice1, voice2 = _draw_voices(rng)
    s1 = _synthesise_speech(rng, voice1)
    s2 = _synthesise_speech(rng, voice2)
    ssr = int(rng.integers(-5, 6))
    s1 *= 10 ** (rng.uniform(-27.0, -21.0) / 20)  # speaker 1 at −27..−21 dBFS RMS
    s2 *= _rms(s1) / _rms(s2) / 10 ** (ssr / 20)  # SSR = 20·log10(‖s1‖/‖s2‖)
    speech_rms = _rms(s1 + s2)

    scene_class = str(rng.choice(INDOOR_SCENES if is_indoor else OUTDOOR_SCENES))
    event_class = str(rng.choice(_INDOOR_EVENTS if is_indoor else _OUTDOOR_EVENTS))
    scene_unit = _synthesise_scene(rng, scene_class)
    scene_offset_db = -14.0 + (scene_random_db := float(rng.uniform(0.0, 14.0)))
    scene_gain = speech_rms * 10 ** (scene_offset_db / 20)  # scene_unit has RMS 1
    scene = scene_unit * scene_gain
    event = _synthesise_event(rng, event_class) * 10 ** (rng.uniform(-24.0, -10.0) / 20)  # peak −24..−10 dBFS

    stems = {"speaker1": s1, "speaker2": s2, "scene": scene, "event": event}
    room = None
    if is_indoor:
        room = _draw_room(rng)
        tail = _room_tail(rng, room)
        stems["sp1_reverb"] = _reverberate(s1, tail, room.pre_delay_1, room.wet_db)
        stems["sp2_reverb"] = _reverberate(s2, tail, room.pre_delay_2, room.wet_db)
        stems["ev_reverb"] = _reverberate(event, tail, room.pre_delay_event, room.wet_db)
    mix = sum(stems.values())
    # The generator hard-limits components and regenerates clipping mixes; scaling the whole row (mix and every
    # stem by one factor) keeps both in range and the seed→row map intact, and keeps mix = Σ stems exact.
    peak = max(np.max(np.abs(mix)), *(np.max(np.abs(x)) for x in stems.values()))
    if peak > 0.95:
        factor = 0.95 / peak
        stems = {name: x * factor for name, x in stems.items()}
        scene_gain *= factor
        mix = mix * factor
    stems["mix"] = mix

    s1_id, s2_id, scene_id, event_id = (_file_id(rng) for _ in range(4))
    rev_id = _file_id(rng) if is_indoor else None
    mix_name = "-".join(x for x in (s1_id, s2_id, scene_id, event_id, rev_id) if x) + ".wav"
    record = {
        "subset": split,
        "speech1OryginalPath": f"synthetic/voice_f0_{voice1.f0:.1f}Hz_tract_{voice1.tract:.3f}",
        "speech1Start": int(rng.integers(1, 400_000)),
        "speech2OryginalPath": f"synthetic/voice_f0_{voice2.f0:.1f}Hz_tract_{voice2.tract:.3f}",
        "speech2Start": int(rng.integers(1, 400_000)),
        "SSR": ssr,
        "sceneOryginalPath": f"synthetic/scene_{scene_class.replace('/', '_')}",
        "sceneStart": int(rng.integers(1, 60_000)),
        "sceneRandomDB": scene_random_db,
        "sceneOffsetDB": scene_offset_db,
        "sceneVolumeGain": scene_gain,
        "eventOryginalPath": f"synthetic/event_{event_class}",
        "eventStart": int(rng.integers(1, 8_000)),
        "speaker1File": f"{s1_id}.wav",
        "speaker2File": f"{s2_id}.wav",
        "eventFile": f"{event_id}.wav",
        "sceneFile": f"{scene_id}.wav",
        "reverbForSpeaker1": f"sp1_{rev_id}.wav" if is_indoor else None,
        "reverbForSpeaker2": f"sp2_{rev_id}.wav" if is_indoor else None,
        "reverbForEvent": f"ev_{rev_id}.wav" if is_indoor else None,
        "mixFile": mix_name,
        "sceneClass": scene_class,
        "eventClass": event_class,
        "preDelayForEvent": room.pre_delay_event if room else math.nan,
        "preDelay1": room.pre_delay_1 if room else math.nan,
        "preDelay2": room.pre_delay_2 if room else math.nan,
        "highCut": room.high_cut if room else math.nan,
        "diffusion": room.diffusion if room else math.nan,
        "decay": room.decay if room else math.nan,
        "freqDamp": room.freq_damp if room else math.nan,
    }
    for prefix in ("speech1", "speech2", "scene", "event"):
        record[f"{prefix}End"] = record[f"{prefix}Start"] + NUM_SAMPLES - 1
    return record, stems


def _write_wav(path: Path, samples: np.ndarray) -> None:
    """Mono 16-bit PCM WAV at SAMPLE_RATE. The stdlib writer is ~7x faster here than soundfile (no libsndfile
    flush per file) and writes the same canonical RIFF/PCM header MATLAB's ``audiowrite`` does."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(samples.astype("<i2").tobytes())


def _format_cell(value) -> str:
    """MATLAB ``writetable`` style: missing strings are empty cells, NaN numbers are written as ``NaN``."""
    if value is None:
        return ""
    if isinstance(value, float):  # also np.float64, whose repr() would be "np.float64(...)"
        return "NaN" if math.isnan(value) else repr(float(value))
    return str(value)


def _render_rows(split_dir: str, split: str, seed: int, rows: Sequence[int], is_indoor: Sequence[bool]) -> list[dict]:
    """Generate and write the given rows of a split; returns their CSV records (a process-pool work unit)."""
    records = []
    for row, indoor in zip(rows, is_indoor):
        record, stems = _make_row(seed, split, row, bool(indoor))
        for stem, signal in stems.items():
            _write_wav(Path(split_dir) / STEM_FOLDERS[stem] / record[STEM_COLUMNS[stem]], _quantise(signal))
        records.append(record)
    return records


def _write_split(
    out_dir: Path, corpus_name: str, split: str, n_rows: int, seed: int, columns: Sequence[str], num_workers: int
) -> None:
    split_dir = out_dir / split
    for folder in sorted(set(STEM_FOLDERS.values())):
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
    # Half indoor, half outdoor, in a seeded random order (the real corpora interleave or pre-shuffle).
    family_rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], 1_000_003]))
    is_indoor = np.arange(n_rows) < (n_rows + 1) // 2
    family_rng.shuffle(is_indoor)

    # Rows are seeded one by one, so any chunking over processes gives the same corpus.
    if num_workers > 1 and n_rows > 1:
        from concurrent.futures import ProcessPoolExecutor

        chunks = [list(range(start, n_rows, num_workers)) for start in range(num_workers)]
        chunks = [c for c in chunks if c]
        with ProcessPoolExecutor(max_workers=len(chunks)) as pool:
            futures = [pool.submit(_render_rows, str(split_dir), split, seed, c, is_indoor[c].tolist()) for c in chunks]
            by_row = {row: record for c, f in zip(chunks, futures) for row, record in zip(c, f.result())}
        records = [by_row[row] for row in range(n_rows)]
    else:
        records = _render_rows(str(split_dir), split, seed, range(n_rows), is_indoor.tolist())

    seen: set[str] = set()
    for row, record in enumerate(records):  # 16 random characters: a collision is ~1e-19 likely; still, check
        names = [record[STEM_COLUMNS[s]] for s in STEM_COLUMNS if record[STEM_COLUMNS[s]] is not None]
        if seen.intersection(names):
            raise RuntimeError(f"file-name collision in {split} row {row}: {sorted(seen.intersection(names))}")
        seen.update(names)

    csv_path = split_dir / f"corpus_{corpus_name}_{split}_final.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for record in records:
            writer.writerow([_format_cell(record[c]) for c in columns])


def make_mini_polsess(
    out_dir: str | os.PathLike,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 50,
    seed: int = 0,
    *,
    schema: str = "fork",
    num_workers: int = 1,
) -> Path:
    """Write a small PolSESS-format corpus and return its root (the folder to pass as ``data_dir``).

    Args:
        out_dir: corpus root; its basename becomes the corpus name in the CSV file names
            (``<out_dir>/train/corpus_<basename>_train_final.csv``). Created if needed; existing files of the
            same names are overwritten.
        n_train, n_val, n_test: rows per split (0 skips the split's folder).
        seed: everything is a deterministic function of ``seed`` (and the row position).
        schema: ``"fork"`` writes the thesis fork's 34 columns, ``"generator"`` the original 31.
        num_workers: processes to render rows with (the corpus is identical for any value).

    Returns:
        ``Path(out_dir)``.

    Every file is 8 kHz, 16-bit, mono, 4 s; see the module docstring for what the rows contain.
    """
    if schema not in ("fork", "generator"):
        raise ValueError(f"schema must be 'fork' (34 columns) or 'generator' (31 columns), got {schema!r}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"n_{split} must be a non-negative integer, got {count!r}")
    out_dir = Path(out_dir)
    corpus_name = out_dir.resolve().name
    columns = FORK_COLUMNS if schema == "fork" else GENERATOR_COLUMNS
    for split, count in counts.items():
        if count:
            _write_split(out_dir, corpus_name, split, int(count), int(seed), columns, max(1, int(num_workers)))
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``polsess-make-mini``: write a mini PolSESS corpus (see :func:`make_mini_polsess`)."""
    parser = argparse.ArgumentParser(
        prog="polsess-make-mini",
        description="Generate a small corpus in the exact PolSESS layout (8 kHz, 16-bit, 4 s; synthetic speech, "
        "scenes, events and wet-only reverb tails) for demos and tests.",
    )
    parser.add_argument("out_dir", help="corpus root to create; its name becomes the corpus name in the CSVs")
    parser.add_argument("--train", type=int, default=200, help="training rows (default 200)")
    parser.add_argument("--val", type=int, default=50, help="validation rows (default 50)")
    parser.add_argument("--test", type=int, default=50, help="test rows (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--schema", choices=("fork", "generator"), default="fork", help="CSV schema: fork (34 cols) or generator (31)"
    )
    parser.add_argument("--num-workers", type=int, default=1, help="processes to render rows with (default 1)")
    args = parser.parse_args(argv)
    root = make_mini_polsess(
        args.out_dir, args.train, args.val, args.test, args.seed, schema=args.schema, num_workers=args.num_workers
    )
    print(
        f"wrote a mini PolSESS corpus to {root} "
        f"(train={args.train}, val={args.val}, test={args.test}, seed={args.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
