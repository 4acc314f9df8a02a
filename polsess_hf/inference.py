"""Separate recordings of any length, sample rate and channel count with a polsess_hf separator.

:func:`separate` is the one entry point; it takes a file path, a NumPy array or a torch tensor and returns one
waveform per source at the *input's* sample rate, exactly as many samples as the input:

1. multi-channel audio is downmixed to mono (the mean of the channels; the networks are single-channel);
2. the mono signal is resampled to the model's rate (``config.sampling_rate``) with SciPy's polyphase resampler;
3. it is cut into overlapping chunks (``chunk_seconds`` long, ``overlap`` seconds shared by neighbours) that run
   through the network ``batch_size`` at a time;
4. each chunk's sources are put in the order of the previous chunk's — the permutation that maximises the summed
   normalised correlation of the two chunks on their shared samples — and then cross-faded into one output
   buffer (``sin²``/``cos²`` fades, which sum to exactly 1). Chunks are stitched as they come out of the network,
   so memory is the input and output buffers plus one batch of chunks, whatever the input's length;
5. the estimates are resampled back to the input rate and trimmed to the input's length.

Default chunking is 4 s chunks with 1 s overlap for every architecture: the thesis models were trained on 4 s
segments (and the global-context ones — DPRNN, SepFormer, SPMamba — and ConvTasNet's global layer norm see a
whole chunk at once), and 1 s of overlap covers ConvTasNet's ±1 s receptive field while giving the alignment a
long stretch to correlate on. The cost is 4/3 of a single pass.

Command line (one WAV per source, ``<name>_spk1.wav``, ``<name>_spk2.wav``, … at the input's rate)::

    polsess-separate meeting.wav call.flac --model path/or/hub-id --out-dir separated/ [--chunk-seconds 4]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

__all__ = [
    "separate",
    "load_separator",
    "best_permutation",
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_OVERLAP_SECONDS",
    "MAX_CHANNELS",
    "main",
]

DEFAULT_CHUNK_SECONDS = 4.0
DEFAULT_OVERLAP_SECONDS = 1.0
#: More channels than this in a 2-D array almost certainly means a ``(time_steps, channels)`` array (soundfile's
#: layout) passed where ``(channels, time_steps)`` is expected, so it is refused instead of averaged.
MAX_CHANNELS = 32

AudioInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def load_separator(model, *, device: Optional[Union[str, torch.device]] = None):
    """Return a separator ready for :func:`separate`: ``model`` itself, or the model loaded from a folder/Hub id.

    A loaded model must carry ``config.sampling_rate`` and ``config.n_src`` (every polsess_hf separator does).
    """
    if isinstance(model, (str, os.PathLike)):
        from .pretrained import load_pretrained_separator

        try:
            model = load_pretrained_separator(model, device=device or "cpu")
        except (OSError, ValueError) as error:
            raise OSError(f"cannot load a separator from {str(model)!r} (a model folder or Hub id): {error}") from error
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"`model` must be a separator (a torch.nn.Module such as a polsess_hf model), a model folder or a Hub id, "
            f"got {type(model).__name__}"
        )
    config = getattr(model, "config", None)
    for key in ("sampling_rate", "n_src"):
        if not isinstance(getattr(config, key, None), int):
            raise TypeError(
                f"{type(model).__name__} has no integer `config.{key}`; separate() needs a separator whose config "
                "gives its sample rate and number of sources (every polsess_hf model does)"
            )
    if device is not None:
        model.to(device)
    return model


def _read_file(path: Union[str, os.PathLike]) -> tuple[np.ndarray, int]:
    """``(samples (channels, time_steps) float32, sample_rate)`` of an audio file (any format soundfile reads)."""
    from .data.audio import read_audio  # raises AudioReadError naming the path

    samples, rate = read_audio(os.fspath(path))
    return samples.T, rate


def _to_mono(audio: AudioInput, sampling_rate: Optional[int], model_rate: int) -> tuple[np.ndarray, int]:
    """Validate ``audio`` and return it as mono float32 ``(time_steps,)`` with its sample rate."""
    where = ""
    if isinstance(audio, (str, os.PathLike)):
        where = f" in {os.fspath(audio)}"
        array, file_rate = _read_file(audio)
        if sampling_rate is not None and int(sampling_rate) != file_rate:
            raise ValueError(
                f"{os.fspath(audio)} is sampled at {file_rate} Hz but sampling_rate={sampling_rate} was given; "
                "leave sampling_rate out for files (it is read from the file)"
            )
        sampling_rate = file_rate
    elif isinstance(audio, torch.Tensor):
        tensor = audio.detach().cpu()
        array = (tensor.float() if tensor.is_floating_point() else tensor).numpy()  # numpy has no bfloat16
    elif isinstance(audio, (np.ndarray, np.generic)):
        array = np.asarray(audio)
    else:
        raise TypeError(
            "`audio` must be a file path, a numpy array or a torch tensor of shape (time_steps,) or "
            f"(channels, time_steps), got {type(audio).__name__}"
        )
    if sampling_rate is None:
        sampling_rate = model_rate
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)) or (
        not float(sampling_rate).is_integer() or sampling_rate <= 0
    ):
        raise ValueError(f"`sampling_rate` must be a positive integer number of Hz, got {sampling_rate!r}")
    sampling_rate = int(sampling_rate)

    if not (np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"`audio` must be a floating-point waveform in [-1, 1], got dtype {array.dtype}{where} "
            "(for 16-bit PCM divide by 32768)"
        )
    if array.ndim == 1:
        mono = array
    elif array.ndim == 2:
        if array.shape[0] > MAX_CHANNELS:
            raise ValueError(
                f"`audio` must be (channels, time_steps) but has shape {tuple(array.shape)}: {array.shape[0]} "
                f"channels is more than {MAX_CHANNELS}; if it is (time_steps, channels), as soundfile returns, "
                "pass its transpose (audio.T)"
            )
        if array.shape[0] == 0:
            raise ValueError(f"`audio` has shape {tuple(array.shape)}: no channels{where}")
        mono = array.mean(axis=0, dtype=np.float32) if array.shape[0] > 1 else array[0]
    else:
        raise ValueError(
            f"`audio` must have shape (time_steps,) or (channels, time_steps), got shape {tuple(array.shape)}{where}"
        )
    if mono.shape[0] == 0:
        raise ValueError(f"`audio` is empty (0 samples){where}; there is nothing to separate")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    finite = np.isfinite(mono)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        n_nan = int(np.isnan(mono).sum())
        raise ValueError(
            f"`audio` contains {n_nan} NaN and {bad.size - n_nan} infinite sample(s){where} (after downmixing), "
            f"the first at sample {bad[0]} ({bad[0] / sampling_rate:.3f} s); clean or trim the input first"
        )
    return mono, sampling_rate


def _resample(signal: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (float32 in, float32 out)."""
    if from_rate == to_rate:
        return signal
    from scipy.signal import resample_poly

    common = math.gcd(from_rate, to_rate)
    return resample_poly(signal, to_rate // common, from_rate // common, axis=-1).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# Chunking, alignment and overlap-add
# ---------------------------------------------------------------------------------------------------------------
def _chunk_spans(length: int, chunk: int, overlap: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each chunk: every chunk but the last is ``chunk`` long, neighbours share ``overlap``.

    The last chunk ends at ``length`` and is shorter (still longer than ``overlap``), rather than padded with
    silence the recording does not have.
    """
    start = 0
    while True:
        end = min(start + chunk, length)
        yield start, end
        if end == length:
            return
        start += chunk - overlap


def best_permutation(reference: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """Order of the rows of ``estimates`` that best matches the rows of ``reference``.

    Args:
        reference, estimates: ``(n_src, time_steps)``, the same stretch of signal from two chunks.

    Returns:
        ``perm`` ``(n_src,)``: ``estimates[perm]`` row ``k`` goes with ``reference`` row ``k``. It maximises the sum
        over ``k`` of the normalised correlation ``<r_k, e_perm[k]> / (‖r_k‖·‖e_perm[k]‖)`` over all ``n_src!``
        orders (solved exactly as an assignment problem). Ties, e.g. silence on the overlap, keep the identity.
    """
    from scipy.optimize import linear_sum_assignment

    reference = reference.astype(np.float64)
    estimates = estimates.astype(np.float64)
    reference = reference / (np.linalg.norm(reference, axis=-1, keepdims=True) + 1e-12)
    estimates = estimates / (np.linalg.norm(estimates, axis=-1, keepdims=True) + 1e-12)
    correlation = reference @ estimates.T  # [n_src(reference), n_src(estimates)]
    _, perm = linear_sum_assignment(correlation, maximize=True)
    identity = np.arange(correlation.shape[0])
    if correlation[identity, perm].sum() <= np.trace(correlation) + 1e-9:
        return identity
    return perm


class _OverlapAdd:
    """Stitches chunk estimates, in order, into one ``(n_src, length)`` buffer.

    ``add(start, estimates)`` reorders the chunk's sources to match what is already written on the shared
    samples (:func:`best_permutation`), then cross-fades: ``out = previous·cos² + current·sin²`` over the overlap
    (the fades sum to 1, so equal chunks give back exactly the chunk), and copies the rest. Only the output buffer
    is kept; with ``overlap ≤ chunk / 2`` the shared stretch is always the previous chunk's own estimate.
    """

    def __init__(self, n_src: int, length: int, overlap: int, *, align: bool = True):
        self.output = np.zeros((n_src, length), dtype=np.float32)
        self.align = align
        self.end = 0  # end of what has been written so far
        phase = (np.arange(overlap) + 0.5) / overlap
        self.fade_in = (np.sin(0.5 * np.pi * phase) ** 2).astype(np.float32)
        self.permutations: list[np.ndarray] = []

    def add(self, start: int, estimates: np.ndarray) -> None:
        shared = self.end - start
        if start != 0 and shared != self.fade_in.size:
            raise AssertionError(f"chunk at {start} must overlap the previous one (written up to {self.end}) by "
                                 f"{self.fade_in.size} samples")
        if shared > 0:
            previous = self.output[:, start : self.end]
            perm = best_permutation(previous, estimates[:, :shared]) if self.align else np.arange(len(estimates))
            estimates = estimates[perm]
            self.permutations.append(perm)
            previous *= 1.0 - self.fade_in
            previous += estimates[:, :shared] * self.fade_in
        self.output[:, self.end : start + estimates.shape[-1]] = estimates[:, max(shared, 0) :]
        self.end = start + estimates.shape[-1]


def _run_model(model, inputs: torch.Tensor, n_src: int, spans, rate: int) -> np.ndarray:
    """One forward pass on a batch of equally long chunks; returns float32 ``(batch, n_src, chunk)`` on the CPU."""
    output = model(input_values=inputs)
    estimates = output if isinstance(output, torch.Tensor) else getattr(output, "estimates", None)
    expected = (inputs.shape[0], n_src, inputs.shape[-1])
    if not isinstance(estimates, torch.Tensor) or tuple(estimates.shape) != expected:
        got = tuple(estimates.shape) if isinstance(estimates, torch.Tensor) else type(output).__name__
        raise RuntimeError(f"{type(model).__name__} returned estimates of shape {got}; expected {expected}")
    if not torch.isfinite(estimates).all():
        start, end = spans[0][0], spans[-1][1]
        raise RuntimeError(
            f"{type(model).__name__} returned non-finite estimates for the audio between {start / rate:.2f} s and "
            f"{end / rate:.2f} s (at the model's {rate} Hz); the input there is finite, so the model is at fault"
        )
    return estimates.float().cpu().numpy()


def _separate_mono(model, mixture: np.ndarray, *, chunk: int, overlap: int, batch_size: int,
                   device: torch.device, align: bool = True) -> np.ndarray:
    """Chunked separation of a finite mono signal at the model's rate: ``(T,)`` → ``(n_src, T)``."""
    n_src, rate = model.config.n_src, model.config.sampling_rate
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    stitcher = _OverlapAdd(n_src, mixture.shape[0], overlap, align=align)
    pending: list[tuple[int, int]] = []

    def flush() -> None:
        inputs = torch.from_numpy(np.stack([mixture[start:end] for start, end in pending]))
        estimates = _run_model(model, inputs.to(device=device, dtype=dtype), n_src, pending, rate)
        for (start, _), chunk_estimates in zip(pending, estimates):
            stitcher.add(start, chunk_estimates)
        pending.clear()

    for start, end in _chunk_spans(mixture.shape[0], chunk, overlap):
        # A batch holds chunks of one length; only the last chunk can be shorter.
        if pending and (len(pending) == batch_size or end - start != pending[0][1] - pending[0][0]):
            flush()
        pending.append((start, end))
    flush()
    return stitcher.output


def separate(
    model,
    audio: AudioInput,
    sampling_rate: Optional[int] = None,
    *,
    chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    device: Optional[Union[str, torch.device]] = None,
    batch_size: int = 1,
):
    """Separate a recording of any length, sample rate and channel count.

    Args:
        model: a polsess_hf separator (any ``torch.nn.Module`` whose ``config`` has ``sampling_rate`` and ``n_src``
            and whose ``forward(input_values=(batch, time))`` returns ``.estimates`` ``(batch, n_src, time)``), or a
            model folder / Hub id loaded with ``AutoModel.from_pretrained``. It is run in ``eval()`` mode under
            ``torch.inference_mode`` in its own dtype (fp32 for polsess_hf checkpoints); its train/eval mode is
            restored afterwards.
        audio: a path to an audio file (anything ``soundfile`` reads), or a float NumPy array / torch tensor of
            shape ``(time_steps,)`` or ``(channels, time_steps)`` with values in [-1, 1]. Several channels are
            **downmixed to their mean** before separation.
        sampling_rate: the rate of ``audio`` in Hz. Read from the file for paths (a different value is an error);
            for arrays and tensors ``None`` means the model's own rate.
        chunk_seconds: length of the chunks the network sees, in seconds (default 4 s, the training segment
            length). ``None`` runs the whole recording in one pass (memory then grows with its length).
        overlap: seconds shared by neighbouring chunks (default 1 s), used to align the speaker order and to
            cross-fade; ``0 < overlap ≤ chunk_seconds / 2``.
        device: where the network runs (``"cpu"``, ``"cuda"``, …); the model is moved there. ``None`` keeps the
            model where it is.
        batch_size: chunks per forward pass (more helps on a GPU; memory grows with it, not with the length).

    Returns:
        The separated sources ``(n_src, time_steps)`` float32 at the input's sample rate, exactly as long as the
        input: a NumPy array, or a torch tensor on the input's device when ``audio`` is a tensor. Sources keep one
        order over the whole recording (source ``k`` is the same speaker in every chunk, as far as the
        correlation on the overlaps can tell). The scale is the network's (SI-SDR training leaves it free).

        Digital silence (all samples 0) gives zeros without running the network.

    Raises:
        ValueError: empty audio (0 samples), NaN or infinite samples (the message gives how many and where),
            integer samples, a shape other than ``(time_steps,)`` / ``(channels, time_steps)``, a bad
            ``sampling_rate``, ``chunk_seconds``, ``overlap`` or ``batch_size``.
        polsess_hf.data.audio.AudioReadError: a file that cannot be opened or decoded (the message names it).
        OSError: ``model`` names a folder or Hub id that does not hold a loadable model.

    Example::

        >>> from polsess_hf import separate
        >>> sources = separate("hf/convtasnet-polsess-sb", "meeting_44k_stereo.wav")  # (2, T) at 44.1 kHz
    """
    model = load_separator(model, device=device)
    model_rate, n_src = model.config.sampling_rate, model.config.n_src
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer ≥ 1, got batch_size={batch_size!r}")
    if chunk_seconds is not None:
        if not (isinstance(chunk_seconds, (int, float)) and math.isfinite(chunk_seconds) and chunk_seconds > 0):
            raise ValueError(f"`chunk_seconds` must be a positive number of seconds or None, got {chunk_seconds!r}")
        if not (isinstance(overlap, (int, float)) and 0 < overlap <= chunk_seconds / 2):
            raise ValueError(
                f"`overlap` must be in (0, chunk_seconds / 2] = (0, {chunk_seconds / 2:g}] seconds, "
                f"got overlap={overlap!r}"
            )
    mono, input_rate = _to_mono(audio, sampling_rate, model_rate)
    input_length = mono.shape[0]

    if not mono.any():
        separated = np.zeros((n_src, input_length), dtype=np.float32)
    else:
        mixture = _resample(mono, input_rate, model_rate)
        del mono
        if chunk_seconds is None:
            chunk, overlap_samples = mixture.shape[0], 1
        else:
            chunk = max(2, round(chunk_seconds * model_rate))
            overlap_samples = min(max(1, round(overlap * model_rate)), chunk // 2)
        parameter = next(model.parameters(), None)
        run_device = torch.device(device) if device is not None else (
            parameter.device if parameter is not None else torch.device("cpu"))
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                separated = _separate_mono(model, mixture, chunk=chunk, overlap=overlap_samples,
                                           batch_size=batch_size, device=run_device)
        finally:
            model.train(was_training)
        del mixture
        separated = _resample(separated, model_rate, input_rate)[:, :input_length]

    if isinstance(audio, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(separated)).to(audio.device)
    return separated


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _write_sources(sources: np.ndarray, rate: int, out_dir: Path, name: str, subtype: str) -> list[Path]:
    import soundfile

    if subtype == "PCM_16":
        # 16-bit PCM clips at ±1 and SI-SDR training leaves the output gain free: if any source would clip, all
        # sources of this input are scaled by one factor (relative levels kept) so the loudest peak is 0.99.
        peak = float(np.abs(sources).max())
        if peak >= 1.0:
            sources = sources * (0.99 / peak)
            print(f"note: {name}: peak {peak:.2f} would clip in 16-bit PCM; scaled by {0.99 / peak:.3f}",
                  file=sys.stderr)
    paths = []
    for index, source in enumerate(sources, start=1):
        path = out_dir / f"{name}_spk{index}.wav"
        soundfile.write(path, source, rate, subtype=subtype)
        paths.append(path)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    """``polsess-separate``: separate audio files into ``<name>_spk<k>.wav`` files at each input's sample rate."""
    parser = argparse.ArgumentParser(
        prog="polsess-separate",
        description="Separate audio files (any length, sample rate, channel count; multi-channel input is "
        "downmixed) into one WAV per source: OUT_DIR/<name>_spk1.wav, <name>_spk2.wav, ... at the input's rate.",
    )
    parser.add_argument("inputs", nargs="+", help="audio files (WAV, FLAC, ... anything soundfile reads)")
    parser.add_argument("--model", required=True, help="model folder or Hub id of a polsess_hf separator")
    parser.add_argument("--out-dir", required=True, help="folder for the separated files (created if needed)")
    parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help=f"chunk length in seconds (default {DEFAULT_CHUNK_SECONDS:g}); 0 = one pass")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_SECONDS,
                        help=f"overlap of neighbouring chunks in seconds (default {DEFAULT_OVERLAP_SECONDS:g})")
    parser.add_argument("--batch-size", type=int, default=1, help="chunks per forward pass (default 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--subtype", choices=["FLOAT", "PCM_16"], default="FLOAT",
                        help="WAV sample format: FLOAT (default: exact, never clips) or PCM_16 (if a source would "
                        "clip, all sources of that input are scaled down together to a 0.99 peak)")
    args = parser.parse_args(argv)

    names = [Path(path).stem for path in args.inputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        parser.error(f"several inputs share the name(s) {duplicates}; their outputs would overwrite each other")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_separator(args.model, device=device)
    except (OSError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .data.audio import AudioReadError

    failed = 0
    for path, name in zip(args.inputs, names):
        try:
            samples, rate = _read_file(path)
            sources = separate(model, samples, rate, chunk_seconds=args.chunk_seconds or None, overlap=args.overlap,
                               device=device, batch_size=args.batch_size)
            del samples
        except (AudioReadError, ValueError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        for written in _write_sources(sources, rate, out_dir, name, args.subtype):
            print(written)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
