"""A transformers pipeline for speech separation, registered as the custom task ``"speech-separation"``.

Importing this module registers the task with transformers' ``PIPELINE_REGISTRY``; after that ``pipeline()``
builds it from a model folder, a Hub id or a loaded model::

    >>> import polsess_hf.pipelines  # registers "speech-separation"
    >>> from transformers import pipeline
    >>> separator = pipeline("speech-separation", model="hf/convtasnet-polsess-sb", device="cpu")
    >>> speakers = separator("meeting.wav", chunk_seconds=4.0, overlap=1.0)
    >>> [(s["label"], s["audio"].shape, s["sampling_rate"]) for s in speakers]
    [('spk1', (1323000,), 44100), ('spk2', (1323000,), 44100)]

All the work is :func:`polsess_hf.inference.separate` (resampling, downmixing, chunking with speaker alignment);
the pipeline adds transformers' front door: inputs as paths, arrays, tensors or ``datasets``-style dicts
(``{"array": ..., "sampling_rate": ...}``), lists of inputs, and the device handling of ``Pipeline``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .inference import _read_file, separate

__all__ = ["SpeechSeparationPipeline", "TASK"]

TASK = "speech-separation"


class SpeechSeparationPipeline(Pipeline):
    """Separate speech: one input → a list of ``n_src`` dicts ``{"label": "spk<k>", "audio": (time_steps,) float32
    NumPy array, "sampling_rate": Hz}`` at the input's rate and length.

    Inputs: a path to an audio file; a float NumPy array or torch tensor ``(time_steps,)`` or ``(channels,
    time_steps)`` (channels are downmixed) with ``sampling_rate=`` (default: the model's rate); or a dict with
    ``"array"`` (or ``"raw"``) and ``"sampling_rate"``, as ``datasets`` returns decoded audio.

    Call arguments: ``sampling_rate``, ``chunk_seconds``, ``overlap`` and ``chunk_batch_size`` (chunks per
    forward pass; the pipeline's own ``batch_size`` counts inputs), passed on to :func:`~polsess_hf.inference.separate`.
    """

    # A separator reads raw waveforms: there is no tokenizer, feature extractor or processor to load.
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, sampling_rate: Optional[int] = None, chunk_seconds: Any = "default",
                             overlap: Optional[float] = None, chunk_batch_size: Optional[int] = None, **kwargs):
        kwargs.pop("local_files_only", None)  # pipeline() leaves this Hub option in the pipeline's kwargs
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {sorted(kwargs)}")
        preprocess = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        forward = {}
        if chunk_seconds != "default":  # None is meaningful (one pass), so "not given" needs its own marker
            forward["chunk_seconds"] = chunk_seconds
        if overlap is not None:
            forward["overlap"] = overlap
        if chunk_batch_size is not None:
            forward["batch_size"] = chunk_batch_size
        return preprocess, forward, {}

    def preprocess(self, inputs, sampling_rate: Optional[int] = None):
        if isinstance(inputs, dict):
            key = "array" if "array" in inputs else "raw" if "raw" in inputs else None
            if key is None or "sampling_rate" not in inputs:
                raise ValueError(
                    f"a dict input needs 'array' (or 'raw') and 'sampling_rate' keys, got keys {sorted(inputs)}"
                )
            audio, sampling_rate = inputs[key], inputs["sampling_rate"]
        elif isinstance(inputs, (str, os.PathLike)):
            audio, file_rate = _read_file(inputs)
            if sampling_rate is not None and int(sampling_rate) != file_rate:
                raise ValueError(f"{os.fspath(inputs)} is sampled at {file_rate} Hz but sampling_rate={sampling_rate}")
            sampling_rate = file_rate
        else:
            audio = inputs
        if isinstance(audio, torch.Tensor):
            # Kept on the CPU: Pipeline.forward would otherwise copy the whole recording to the device.
            audio = audio.detach().cpu()
            audio = (audio.float() if audio.is_floating_point() else audio).numpy()
        elif isinstance(audio, list):
            audio = np.asarray(audio, dtype=np.float32)
        if sampling_rate is None:
            sampling_rate = self.model.config.sampling_rate
        return {"audio": audio, "sampling_rate": sampling_rate}

    def _forward(self, model_inputs, **separate_kwargs):
        sources = separate(self.model, model_inputs["audio"], model_inputs["sampling_rate"], device=self.device,
                           **separate_kwargs)
        return {"sources": sources, "sampling_rate": model_inputs["sampling_rate"]}

    def postprocess(self, model_outputs):
        rate = int(model_outputs["sampling_rate"])
        return [
            {"label": f"spk{index}", "audio": source, "sampling_rate": rate}
            for index, source in enumerate(model_outputs["sources"], start=1)
        ]


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=SpeechSeparationPipeline, pt_model=AutoModel, type="audio")
