"""SPMamba: common separator tests, configuration and parameter counts, the thesis network (ported to CPU) reproduced,
the ``torch`` backend against the ``reference`` backend on the whole model, and bf16 autocast against fp32."""

from __future__ import annotations

import pytest
import torch

from models.separator_tester import SeparatorTesterMixin
from models.spmamba.thesis_spmamba_reference import ThesisSPMamba
from polsess_hf.losses import si_sdr
from polsess_hf.models.spmamba import SPMambaConfig, SPMambaModel
from polsess_hf.models.spmamba import mamba_mixer
from polsess_hf.models.spmamba.mamba_mixer import MambaRMSNorm
from polsess_hf.models.spmamba.modeling_spmamba import SPMambaLayerNorm4D, SPMambaLayerNorm4DCF

TINY = dict(n_fft=32, hop_length=8, num_blocks=1, emb_dim=4, emb_ks=2, attn_n_head=2, attn_approx_qk_dim=16,
            d_state=4, expand=2, mamba_backend="torch")  # fmt: skip


def _tiny(**overrides) -> SPMambaConfig:
    return SPMambaConfig(**{**TINY, **overrides})


def _perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move every parameter off its initial value, so that norms, biases and PReLU slopes are really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


class TestSPMambaModel(SeparatorTesterMixin):
    config_class = SPMambaConfig
    model_class = SPMambaModel
    supports_gradient_checkpointing = True

    def tiny_config(self, **overrides):
        return _tiny(**overrides)


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, n_src, expected",
    [("reduced", 2, 1_156_368), ("reduced", 1, 1_156_078), ("paper", 2, 6_094_498), ("paper", 1, 6_094_208)],
)
def test_presets_have_the_thesis_parameter_counts(preset, n_src, expected):
    model = SPMambaModel(SPMambaConfig.from_preset(preset, n_src=n_src))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_presets_and_derived_sizes():
    reduced = SPMambaConfig.from_preset("reduced")
    assert reduced.to_dict() == SPMambaConfig().to_dict()
    assert (reduced.n_freqs, reduced.mamba_d_model, reduced.mamba_d_inner, reduced.mamba_dt_rank, reduced.attn_qk_channels) == (129, 64, 256, 4, 2)
    paper = SPMambaConfig.from_preset("paper")
    assert (paper.num_blocks, paper.emb_ks, paper.attn_n_head, paper.attn_approx_qk_dim) == (6, 8, 4, 512)
    assert (paper.mamba_d_model, paper.mamba_dt_rank, paper.attn_qk_channels) == (128, 8, 4)
    with pytest.raises(ValueError, match="no preset 'big'.*'paper'"):
        SPMambaConfig.from_preset("big")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lstm_hidden_units=256), "lstm_hidden_units"),  # a dead thesis argument is not a field
        (dict(mamba_backend="cuda"), "mamba_backend.*'reference', 'torch'"),
        (dict(attn_n_head=3), "attn_n_head.*divide emb_dim=16"),
        (dict(n_fft=255), "n_fft.*even"),
        (dict(emb_ks=200), "emb_ks.*129"),
        (dict(emb_hs=5), "emb_hs.*emb_ks=4"),
        (dict(activation="gelu"), "activation"),
        (dict(eps=0.0), "eps"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(d_state=2.5), "d_state.*int"),
    ],
)
def test_config_validation_names_key_and_value(overrides, message):
    with pytest.raises(Exception, match=message):
        SPMambaConfig(**overrides)


def test_backend_lives_in_the_config_and_switches_every_mixer(tmp_path):
    model = SPMambaModel(_tiny(mamba_backend="auto"))
    model.set_mamba_backend("reference")
    mixers = [m for m in model.modules() if isinstance(m, mamba_mixer.MambaMixer)]
    assert mixers and all(m.backend == "reference" for m in mixers)
    model.save_pretrained(tmp_path)
    assert SPMambaConfig.from_pretrained(tmp_path).mamba_backend == "reference"
    model.config.mamba_backend = "torch"  # editing the config is enough: the next forward applies it
    model(torch.randn(1, 100))
    assert all(m.backend == "torch" for m in mixers)
    with pytest.raises(ValueError, match="mamba_backend"):
        model.set_mamba_backend("triton")


# -- input handling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["silent", "constant", "one_sample"])
def test_signals_without_variance_give_zeros_not_nan(signal):
    model = SPMambaModel(_tiny()).eval()
    _perturb(model)
    x = {"silent": torch.zeros(2, 500), "constant": torch.full((2, 500), 0.3), "one_sample": torch.randn(2, 1)}[signal]
    with torch.no_grad():
        estimates = model(x).estimates
    assert torch.isfinite(estimates).all()
    assert torch.count_nonzero(estimates) == 0


