"""The "speech-separation" transformers pipeline gives what separate() gives, for every kind of input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

import polsess_hf.pipelines  # noqa: F401  (registers the task)
from polsess_hf.inference import separate
from polsess_hf.pipelines import SpeechSeparationPipeline
from separation_fakes import speech_like


@pytest.fixture(scope="module")
def separator(tiny_model_dir):
    return pipeline("speech-separation", model=str(tiny_model_dir), device="cpu")


def _check(result, reference: np.ndarray, rate: int) -> None:
    assert [item["label"] for item in result] == ["spk1", "spk2"]
    assert all(item["sampling_rate"] == rate for item in result)
    np.testing.assert_array_equal(np.stack([item["audio"] for item in result]), reference)


def test_pipeline_is_built_from_a_model_folder(separator):
    assert isinstance(separator, SpeechSeparationPipeline)
    assert separator.model.config.model_type == "convtasnet"


def test_every_input_kind_gives_separate_s_result(separator, tiny_model_dir, tmp_path):
    audio = np.stack([speech_like(6.0, 16000, 1), speech_like(6.0, 16000, 2)])
    reference = separate(separator.model, audio, 16000)
    _check(separator(audio, sampling_rate=16000), reference, 16000)
    _check(separator(torch.from_numpy(audio), sampling_rate=16000), reference, 16000)
    _check(separator({"array": audio, "sampling_rate": 16000}), reference, 16000)
    path = tmp_path / "call.wav"
    soundfile.write(path, audio.T, 16000, subtype="FLOAT")
    _check(separator(str(path)), reference, 16000)
    results = separator([str(path), {"raw": audio, "sampling_rate": 16000}])
    assert len(results) == 2
    for result in results:
        _check(result, reference, 16000)


def test_call_arguments_reach_separate(separator):
    audio = speech_like(9.0, 8000, 3)
    _check(separator(audio, chunk_seconds=None), separate(separator.model, audio, chunk_seconds=None), 8000)
    _check(separator(audio, chunk_seconds=2.0, overlap=0.5, chunk_batch_size=3),
           separate(separator.model, audio, chunk_seconds=2.0, overlap=0.5, batch_size=3), 8000)


def test_loaded_model_and_bad_inputs(tiny_model_dir):
    from transformers import AutoModel

    separator = pipeline("speech-separation", model=AutoModel.from_pretrained(tiny_model_dir), device="cpu")
    audio = speech_like(2.0, 8000, 4)
    _check(separator(audio), separate(separator.model, audio), 8000)
    with pytest.raises(ValueError, match="'array' \\(or 'raw'\\) and 'sampling_rate'"):
        separator({"array": audio})
    with pytest.raises(TypeError, match="chunk_second"):
        separator(audio, chunk_second=2.0)
    with pytest.raises(ValueError, match="NaN"):
        separator(np.full(100, np.nan, np.float32))
