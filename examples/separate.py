#!/usr/bin/env python
"""Separate audio files with a polsess_hf model: one WAV per speaker at each input's own sample rate.

Same as the ``polsess-separate`` console script::

    python examples/separate.py meeting.wav call_44k_stereo.flac --model demo_outputs/quickstart/best --out-dir separated/
    # → separated/meeting_spk1.wav, separated/meeting_spk2.wav, separated/call_44k_stereo_spk1.wav, ...

Options: ``--chunk-seconds 4`` (0 = one pass over the whole file), ``--overlap 1``, ``--batch-size 1``,
``--device cuda``, ``--subtype FLOAT|PCM_16``. Any length, rate and channel count is accepted: channels are
averaged to mono, the audio is resampled to the model's rate and the speakers back to the input's, and long files
go through the network in overlapping chunks whose speaker order is aligned before they are cross-faded.

The same from Python::

    from polsess_hf import separate
    speakers = separate("demo_outputs/quickstart/best", "meeting.wav")          # (2, T) at the file's rate
    speakers = separate(model, waveform, 44100, chunk_seconds=4.0, overlap=1.0)  # arrays: (T,) or (channels, T)

or as a transformers pipeline::

    import polsess_hf.pipelines  # registers the "speech-separation" task
    from transformers import pipeline
    separator = pipeline("speech-separation", model="demo_outputs/quickstart/best")
    for speaker in separator("meeting.wav"):
        print(speaker["label"], speaker["audio"].shape, speaker["sampling_rate"])
"""

import sys

from polsess_hf.inference import main

if __name__ == "__main__":
    sys.exit(main())
