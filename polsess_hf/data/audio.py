"""WAV decoding for the data layer: float32 in [−1, 1) as int16 / 32768, without FFmpeg or torchcodec.

PolSESS and Libri2Mix are canonical 16-bit PCM WAV files. Those are parsed here directly (RIFF chunks, then
``np.frombuffer`` on the data chunk): about 4x faster than going through libsndfile for 64 KB files, which is what
lets one DataLoader worker deliver several hundred items per second. Anything else (float or 24-bit WAV,
WAVE_FORMAT_EXTENSIBLE, FLAC, a header this parser does not understand) is decoded by ``soundfile``, which
applies the same int16 / 32768 scaling, so both paths give bit-identical float32 samples.
"""

from __future__ import annotations

import struct
from typing import Optional

import numpy as np

__all__ = ["AudioReadError", "read_audio", "read_mono"]

_PCM = 1


class AudioReadError(RuntimeError):
    """A file could not be decoded, or it is not what the corpus promises (rate, channels, length)."""


def _parse_pcm16(buffer: bytes) -> Optional[tuple[np.ndarray, int, int]]:
    """``(samples (frames, channels) float32, sample_rate, channels)`` for a plain 16-bit PCM WAV, else None."""
    if len(buffer) < 12 or buffer[0:4] != b"RIFF" or buffer[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(buffer):
        chunk_id = buffer[position : position + 4]
        (chunk_size,) = struct.unpack_from("<I", buffer, position + 4)
        body = position + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(buffer):
                return None
            fmt = struct.unpack_from("<HHIIHH", buffer, body)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            audio_format, channels, sample_rate, _, _, bits = fmt
            if audio_format != _PCM or bits != 16 or channels < 1:
                return None
            # A streaming writer may leave the size at 0 or 0xFFFFFFFF: then the data runs to the end of file.
            available = len(buffer) - body
            size = available if chunk_size in (0, 0xFFFFFFFF) or chunk_size > available else chunk_size
            n_frames = size // (2 * channels)
            samples = np.frombuffer(buffer, dtype="<i2", count=n_frames * channels, offset=body)
            # × 2**-15 is exact in float32, so this equals int16 / 32768 (and libsndfile's float conversion).
            decoded = samples.astype(np.float32).reshape(n_frames, channels) * np.float32(1.0 / 32768.0)
            return decoded, sample_rate, channels
        position = body + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return None


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Decode a file to ``(samples (frames, channels) float32, sample_rate)``; raises :class:`AudioReadError`."""
    try:
        with open(path, "rb") as handle:
            buffer = handle.read()
    except OSError as error:
        raise AudioReadError(f"cannot open {path}: {error.strerror or error}") from error
    parsed = _parse_pcm16(buffer)
    if parsed is not None:
        samples, sample_rate, _ = parsed
        return samples, sample_rate
    import io

    import soundfile as sf

    try:
        samples, sample_rate = sf.read(io.BytesIO(buffer), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises LibsndfileError/RuntimeError/TypeError depending on the damage
        raise AudioReadError(f"cannot decode {path} as audio: {error}") from error
    return samples, int(sample_rate)


def read_mono(path: str, sample_rate: Optional[int], *, context: str = "") -> np.ndarray:
    """Decode a mono file to float32 ``(time_steps,)``, checking its sample rate.

    Args:
        path: the audio file.
        sample_rate: the rate the corpus must have (Hz); ``None`` skips the check.
        context: appended to every error message, e.g. ``"(CSV row 12, column mixFile)"``, so an error in a
            DataLoader worker names the corpus row as well as the file.

    Raises:
        AudioReadError: unreadable file, a rate other than ``sample_rate``, or more than one channel (the
            corpus is mono; a stereo file means a broken or foreign file, which is never silently downmixed).
    """
    suffix = f" {context}" if context else ""
    try:
        samples, file_rate = read_audio(path)
    except AudioReadError as error:
        raise AudioReadError(f"{error}{suffix}") from error.__cause__
    if sample_rate is not None and file_rate != sample_rate:
        raise AudioReadError(f"{path} is sampled at {file_rate} Hz but {sample_rate} Hz was expected{suffix}")
    if samples.shape[1] != 1:
        raise AudioReadError(f"{path} has {samples.shape[1]} channels but the corpus is mono{suffix}")
    return samples[:, 0]
