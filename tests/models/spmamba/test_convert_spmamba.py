"""Thesis SPMamba checkpoints through the shared converter (:mod:`polsess_hf.conversion`): a checkpoint built by
the thesis network (ported to CPU, thesis key names) converts, loads strictly and gives the thesis outputs."""

from __future__ import annotations

import pytest
import torch

from models.spmamba.thesis_spmamba_reference import ThesisSPMamba, thesis_checkpoint
from polsess_hf.conversion import CheckpointConversionError, convert_thesis_checkpoint, model_from_thesis
from polsess_hf.models.spmamba import SPMambaConfig, SPMambaModel
from polsess_hf.models.spmamba.convert_spmamba import config_from_thesis, convert_state_dict

# What a thesis SB run stores for the reduced model (spmamba_sb_reduced.yaml over SPMambaParams' defaults), plus the
# `sample_rate` old checkpoints still carry.
REDUCED_KWARGS = dict(input_dim=64, n_srcs=1, n_fft=256, stride=64, window="hann", n_layers=4, lstm_hidden_units=192,
                      attn_n_head=2, attn_approx_qk_dim=256, emb_dim=16, emb_ks=4, emb_hs=1, activation="prelu",
                      eps=1e-5, sample_rate=8000)  # fmt: skip
SMALL_KWARGS = {**REDUCED_KWARGS, "n_layers": 1}


def _thesis_network(kwargs: dict, n_src: int, seed: int = 0) -> ThesisSPMamba:
    torch.manual_seed(seed)
    network_kwargs = {k: v for k, v in kwargs.items() if k != "sample_rate"}
    network = ThesisSPMamba(**{**network_kwargs, "n_srcs": n_src}).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return network


@pytest.mark.parametrize("task, n_src", [("SB", 2), ("ES", 1)])
def test_thesis_checkpoint_converts_and_reproduces_the_thesis_outputs(tmp_path, task, n_src):
    thesis = _thesis_network(SMALL_KWARGS, n_src)
    path = tmp_path / "best.pt"
    # the stored n_srcs says 1 whatever the task: the task decides, as in the thesis
    torch.save(thesis_checkpoint(thesis, SMALL_KWARGS, task), path)
    model = convert_thesis_checkpoint(path, tmp_path / "hf")
    assert isinstance(model, SPMambaModel) and model.config.n_src == n_src
    assert not hasattr(model.config, "lstm_hidden_units") and not hasattr(model.config, "input_dim")
    assert (model.config.num_blocks, model.config.hop_length, model.config.emb_ks) == (1, 64, 4)
    x = torch.randn(1, 2001)
    with torch.no_grad():
        expected = thesis(x)
        expected = expected.unsqueeze(1) if n_src == 1 else expected  # the thesis squeezed a single source
        estimates = SPMambaModel.from_pretrained(tmp_path / "hf").eval()(x).estimates
    assert ((estimates - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_reduced_thesis_state_dict_has_exactly_our_keys():
    thesis = ThesisSPMamba(**{**{k: v for k, v in REDUCED_KWARGS.items() if k != "sample_rate"}, "n_srcs": 2})
    config = config_from_thesis(REDUCED_KWARGS, n_src=2)
    assert config.to_dict() == SPMambaConfig(n_src=2).to_dict()  # the reduced thesis model is our default
    model = SPMambaModel(config)
    converted = convert_state_dict(thesis.state_dict(), config)
    assert set(converted) == set(model.state_dict())
    assert all(converted[k].shape == v.shape for k, v in model.state_dict().items())


def test_missing_keys_use_the_thesis_defaults():
    config = config_from_thesis({"n_layers": 6}, n_src=2)
    assert (config.emb_ks, config.attn_n_head, config.attn_approx_qk_dim) == (8, 4, 512)  # SPMambaParams' defaults
    assert config.to_dict() == SPMambaConfig.from_preset("paper", n_src=2).to_dict()


def test_non_prelu_activation_builds_relu_as_the_thesis_did():
    assert config_from_thesis({"activation": "relu"}, n_src=1).activation == "relu"
    assert config_from_thesis({"activation": "gelu"}, n_src=1).activation == "relu"  # thesis: anything else → ReLU


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_blocks": 4}, r"unknown SPMamba argument\(s\) \['n_blocks'\]"),
        ({"window": "hamming"}, "window='hamming'.*Hann"),
        ({"attn_n_head": 3}, "attn_n_head"),
    ],
)
def test_bad_thesis_arguments_are_refused(kwargs, message):
    with pytest.raises(CheckpointConversionError, match=message):
        config_from_thesis(kwargs, n_src=2)


def test_compiled_prefix_is_stripped_and_missing_weights_are_refused():
    thesis = _thesis_network(SMALL_KWARGS, 2)
    state = {f"_orig_mod.{k}": v for k, v in thesis.state_dict().items()}
    model = model_from_thesis(thesis_checkpoint_with(state, SMALL_KWARGS))
    torch.testing.assert_close(model.deconv.weight, thesis.deconv.weight)
    del state["_orig_mod.deconv.bias"]
    state["_orig_mod.blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointConversionError, match=r"(?s)missing keys \(1\): \['deconv.bias'\].*unexpected keys \(1\): \['blocks.0.extra.weight'\]"):
        model_from_thesis(thesis_checkpoint_with(state, SMALL_KWARGS))


def thesis_checkpoint_with(state_dict: dict, kwargs: dict) -> dict:
    return {"model_state_dict": state_dict, "config": {"data": {"task": "SB"}, "model": {"model_type": "spmamba", "spmamba": kwargs}}}