def test_loss_on_silent_input_is_finite():
    model = SPMambaModel(_tiny()).train()
    out = model(torch.zeros(1, 300), labels=torch.randn(1, 2, 300))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_unfold_hop_larger_than_one_keeps_exact_length():
    model = SPMambaModel(_tiny(emb_ks=4, emb_hs=2)).eval()
    for length in (1, 37, 333):
        with torch.no_grad():
            assert model(torch.randn(1, length)).estimates.shape == (1, 2, length)


# -- the thesis network ---------------------------------------------------------------------------------------


def _thesis_pair(**thesis_kwargs):
    torch.manual_seed(0)
    thesis = ThesisSPMamba(**thesis_kwargs).eval()
    _perturb(thesis)
    config = SPMambaConfig(
        n_src=thesis_kwargs.get("n_srcs", 1), num_blocks=thesis_kwargs["n_layers"], emb_ks=thesis_kwargs["emb_ks"],
        attn_n_head=thesis_kwargs["attn_n_head"], attn_approx_qk_dim=thesis_kwargs["attn_approx_qk_dim"],
        mamba_backend="torch",
    )  # fmt: skip
    model = SPMambaModel(config).eval()
    model.load_state_dict(thesis.state_dict(), strict=True)  # same names: no renaming at all
    return thesis, model


def test_reproduces_the_thesis_network():
    """One full-width GridNet block (emb_ks 4, 2 heads, qk 256), 0.25 s: the thesis code (mamba_ssm's non-fused
    path, F.unfold, explicit attention) and ours agree to float32 rounding."""
    thesis, model = _thesis_pair(n_srcs=2, n_layers=1, emb_ks=4, attn_n_head=2, attn_approx_qk_dim=256)
    x = torch.randn(2, 2003)
    with torch.no_grad():
        expected = thesis(x)
        assert _relative(model(x).estimates, expected) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["reduced", "paper"])
def test_reproduces_the_thesis_network_at_full_size(preset):
    kwargs = dict(reduced=dict(n_layers=4, emb_ks=4, attn_n_head=2, attn_approx_qk_dim=256),
                  paper=dict(n_layers=6, emb_ks=8, attn_n_head=4, attn_approx_qk_dim=512))[preset]  # fmt: skip
    thesis, model = _thesis_pair(n_srcs=2, **kwargs)
    x = torch.randn(1, 4000)  # 0.5 s: every layer at full width; the thesis code's step-by-step scan sets the time
    with torch.no_grad():
        assert _relative(model(x).estimates, thesis(x)) < 1e-5


def _backend_results(model, x, labels):
    results = {}
    for backend in ("reference", "torch", "cpu"):
        model.zero_grad()
        model.set_mamba_backend(backend)
        out = model(x, labels=labels)
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results[backend] = (out.estimates.detach(), grads)
    return results


def _assert_backends_agree(config, samples):
    torch.manual_seed(0)
    model = SPMambaModel(config).train()
    _perturb(model, scale=0.02)
    x, labels = torch.randn(1, samples), torch.randn(1, 2, samples)
    results = _backend_results(model, x, labels)
    reference_estimates, reference_grads = results["reference"]
    for backend in ("torch", "cpu"):
        estimates, grads = results[backend]
        assert _relative(estimates, reference_estimates) < 1e-5, backend
        assert ((grads - reference_grads).norm() / reference_grads.norm()).item() < 1e-5, backend


def test_torch_and_cpu_backends_equal_reference_backend_on_the_whole_model():
    """The thesis network's widths (emb_ks 4, 2 heads, qk 256) with 2 blocks, 0.25 s: outputs and all gradients."""
    _assert_backends_agree(SPMambaConfig(num_blocks=2), samples=2000)


