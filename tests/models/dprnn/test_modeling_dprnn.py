"""DPRNN: common separator tests, SpeechBrain parity (outputs and gradients), the shared dual-path segmentation,
initialisation."""

import pytest
import torch

from polsess_hf.models.dprnn import DPRNNConfig, DPRNNModel
from polsess_hf.models.dprnn.convert_dprnn import convert_state_dict
from polsess_hf.models.dual_path import overlap_add, segment
from reference_dual_path import build_speechbrain_dprnn
from models.separator_tester import SeparatorTesterMixin


def assert_parity(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The acceptance criterion: max|ours − ref| ≤ 1e-5 · max|ref|; returns the relative error."""
    assert ours.shape == reference.shape
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error <= 1e-5, error
    return error


def converted_pair(config: DPRNNConfig, seed: int = 0):
    """A randomly initialised thesis (SpeechBrain) DPRNN and ours holding the converted weights, both in eval."""
    torch.manual_seed(seed)
    reference = build_speechbrain_dprnn(config).eval()
    ours = DPRNNModel(config).eval()
    ours.load_state_dict(convert_state_dict(reference.state_dict(), config), strict=True)
    return reference, ours


class TestDPRNNModel(SeparatorTesterMixin):
    config_class = DPRNNConfig
    model_class = DPRNNModel
    supports_gradient_checkpointing = True

    def tiny_config(self, **overrides):
        sizes = dict(n_filters=8, kernel_size=4, chunk_size=10, n_blocks=2, hidden_size=6)
        return DPRNNConfig(**{**sizes, **overrides})

    # -- sizes and configuration ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("n_src, expected", [(2, 2_609_793), (1, 2_605_633)])
    def test_thesis_parameter_count(self, n_src, expected):
        model = DPRNNModel(DPRNNConfig(n_src=n_src))
        assert sum(p.numel() for p in model.parameters()) == expected

    def test_presets_and_derived_sizes(self):
        thesis = DPRNNConfig.from_preset("thesis")
        assert (thesis.kernel_size, thesis.stride, thesis.chunk_size, thesis.hop_size) == (16, 8, 100, 50)
        best = DPRNNConfig.from_preset("paper-best")
        assert (best.kernel_size, best.stride, best.chunk_size, best.hop_size) == (2, 1, 250, 125)
        with pytest.raises(ValueError, match="no preset 'nope'.*paper-best"):
            DPRNNConfig.from_preset("nope")

    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"chunk_size": 0}, r"chunk_size.*chunk_size=0"),
            ({"chunk_size": 1}, r"chunk_size.*≥ 2"),
            ({"kernel_size": 1}, r"kernel_size=1"),
            ({"n_src": 0}, r"n_src=0"),
            ({"rnn_type": "RNN"}, r"rnn_type.*\['GRU', 'LSTM'\].*'RNN'"),
            ({"hidden_size": 0}, r"hidden_size=0"),
            ({"dropout": 1.0}, r"dropout"),
            ({"n_blocks": -1}, r"n_blocks=-1"),
            ({"bidirectional": 1}, r"bidirectional"),
            ({"chunksize": 100}, r"chunksize"),
        ],
    )
    def test_invalid_config_names_key_and_value(self, overrides, message):
        with pytest.raises(Exception, match=message):
            DPRNNConfig(**overrides)

    def test_unidirectional_inter_path_is_sized_correctly(self):
        config = self.tiny_config(bidirectional=False)
        model = DPRNNModel(config).eval()
        block = model.masker.blocks[0]
        assert not block.inter_path.rnn.bidirectional and block.intra_path.rnn.bidirectional
        assert block.inter_path.projection.in_features == config.hidden_size
        with torch.no_grad():
            assert model(torch.randn(2, 500)).estimates.shape == (2, 2, 500)

    def test_gru_runs(self):
        model = DPRNNModel(self.tiny_config(rnn_type="GRU")).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 300)).estimates.shape == (1, 2, 300)

    # -- initialisation ---------------------------------------------------------------------------------------------
    def test_initialisation_matches_the_reference_modules(self):
        torch.manual_seed(0)
        model = DPRNNModel(DPRNNConfig())
        hidden = 128
        rnn = model.masker.blocks[0].intra_path.rnn
        # SpeechBrain's rnn_init: orthogonal recurrent weights (4H × H: orthonormal columns)
        gram = rnn.weight_hh_l0.T @ rnn.weight_hh_l0
        torch.testing.assert_close(gram, torch.eye(hidden), atol=1e-5, rtol=0)
        # input weights and biases keep PyTorch's U(±1/√H): std = bound/√3
        bound = 1 / hidden**0.5
        assert rnn.weight_ih_l0.abs().max() <= bound
        assert abs(rnn.weight_ih_l0.std().item() - bound / 3**0.5) < 0.05 * bound
        assert rnn.bias_hh_l0.abs().max() <= bound and rnn.bias_hh_l0.std() > 0.4 * bound
        # Linear / Conv: kaiming-uniform(a=√5) → U(±1/√fan_in), not transformers' N(0, 0.02)
        projection = model.masker.blocks[0].intra_path.projection.weight  # fan_in 256
        assert projection.abs().max() <= 1 / 256**0.5
        assert abs(projection.std().item() - (1 / 256**0.5) / 3**0.5) < 0.05 / 256**0.5
        encoder = model.encoder.conv1d.weight  # fan_in 16
        assert abs(encoder.std().item() - 0.25 / 3**0.5) < 0.03
        decoder = model.decoder.weight  # ConvTranspose1d fan_in = 1·16
        assert abs(decoder.std().item() - 0.25 / 3**0.5) < 0.03
        norm = model.masker.blocks[0].intra_norm
        assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))
        assert torch.equal(model.masker.input_norm.weight, torch.ones(64))
        assert model.masker.prelu.weight.item() == 0.25

    def test_initialisation_statistics_match_speechbrain(self):
        torch.manual_seed(0)
        reference = build_speechbrain_dprnn(DPRNNConfig())
        converted = convert_state_dict(reference.state_dict(), DPRNNConfig())
        ours = DPRNNModel(DPRNNConfig()).state_dict()
        for key, value in converted.items():
            if value.numel() < 1000:
                continue
            assert ours[key].std().item() == pytest.approx(value.std().item(), rel=0.1), key
            if "weight_hh" not in key:  # the max of an orthogonal matrix is too noisy to compare
                assert ours[key].abs().max().item() == pytest.approx(value.abs().max().item(), rel=0.1), key

    # -- parity with the thesis network ----------------------------------------------------------------------------
    @pytest.mark.parametrize("time_steps", [8000, pytest.param(32000, marks=pytest.mark.slow)])
    def test_parity_with_speechbrain_at_thesis_size(self, time_steps):
        reference, ours = converted_pair(DPRNNConfig())
        x = torch.randn(2, time_steps)
        with torch.no_grad():
            assert_parity(ours(x).estimates, reference(x))

    @pytest.mark.parametrize(
        "overrides",
        [
            {"n_src": 1},
            {"chunk_size": 33},  # odd chunk: two interleaved streams
            {"kernel_size": 2, "chunk_size": 250},  # paper-best
            {"num_rnn_layers": 2},
            {"rnn_type": "GRU"},
        ],
    )
    def test_parity_with_speechbrain_variants(self, overrides):
        config = DPRNNConfig(**{"n_blocks": 2, "hidden_size": 32, **overrides})
        reference, ours = converted_pair(config)
        x = torch.randn(2, 4000)
        with torch.no_grad():
            assert_parity(ours(x).estimates, reference(x))

    def test_training_gradients_match_speechbrain(self):
        config = DPRNNConfig(n_blocks=2, hidden_size=32)
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


# -- the shared dual-path segmentation (polsess_hf/models/dual_path.py) ---------------------------------------------
@pytest.mark.parametrize("chunk_size", [2, 3, 10, 33, 100, 250])
@pytest.mark.parametrize("frames", [1, 2, 49, 50, 99, 100, 101, 250, 999])
def test_segment_and_overlap_add_are_speechbrain_exact(chunk_size, frames):
    from reference_dual_path import _dual_path

    speechbrain = _dual_path().Dual_Path_Model.__new__(_dual_path().Dual_Path_Model)
    features = torch.randn(2, 3, frames)
    expected, expected_gap = speechbrain._Segmentation(features, chunk_size)  # (B, N, K, S)
    chunks, gap = segment(features, chunk_size)  # (B, S, K, N)
    assert gap == expected_gap and 1 <= gap <= chunk_size
    assert torch.equal(chunks, expected.permute(0, 3, 2, 1))
    expected_sum = speechbrain._over_add(expected, expected_gap)  # (B, N, L)
    assert torch.equal(overlap_add(chunks, frames), expected_sum.transpose(1, 2))
    # overlap-add of the segmentation counts every frame twice (two overlapping streams, no normalisation)
    torch.testing.assert_close(overlap_add(chunks, frames), 2 * features.transpose(1, 2))


def test_cpu_bf16_autocast_trains_with_an_fp32_recurrence():
    """`precision: bf16` on CPU: oneDNN has no bf16 LSTM here, so the recurrence runs in fp32 inside autocast; the
    step is finite and close to fp32 (measured: gradients 13 % relative L2 from fp32 — bf16's 8-bit mantissa in the
    convolutions and projections — the loss within 2 %)."""
    torch.manual_seed(0)
    model = DPRNNModel(DPRNNConfig(n_blocks=2, hidden_size=32, n_filters=32)).train()
    x, labels = torch.randn(2, 2000), torch.randn(2, 2, 2000)
    loss32 = model(x, labels=labels).loss
    loss32.backward()
    grads32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, labels=labels)
    out.loss.backward()
    grads16 = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(out.loss) and torch.isfinite(grads16).all()
    assert out.loss.item() == pytest.approx(loss32.item(), rel=0.02)
    assert ((grads16 - grads32).norm() / grads32.norm()).item() < 0.25
