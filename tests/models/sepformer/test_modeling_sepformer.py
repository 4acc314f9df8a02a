"""SepFormer: common separator tests, SpeechBrain parity (with and without positional encoding), attention,
positional encoding beyond SpeechBrain's table, initialisation."""

import math

import pytest
import torch
from torch import nn

from polsess_hf.models.sepformer import SepFormerConfig, SepFormerModel
from polsess_hf.models.sepformer.convert_sepformer import convert_state_dict
from polsess_hf.models.sepformer.modeling_sepformer import (
    SepFormerAttention,
    SepFormerPositionalEncoding,
    sinusoidal_positional_encoding,
)
from models.separator_tester import SeparatorTesterMixin
from reference_dual_path import build_speechbrain_sepformer
from speechbrain_reference import import_speechbrain_module


def assert_parity(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The acceptance criterion: max|ours − ref| ≤ 1e-5 · max|ref|; returns the relative error."""
    assert ours.shape == reference.shape
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error <= 1e-5, error
    return error


def converted_pair(config: SepFormerConfig, seed: int = 0):
    torch.manual_seed(seed)
    reference = build_speechbrain_sepformer(config).eval()
    ours = SepFormerModel(config).eval()
    ours.load_state_dict(convert_state_dict(reference.state_dict(), config), strict=True)
    return reference, ours


class TestSepFormerModel(SeparatorTesterMixin):
    config_class = SepFormerConfig
    model_class = SepFormerModel
    supports_gradient_checkpointing = True

    def tiny_config(self, **overrides):
        sizes = dict(n_filters=8, kernel_size=4, chunk_size=10, n_blocks=1, intra_layers=1, inter_layers=2,
                     d_model=8, n_heads=2, d_ffn=16)
        return SepFormerConfig(**{**sizes, **overrides})

    # -- sizes and configuration ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("n_src, expected", [(2, 25_679_361), (1, 25_613_569)])
    def test_thesis_parameter_count(self, n_src, expected):
        model = SepFormerModel(SepFormerConfig(n_src=n_src))
        assert sum(p.numel() for p in model.parameters()) == expected
        # the positional encoding adds no parameter and nothing to the saved state
        assert not any("positional" in key for key in model.state_dict())

    def test_presets_and_derived_sizes(self):
        assert SepFormerConfig().use_positional_encoding is True
        assert SepFormerConfig.from_preset("thesis").use_positional_encoding is True
        legacy = SepFormerConfig.from_preset("thesis-legacy")
        assert legacy.use_positional_encoding is False
        assert (legacy.stride, legacy.hop_size) == (8, 125)

    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"chunk_size": 0}, r"chunk_size=0"),
            ({"n_src": 0}, r"n_src=0"),
            ({"d_model": 250, "n_heads": 8}, r"d_model=250 and n_heads=8.*\[1, 2, 5, 10, 25, 50, 125, 250\]"),
            ({"d_model": 9, "n_heads": 3}, r"even.*d_model=9"),
            ({"dropout": -0.1}, r"dropout"),
            ({"intra_layers": 0}, r"intra_layers=0"),
            ({"use_positional_encoding": "yes"}, r"use_positional_encoding"),
            ({"nhead": 8}, r"nhead"),
        ],
    )
    def test_invalid_config_names_key_and_value(self, overrides, message):
        with pytest.raises(Exception, match=message):
            SepFormerConfig(**overrides)

    def test_odd_d_model_without_positional_encoding_is_allowed(self):
        SepFormerConfig(d_model=9, n_heads=3, use_positional_encoding=False)

    # -- initialisation ---------------------------------------------------------------------------------------------
    def test_initialisation_matches_the_reference_modules(self):
        torch.manual_seed(0)
        model = SepFormerModel(SepFormerConfig(n_blocks=1, intra_layers=1, inter_layers=1))
        attention = model.masker.blocks[0].intra_path.layers[0].self_attn
        # nn.MultiheadAttention: xavier-uniform packed in_proj (bound √(6/(d+3d))), zero biases
        bound = math.sqrt(6 / (256 + 768))
        assert attention.in_proj_weight.abs().max() <= bound
        assert abs(attention.in_proj_weight.std().item() - bound / 3**0.5) < 0.03 * bound
        assert torch.equal(attention.in_proj_bias, torch.zeros(768))
        assert torch.equal(attention.out_proj.bias, torch.zeros(256))
        assert abs(attention.out_proj.weight.std().item() - (1 / 16) / 3**0.5) < 0.03 / 16
        fc1 = model.masker.blocks[0].intra_path.layers[0].feed_forward.fc1
        assert fc1.bias.abs().max() <= 1 / 16 and fc1.bias.std() > 0.4 / 16
        layer = model.masker.blocks[0].intra_path.layers[0]
        assert torch.equal(layer.self_attn_norm.weight, torch.ones(256))
        assert torch.equal(model.masker.blocks[0].intra_path.final_norm.bias, torch.zeros(256))
        assert model.masker.prelu.weight.item() == 0.25

    def test_initialisation_statistics_match_speechbrain(self):
        config = SepFormerConfig(n_blocks=1, intra_layers=1, inter_layers=1)
        torch.manual_seed(0)
        converted = convert_state_dict(build_speechbrain_sepformer(config).state_dict(), config)
        ours = SepFormerModel(config).state_dict()
        for key, value in converted.items():
            if value.numel() < 1000:
                continue
            assert ours[key].std().item() == pytest.approx(value.std().item(), rel=0.1), key
            assert ours[key].abs().max().item() == pytest.approx(value.abs().max().item(), rel=0.1), key

    # -- attention and positional encoding ---------------------------------------------------------------------------
    def test_attention_equals_torch_multihead_attention(self):
        config = SepFormerConfig(d_model=16, n_heads=4)
        ours = SepFormerAttention(config).eval()
        for parameter in ours.parameters():  # a bare module: its packed projection starts uninitialised
            nn.init.normal_(parameter, std=0.3)
        reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
        reference.in_proj_weight.data.copy_(ours.in_proj_weight)
        reference.in_proj_bias.data.copy_(ours.in_proj_bias)
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())
        x = torch.randn(3, 11, 16)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)

    def test_positional_encoding_equals_speechbrain_and_extends_beyond_its_table(self):
        transformer = import_speechbrain_module("lobes.models.transformer.Transformer")
        speechbrain_table = transformer.PositionalEncoding(input_size=64).pe[0]  # (2500, 64)
        assert torch.equal(sinusoidal_positional_encoding(2500, 64), speechbrain_table)
        encoding = SepFormerPositionalEncoding(64)
        long_input = torch.zeros(1, 3000, 64)  # SpeechBrain's table ends at 2500 positions
        out = encoding(long_input)[0]
        assert torch.equal(out[:2500], speechbrain_table)
        torch.testing.assert_close(out, sinusoidal_positional_encoding(3000, 64), rtol=0, atol=0)

    def test_positional_encoding_survives_save_and_load(self, tmp_path):
        model = self.make_model(use_positional_encoding=True)
        model.save_pretrained(tmp_path)
        loaded = SepFormerModel.from_pretrained(tmp_path)
        table = loaded.masker.blocks[0].inter_path.positional_encoding.table
        assert torch.equal(table, sinusoidal_positional_encoding(2500, 8))

    # -- parity with the thesis network ----------------------------------------------------------------------------
    @pytest.mark.parametrize("use_positional_encoding", [True, False])
    @pytest.mark.parametrize("time_steps", [8000, pytest.param(32000, marks=pytest.mark.slow)])
    def test_parity_with_speechbrain_at_thesis_size(self, use_positional_encoding, time_steps):
        config = SepFormerConfig(use_positional_encoding=use_positional_encoding)
        reference, ours = converted_pair(config)
        x = torch.randn(1, time_steps)
        with torch.no_grad():
            assert_parity(ours(x).estimates, reference(x))

    @pytest.mark.parametrize("overrides", [{"n_src": 1}, {"chunk_size": 33}, {"d_model": 64, "n_filters": 32}])
    def test_parity_with_speechbrain_variants(self, overrides):
        config = SepFormerConfig(**{"n_blocks": 1, "intra_layers": 2, "inter_layers": 2, "d_ffn": 128, **overrides})
        reference, ours = converted_pair(config)
        x = torch.randn(2, 4000)
        with torch.no_grad():
            assert_parity(ours(x).estimates, reference(x))

    def test_training_gradients_match_speechbrain(self):
        config = SepFormerConfig(n_blocks=1, intra_layers=2, inter_layers=2, d_model=64, n_filters=32, d_ffn=128)
        reference, ours = converted_pair(config)
        reference.train()
        ours.train()
        x = torch.randn(2, 4000)
        target = torch.randn(2, 2, 4000)
        ((reference(x) - target) ** 2).mean().backward()
        ((ours(x).estimates - target) ** 2).mean().backward()
        reference_grads = convert_state_dict({n: p.grad for n, p in reference.named_parameters()}, config)
        for name, parameter in ours.named_parameters():
            expected = reference_grads[name]
            error = (parameter.grad - expected).abs().max() / expected.abs().max()
            assert error < 1e-4, (name, error.item())