def test_cpu_inference_path_equals_reference_backend_on_the_whole_model(monkeypatch):
    """Inference on the "cpu" backend runs each block's whole sequence paths (norm, windows, BiMamba,
    ConvTranspose1d, residual) tile by tile on worker threads: batch of 2 (sequences of both items in one tile),
    small tiles, no_grad and inference_mode."""
    torch.manual_seed(0)
    model = SPMambaModel(SPMambaConfig(num_blocks=2, mamba_backend="reference")).eval()
    _perturb(model, scale=0.02)
    x = torch.randn(2, 2000)
    with torch.no_grad():
        expected = model(x).estimates
    model.set_mamba_backend("cpu")
    monkeypatch.setattr(mamba_mixer, "_INFERENCE_TILE_TOKENS", 300)  # intra: 2 frames of 126 windows per tile
    calls = []
    original = mamba_mixer.BidirectionalMamba.infer_tile
    monkeypatch.setattr(mamba_mixer.BidirectionalMamba, "infer_tile", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        tiled = model(x).estimates
    with torch.inference_mode():
        in_inference_mode = model(x).estimates
    assert len(calls) > 4 * 2 * 2  # many tiles per path, every path of both blocks
    assert _relative(tiled, expected) < 1e-5
    torch.testing.assert_close(in_inference_mode, tiled, rtol=0, atol=0)


@pytest.mark.parametrize("emb_ks, emb_hs", [(4, 2), (3, 3)])
def test_cpu_inference_path_with_window_hop_equals_reference_backend(emb_ks, emb_hs):
    """The tiled sequence path folds the transposed convolution's windows back with a hop of ``emb_hs`` positions
    (window w's offset k lands on position w·hs + k): equal to ``nn.ConvTranspose1d`` on the reference path."""
    torch.manual_seed(0)
    model = SPMambaModel(_tiny(emb_ks=emb_ks, emb_hs=emb_hs, mamba_backend="reference")).eval()
    _perturb(model, scale=0.02)
    x = torch.randn(2, 700)
    with torch.no_grad():
        expected = model(x).estimates
        model.set_mamba_backend("cpu")
        blocks = [model.blocks[0].intra_mamba, model.blocks[0].inter_mamba]
        assert all(block.tiled_inference_supported(torch.zeros(1)) for block in blocks)
        tiled = model(x).estimates
    assert _relative(tiled, expected) < 1e-5


@pytest.mark.slow
def test_torch_and_cpu_backends_equal_reference_backend_on_the_reduced_model():
    """All blocks of the reduced thesis model, 0.5 s (the chunked scan's chunk boundaries are crossed)."""
    _assert_backends_agree(SPMambaConfig(), samples=4000)


# -- mixed precision ------------------------------------------------------------------------------------------

# Measured on the reduced model's first two blocks, 1 s: bf16 estimates are within 0.7 % (relative L2) of fp32
# (SI-SDR of one against the other ≈ 43 dB), the loss within 0.04 dB and the gradient vector within 2.6 % (relative
# L2). The tolerances leave room for other seeds and inputs.
BF16_ESTIMATE_RTOL = 0.02
BF16_LOSS_ATOL_DB = 0.2
BF16_GRAD_RTOL = 0.1


def test_bf16_autocast_keeps_fp32_islands_and_stays_close_to_fp32(monkeypatch):
    torch.manual_seed(0)
    model = SPMambaModel(SPMambaConfig(num_blocks=2, mamba_backend="torch")).train()
    x, labels = torch.randn(1, 4000), torch.randn(1, 2, 4000)

    out32 = model(x, labels=labels)
    out32.loss.backward()
    grads32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()

    dtypes: dict[str, set] = {}

    def record(name):
        def hook(module, inputs, output):
            dtypes.setdefault(name, set()).add(output.dtype)

        return hook

    for module in model.modules():
        if isinstance(module, (MambaRMSNorm, SPMambaLayerNorm4D, SPMambaLayerNorm4DCF, torch.nn.GroupNorm)):
            module.register_forward_hook(record("norms"))
        elif isinstance(module, mamba_mixer.MambaMixer):
            module.in_proj.register_forward_hook(record("in_proj"))
    scan = mamba_mixer.selective_scan_chunked

    def recording_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, **kwargs):
        dtypes.setdefault("A, D, delta_bias", set()).update({A.dtype, D.dtype, delta_bias.dtype})
        y = scan(u, delta, A, B, C, D, z, delta_bias, **kwargs)
        dtypes.setdefault("scan", set()).add(y.dtype)
        return y

    monkeypatch.setattr(mamba_mixer, "selective_scan_chunked", recording_scan)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(x, labels=labels)
    out16.loss.backward()
    grads16 = torch.cat([p.grad.flatten() for p in model.parameters()])

    assert dtypes["in_proj"] == {torch.bfloat16}  # autocast is really on
    assert dtypes["norms"] == {torch.float32}
    assert dtypes["A, D, delta_bias"] == {torch.float32}
    assert dtypes["scan"] == {torch.float32}
    assert out16.estimates.dtype == torch.float32  # iSTFT in fp32
    assert torch.isfinite(out16.estimates).all() and torch.isfinite(grads16).all()
    e16, e32 = out16.estimates.detach(), out32.estimates.detach()
    assert ((e16 - e32).norm() / e32.norm()).item() < BF16_ESTIMATE_RTOL
    assert si_sdr(e16, e32).min() > 30
    assert abs(out16.loss.item() - out32.loss.item()) < BF16_LOSS_ATOL_DB
    assert ((grads16 - grads32).norm() / grads32.norm()).item() < BF16_GRAD_RTOL
