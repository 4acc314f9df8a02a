"""Thesis DPRNN checkpoints → Hugging Face folders (examples/convert_thesis_checkpoint.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import polsess_hf  # noqa: F401  (registers the Auto classes)
from polsess_hf.conversion import CheckpointConversionError, convert_thesis_checkpoint
from polsess_hf.models.dprnn import DPRNNModel
from polsess_hf.models.dprnn.convert_dprnn import THESIS_DEFAULTS, config_from_thesis, convert_state_dict
from reference_dual_path import ThesisDPRNN

REPO_ROOT = Path(__file__).resolve().parents[3]
# thesis-format kwargs (as the thesis YAML stores them), narrower than the baseline so the test stays fast
THESIS_KWARGS = {**THESIS_DEFAULTS, "N": 32, "num_layers": 2, "hidden_size": 32, "C": 1}


def _thesis_checkpoint(tmp_path, *, task="SB", kwargs=THESIS_KWARGS, edit_state_dict=None):
    torch.manual_seed(0)
    reference = ThesisDPRNN(**{**kwargs, "C": 2 if task == "SB" else 1}).eval()
    state_dict = dict(reference.state_dict())
    if edit_state_dict is not None:
        edit_state_dict(state_dict)
    checkpoint = {
        "epoch": 11,
        "model_state_dict": state_dict,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "val_sisdr": 3.0,
        "config": {"model": {"model_type": "dprnn", "dprnn": dict(kwargs)}, "data": {"task": task}},
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
    assert "dprnn" in result.stdout
    model = AutoModel.from_pretrained(out).eval()
    assert isinstance(model, DPRNNModel)
    assert (model.config.n_src, model.config.n_filters, model.config.n_blocks) == (2, 32, 2)
    waveform = torch.randn(2, 8000)
    with torch.no_grad():
        expected = reference(waveform)
        estimates = model(waveform).estimates
    assert (estimates - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_every_thesis_key_is_mapped():
    config = config_from_thesis(THESIS_KWARGS, n_src=2)
    reference_keys = ThesisDPRNN(**{**THESIS_KWARGS, "C": 2}).state_dict()
    converted = convert_state_dict(reference_keys, config)
    assert set(converted) == set(DPRNNModel(config).state_dict())
    assert converted["masker.mask_projection.weight"].shape == (64, 32)  # Conv2d 1×1 → Linear
    assert converted["masker.output_projection.weight"].shape == (32, 32)


def test_task_decides_the_number_of_sources(tmp_path):
    path, _ = _thesis_checkpoint(tmp_path, task="ES", kwargs={**THESIS_KWARGS, "C": 2})
    assert convert_thesis_checkpoint(path, tmp_path / "hf").config.n_src == 1


def test_missing_key_is_refused_and_listed(tmp_path):
    key = "separator.dual_mdl.1.inter_mdl.mdl.rnn.weight_hh_l0_reverse"
    path, _ = _thesis_checkpoint(tmp_path, edit_state_dict=lambda sd: sd.pop(key))
    with pytest.raises(
        CheckpointConversionError, match=r"missing keys \(1\).*masker\.blocks\.1\.inter_path\.rnn\.weight_hh_l0_reverse"
    ):
        convert_thesis_checkpoint(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_extra_key_is_refused_and_listed(tmp_path):
    def add(state_dict):
        state_dict["separator.dual_mdl.0.extra.weight"] = torch.zeros(3)

    path, _ = _thesis_checkpoint(tmp_path, edit_state_dict=add)
    with pytest.raises(CheckpointConversionError, match=r"unexpected keys \(1\).*separator\.dual_mdl\.0\.extra\.weight"):
        convert_thesis_checkpoint(path, tmp_path / "hf")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"stride": 4}, r"stride=4.*kernel_size // 2 = 8"),
        ({"norm_type": "gln"}, r"norm_type='gln'.*'ln'"),
        ({"rnn_type": "RNN"}, r"rnn_type.*'RNN'"),
        ({"skip_around_intra": False}, r"unknown thesis DPRNN argument\(s\) \['skip_around_intra'\]"),
    ],
)
def test_unsupported_thesis_arguments_are_refused(kwargs, pattern):
    with pytest.raises(CheckpointConversionError, match=pattern):
        config_from_thesis({**THESIS_DEFAULTS, **kwargs}, n_src=2)


def test_thesis_defaults_give_the_baseline():
    config = config_from_thesis({}, n_src=2)
    assert sum(p.numel() for p in DPRNNModel(config).parameters()) == 2_609_793
