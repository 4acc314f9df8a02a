"""Thesis ConvTasNet checkpoints → Hugging Face folders (examples/convert_thesis_checkpoint.py)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import polsess_hf  # noqa: F401  (registers the Auto classes)
from polsess_hf.conversion import CheckpointConversionError, convert_thesis_checkpoint
from polsess_hf.models.convtasnet import ConvTasNetConfig, ConvTasNetModel
from polsess_hf.models.convtasnet.convert_convtasnet import THESIS_DEFAULTS, config_from_thesis, convert_state_dict
from reference_convtasnet import build_speechbrain_convtasnet

REPO_ROOT = Path(__file__).resolve().parents[3]

# Small thesis-format network (full depth X=8 so dilation reaches 128, narrow channels so the test is fast).
THESIS_KWARGS = {**THESIS_DEFAULTS, "N": 32, "B": 16, "H": 24, "R": 2, "C": 2}


@functools.lru_cache(maxsize=None)
def _reference(n_src):
    """SpeechBrain's MaskNet builds slowly (it infers shapes with dummy forwards): build each size once."""
    torch.manual_seed(0)
    return build_speechbrain_convtasnet(config_from_thesis(THESIS_KWARGS, n_src=n_src)).eval()


def _thesis_checkpoint(tmp_path, *, task="SB", kwargs=THESIS_KWARGS, edit_state_dict=None):
    reference = _reference(2 if task == "SB" else 1)
    state_dict = dict(reference.state_dict())
    if edit_state_dict is not None:
        edit_state_dict(state_dict)
    checkpoint = {
        "epoch": 3,
        "model_state_dict": state_dict,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "val_sisdr": 7.5,
        "config": {"model": {"model_type": "convtasnet", "convtasnet": dict(kwargs)}, "data": {"task": task}},
    }
    path = tmp_path / "best.pt"
    torch.save(checkpoint, path)
    return path, reference


def test_cli_converts_and_auto_model_reproduces_the_thesis_network(tmp_path):
    path, reference = _thesis_checkpoint(tmp_path)
    out = tmp_path / "hf"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "convert_thesis_checkpoint.py"), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "convtasnet" in result.stdout
    model = AutoModel.from_pretrained(out).eval()
    assert isinstance(model, ConvTasNetModel)
    assert model.config.n_src == 2 and model.config.norm_eps == 1e-4 and model.config.n_filters == 32
    waveform = torch.randn(2, 8000)
    with torch.no_grad():
        expected = reference(waveform)
        estimates = model(waveform).estimates
    assert (estimates - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_every_thesis_key_is_mapped_including_the_speechbrain_act_quirk():
    config = config_from_thesis(THESIS_KWARGS, n_src=2)
    reference_keys = _reference(2).state_dict()
    assert "mask_net.temporal_conv_net.temporalblock_1_7.layers.DSconv.act_0.gamma" in reference_keys
    converted = convert_state_dict(reference_keys, config)
    assert set(converted) == set(ConvTasNetModel(config).state_dict())
    assert converted["masker.blocks.15.out_norm.weight"].shape == (24,)
    assert converted["masker.blocks.15.res_conv.weight"].shape == (16, 24)
    assert converted["masker.blocks.15.depthwise_conv.weight"].shape == (24, 1, 3)


def test_task_decides_the_number_of_sources(tmp_path):
    path, _ = _thesis_checkpoint(tmp_path, task="ES", kwargs={**THESIS_KWARGS, "C": 2})
    model = convert_thesis_checkpoint(path, tmp_path / "hf")
    assert model.config.n_src == 1


def test_missing_key_is_refused_and_listed(tmp_path):
    key = "mask_net.temporal_conv_net.temporalblock_0_3.layers.DSconv.act_0.beta"
    path, _ = _thesis_checkpoint(tmp_path, edit_state_dict=lambda sd: sd.pop(key))
    with pytest.raises(CheckpointConversionError, match=r"missing keys \(1\).*masker\.blocks\.3\.out_norm\.bias"):
        convert_thesis_checkpoint(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_extra_key_is_refused_and_listed(tmp_path):
    def add(state_dict):
        state_dict["mask_net.extra_conv.weight"] = torch.zeros(3)

    path, _ = _thesis_checkpoint(tmp_path, edit_state_dict=add)
    with pytest.raises(CheckpointConversionError, match=r"unexpected keys \(1\).*mask_net\.extra_conv\.weight"):
        convert_thesis_checkpoint(path, tmp_path / "hf")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"causal": True}, r"causal=True.*causal=False"),
        ({"norm_type": "cLN"}, r"norm_type='cLN'.*'gLN'"),
        ({"mask_nonlinear": "softmax"}, r"mask_nonlinear='softmax'.*'relu'"),
        ({"stride": 4}, r"stride=4.*kernel_size // 2 = 8"),
        ({"dropout": 0.1}, r"unknown ConvTasNet argument\(s\) \['dropout'\]"),
    ],
)
def test_unsupported_thesis_arguments_are_refused(kwargs, pattern):
    with pytest.raises(CheckpointConversionError, match=pattern):
        config_from_thesis({**THESIS_DEFAULTS, **kwargs}, n_src=2)


def test_thesis_defaults_give_the_default_config():
    assert config_from_thesis({}, n_src=2).to_dict() == ConvTasNetConfig().to_dict()
