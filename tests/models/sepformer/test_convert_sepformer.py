"""Thesis SepFormer checkpoints (new and legacy Series 1–3) → Hugging Face folders."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import polsess_hf  # noqa: F401  (registers the Auto classes)
from polsess_hf.conversion import CheckpointConversionError, convert_thesis_checkpoint
from polsess_hf.models.sepformer import SepFormerModel
from polsess_hf.models.sepformer.convert_sepformer import THESIS_DEFAULTS, config_from_thesis, convert_state_dict
from reference_dual_path import ThesisSepFormer

REPO_ROOT = Path(__file__).resolve().parents[3]
THESIS_KWARGS = {**THESIS_DEFAULTS, "N": 32, "num_blocks": 1, "num_layers": 2, "d_model": 32, "nhead": 4, "d_ffn": 64}


def _thesis_checkpoint(tmp_path, *, kwargs=THESIS_KWARGS, legacy=False, edit_state_dict=None):
    """A thesis-format checkpoint; ``legacy`` = Series 1–3: no PE, `.transformer.` keys, no PE key in the config."""
    torch.manual_seed(0)
    use_pe = kwargs.get("use_positional_encoding", False) and not legacy
    reference = ThesisSepFormer(**{**kwargs, "use_positional_encoding": use_pe}).eval()
    state_dict = dict(reference.state_dict())
    if legacy:
        kwargs = {k: v for k, v in kwargs.items() if k != "use_positional_encoding"}
        state_dict = {k.replace(".mdl.", ".transformer."): v for k, v in state_dict.items()}
    if edit_state_dict is not None:
        edit_state_dict(state_dict)
    checkpoint = {
        "epoch": 40,
        "model_state_dict": state_dict,
        "config": {"model": {"model_type": "sepformer", "sepformer": dict(kwargs)}, "data": {"task": "SB"}},
    }
    path = tmp_path / "best.pt"
    torch.save(checkpoint, path)
    return path, reference


def _cli(path, out):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "convert_thesis_checkpoint.py"), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("legacy", [False, True], ids=["with-positional-encoding", "legacy"])
def test_cli_converts_and_auto_model_reproduces_the_thesis_network(tmp_path, legacy):
    path, reference = _thesis_checkpoint(tmp_path, legacy=legacy)
    checkpoint_keys = torch.load(path)["model_state_dict"].keys()
    if legacy:
        assert any(".transformer." in k for k in checkpoint_keys) and not any("pos_enc" in k for k in checkpoint_keys)
    else:
        assert any(k.endswith("intra_mdl.pos_enc.pe") for k in checkpoint_keys)
    _cli(path, tmp_path / "hf")
    model = AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(model, SepFormerModel)
    assert model.config.use_positional_encoding is (not legacy)
    waveform = torch.randn(2, 8000)
    with torch.no_grad():
        expected = reference(waveform)
        estimates = model(waveform).estimates
    assert (estimates - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_positional_encoding_checkpoint_without_pe_buffers_converts(tmp_path):
    def drop(state_dict):
        for key in [k for k in state_dict if "pos_enc" in k]:
            del state_dict[key]

    path, reference = _thesis_checkpoint(tmp_path, edit_state_dict=drop)
    model = convert_thesis_checkpoint(path, tmp_path / "hf")
    waveform = torch.randn(1, 4000)
    with torch.no_grad():
        expected = reference(waveform)
        assert (model(waveform).estimates - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_pe_buffers_with_a_config_without_pe_are_refused(tmp_path):
    path, _ = _thesis_checkpoint(tmp_path, kwargs={**THESIS_KWARGS, "use_positional_encoding": True})
    checkpoint = torch.load(path)
    checkpoint["config"]["model"]["sepformer"]["use_positional_encoding"] = False
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointConversionError, match="positional-encoding buffers.*use_positional_encoding=False"):
        convert_thesis_checkpoint(path, tmp_path / "hf")


def test_wrong_pe_table_is_refused():
    config = config_from_thesis(THESIS_KWARGS, n_src=2)
    state_dict = ThesisSepFormer(**THESIS_KWARGS).state_dict()
    state_dict["masknet.dual_mdl.0.inter_mdl.pos_enc.pe"] = torch.zeros(1, 2500, 32)
    with pytest.raises(CheckpointConversionError, match="inter_mdl.pos_enc.pe.*not the sinusoidal table"):
        convert_state_dict(state_dict, config)


def test_every_thesis_key_is_mapped():
    config = config_from_thesis(THESIS_KWARGS, n_src=2)
    converted = convert_state_dict(ThesisSepFormer(**THESIS_KWARGS).state_dict(), config)
    assert set(converted) == set(SepFormerModel(config).state_dict())


def test_missing_and_extra_keys_are_refused_and_listed(tmp_path):
    def edit(state_dict):
        del state_dict["masknet.dual_mdl.0.inter_mdl.mdl.layers.1.pos_ffn.ffn.3.bias"]
        state_dict["masknet.extra.weight"] = torch.zeros(2)

    path, _ = _thesis_checkpoint(tmp_path, edit_state_dict=edit)
    with pytest.raises(
        CheckpointConversionError,
        match=r"(?s)missing keys \(1\).*inter_path\.layers\.1\.feed_forward\.fc2\.bias.*unexpected keys \(1\).*masknet\.extra\.weight",
    ):
        convert_thesis_checkpoint(path, tmp_path / "hf")


def test_config_rules():
    assert config_from_thesis({}, n_src=2).use_positional_encoding is False  # legacy configs lack the key
    assert config_from_thesis({"use_positional_encoding": True, "hop_size": 99, "causal": True}, n_src=1).n_src == 1
    with pytest.raises(CheckpointConversionError, match=r"stride=4"):
        config_from_thesis({"stride": 4}, n_src=2)
    with pytest.raises(CheckpointConversionError, match=r"unknown thesis SepFormer argument\(s\) \['norm'\]"):
        config_from_thesis({"norm": "ln"}, n_src=2)
    with pytest.raises(CheckpointConversionError, match=r"n_heads"):
        config_from_thesis({"nhead": 7}, n_src=2)
    baseline = config_from_thesis({"use_positional_encoding": True}, n_src=2)
    assert sum(p.numel() for p in SepFormerModel(baseline).parameters()) == 25_679_361
