"""The selective scan backends: the chunked ``"torch"`` scan against mamba_ssm's sequential ``selective_scan_ref``
(outputs and gradients, within 1e-5 relative), the Mamba mixer across backends, fp32 under autocast, and the lazy,
warn-once mamba_ssm import."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings

import pytest
import torch

from polsess_hf.models.spmamba import mamba_mixer, native
from polsess_hf.models.spmamba.mamba_mixer import (
    BidirectionalMamba,
    MambaMixer,
    resolve_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)

TOLERANCE = 1e-5  # max |chunked − reference| / max |reference|, for the output and for every gradient


def _scan_inputs(batch, length, d_inner, d_state, delta_mean, delta_spread=0.5, seed=0):
    """Random time-major scan arguments; A spread around mamba_ssm's init −(1…N), Δ = softplus(δ + b) around
    e^delta_mean."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    A = -torch.exp(torch.log(torch.arange(1, d_state + 1.0)) + 0.5 * randn(d_inner, d_state))
    return dict(
        u=randn(length, batch, d_inner),
        delta=randn(length, batch, d_inner) * delta_spread + delta_mean,
        A=A,
        B=randn(length, batch, d_state),
        C=randn(length, batch, d_state),
        D=randn(d_inner),
        z=randn(length, batch, d_inner),
        delta_bias=0.3 * randn(d_inner),
    )


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def _leaves(inputs):
    """Fresh leaf tensors requiring grad for the given inputs (None stays None and is left out)."""
    return {name: value.clone().requires_grad_() for name, value in inputs.items() if value is not None}


def _absent(inputs):
    return {name: None for name, value in inputs.items() if value is None}


def _outputs_and_grads(scan, inputs, grad_output, **kwargs):
    leaves = _leaves(inputs)
    out = scan(**leaves, **_absent(inputs), **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_output)
    return out.detach(), dict(zip(leaves, grads))


def _assert_matches_reference(inputs, **kwargs):
    leaves = _leaves(inputs)
    reference = selective_scan_reference(**leaves, **_absent(inputs))
    grad_output = torch.randn_like(reference)
    reference_grads = dict(zip(leaves, torch.autograd.grad(reference, list(leaves.values()), grad_output)))
    out, grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, **kwargs)
    errors = {"output": _relative_error(out, reference.detach())}
    errors.update({f"d{name}": _relative_error(grads[name], reference_grads[name]) for name in grads})
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: relative error {errors[worst]:.2e} > {TOLERANCE} ({errors})"
    return errors


# Δ regimes: typical (e^-3 … e^-2), very small (≈ 1e-9: the state barely moves), very large (≈ 30: the state forgets
# within one step; exp(Δ·A) underflows to exactly 0), and mixed across a wide range.
DELTA_REGIMES = {"typical": (-3.0, 0.5), "tiny": (-20.0, 0.5), "huge": (30.0, 2.0), "wide": (-4.0, 6.0)}


@pytest.mark.parametrize("regime", sorted(DELTA_REGIMES))
@pytest.mark.parametrize("mode", ["parallel", "stepwise"])
def test_chunked_scan_equals_reference(regime, mode):
    mean, spread = DELTA_REGIMES[regime]
    inputs = _scan_inputs(batch=3, length=83, d_inner=12, d_state=6, delta_mean=mean, delta_spread=spread)
    # chunk 16 leaves a partial last chunk; tile 2 leaves a partial last tile
    _assert_matches_reference(inputs, mode=mode, chunk_size=16, batch_tile=2)


# -- the compiled CPU scan ("cpu" backend, mode="native") -------------------------------------------------------


@pytest.mark.parametrize("regime", sorted(DELTA_REGIMES))
@pytest.mark.parametrize("d_state", [6, 8])
def test_native_scan_equals_reference(regime, d_state):
    """d_state 6 runs the portable step loop, 8 the AVX2 one (four states at a time, its own exp2) where the CPU
    has AVX2; the backward pass recomputes the states with the portable loop in both cases."""
    mean, spread = DELTA_REGIMES[regime]
    inputs = _scan_inputs(batch=3, length=83, d_inner=16, d_state=d_state, delta_mean=mean, delta_spread=spread)
    # chunk 16 leaves a partial last chunk; tile 2 leaves a partial last tile; two 8-channel blocks
    _assert_matches_reference(inputs, mode="native", chunk_size=16, batch_tile=2)


def test_native_scan_without_bias_skip_or_gate_equals_reference():
    inputs = _scan_inputs(batch=2, length=40, d_inner=8, d_state=4, delta_mean=-3.0, seed=6)
    inputs.update(D=None, z=None, delta_bias=None)
    _assert_matches_reference(inputs, mode="native", chunk_size=16)


def test_native_scan_at_thesis_size_with_default_plan_equals_reference():
    inputs = _scan_inputs(batch=5, length=70, d_inner=256, d_state=16, delta_mean=-3.0, seed=3)
    errors = _assert_matches_reference(inputs, mode="native")
    assert errors["output"] < 1e-6


def test_native_scan_propagates_nan_and_inf_like_the_reference():
    inputs = _scan_inputs(batch=1, length=12, d_inner=8, d_state=4, delta_mean=-3.0)
    inputs["u"][5, 0, 3] = float("nan")
    out = selective_scan_chunked(**inputs, mode="native")
    reference = selective_scan_reference(**inputs)
    torch.testing.assert_close(out.isnan(), reference.isnan())
    assert out[:5].isfinite().all() and out[5:, 0, 3].isnan().all()


def test_native_scan_threads_match_single_thread_exactly():
    """Batch tiles on worker threads (the ctypes call releases the GIL): bit-identical to one thread."""
    inputs = _scan_inputs(batch=7, length=50, d_inner=16, d_state=6, delta_mean=-3.0, seed=4)
    grad_output = torch.randn(50, 7, 16, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, single_grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, mode="native")
        torch.set_num_threads(2)
        plan = mamba_mixer._scan_plan(50, 7, 16, 6, torch.device("cpu"), None, None, "native")
        assert (plan.workers, plan.batch_tile) == (2, 4)
        pooled, pooled_grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, mode="native")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(pooled, single, rtol=0, atol=0)
    for name in single_grads:
        if name in ("A", "D", "delta_bias"):  # sums of per-tile partial sums: tiles change the summation order
            assert _relative_error(pooled_grads[name], single_grads[name]) < 1e-6, name
        else:
            torch.testing.assert_close(pooled_grads[name], single_grads[name], rtol=0, atol=0, msg=name)


def test_explicit_cpu_backend_says_why_it_cannot_run():
    with pytest.raises(ValueError, match="d_inner a multiple of 8.*d_inner=12"):
        resolve_backend("cpu", torch.device("cpu"), d_inner=12, d_state=4)
    with pytest.raises(ValueError, match="CPU only.*meta"):
        resolve_backend("cpu", torch.device("meta"))


def test_kernel_is_built_once_into_the_cache_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("POLSESS_HF_KERNEL_CACHE", str(tmp_path))
    compiler = native._compiler()
    first = native._build(compiler)
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native._build(compiler) == first and first.stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert [path.name for path in tmp_path.iterdir()] == [first.name]  # no temporary files left behind


def test_unusable_cache_directory_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv("POLSESS_HF_KERNEL_CACHE", str(blocker / "kernels"))  # mkdir fails: a file is in the way
    built = native._build(native._compiler())
    assert built.exists() and str(built).startswith(tempfile.gettempdir())


def test_without_a_compiler_auto_falls_back_to_torch_with_one_warning(tmp_path):
    """A machine without a C compiler: one RuntimeWarning, then "auto" runs the pure-PyTorch scan."""
    code = (
        "import warnings, torch\n"
        "from polsess_hf.models.spmamba.mamba_mixer import resolve_backend, selective_scan_reference\n"
        "from polsess_hf.models.spmamba.mamba_mixer import selective_scan\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    backends = [resolve_backend('auto', torch.device('cpu')) for _ in range(3)]\n"
        "    args = (torch.randn(6, 1, 8), torch.randn(6, 1, 8), -torch.rand(8, 2), torch.randn(6, 1, 2),"
        " torch.randn(6, 1, 2))\n"
        "    torch.testing.assert_close(selective_scan(*args), selective_scan_reference(*args))\n"
        "print(backends, len(caught), caught[0].message if caught else '')\n"
    )
    env = {**os.environ, "CC": "", "PATH": str(tmp_path), "POLSESS_HF_KERNEL_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "['torch', 'torch', 'torch'] 1 " in result.stdout
    assert "no C compiler found" in result.stdout and "pure-PyTorch scan" in result.stdout
    env["POLSESS_HF_NATIVE_SCAN"] = "0"  # turned off on purpose: no warning
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "['torch', 'torch', 'torch'] 0 " in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def long_sequence_reference():
    """4,003 steps through the sequential reference, with gradients (computed once: ~40K tiny autograd nodes)."""
    inputs = _scan_inputs(batch=1, length=4003, d_inner=8, d_state=16, delta_mean=-3.0)  # 8: one native block
    leaves = {name: value.clone().requires_grad_() for name, value in inputs.items()}
    reference = selective_scan_reference(**leaves)
    grad_output = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    grads = dict(zip(leaves, torch.autograd.grad(reference, list(leaves.values()), grad_output)))
    return inputs, reference.detach(), grad_output, grads


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["parallel", "stepwise", "native"])
def test_chunked_scan_long_sequence(mode, long_sequence_reference):
    """≥ 4,000 steps: errors must not accumulate over chunks (state and adjoint are carried 126 times)."""
    inputs, reference, grad_output, reference_grads = long_sequence_reference
    out, grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, mode=mode, chunk_size=32)
    errors = {"output": _relative_error(out, reference)}
    errors.update({f"d{name}": _relative_error(grads[name], reference_grads[name]) for name in grads})
    assert max(errors.values()) <= TOLERANCE, errors
    assert errors["output"] < 1e-6


def test_parallel_form_falls_back_exactly_when_decay_is_too_large():
    """With huge Δ every chunk fails the parallel-form range check: the result must equal the stepwise one."""
    inputs = _scan_inputs(batch=2, length=40, d_inner=8, d_state=4, delta_mean=30.0)
    parallel = selective_scan_chunked(**inputs, mode="parallel", chunk_size=8)
    stepwise = selective_scan_chunked(**inputs, mode="stepwise", chunk_size=8)
    torch.testing.assert_close(parallel, stepwise, rtol=0, atol=0)
    assert torch.isfinite(parallel).all()


def test_cpu_worker_threads_match_reference_and_single_thread_exactly():
    """With several threads, the CPU scan runs its batch tiles on worker threads (single-threaded operations): the
    result and every gradient equal the one-thread run bit for bit, and the thread count is restored."""
    inputs = _scan_inputs(batch=5, length=40, d_inner=12, d_state=6, delta_mean=-3.0, seed=4)
    grad_output = torch.randn(40, 5, 12, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, single_grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, batch_tile=1)
        torch.set_num_threads(2)
        plan = mamba_mixer._scan_plan(40, 5, 12, 6, torch.device("cpu"), None, 1, None)
        assert plan.workers == 2 and plan.single_threaded_ops and plan.mode == "stepwise"
        pooled, pooled_grads = _outputs_and_grads(selective_scan_chunked, inputs, grad_output, batch_tile=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(pooled, single, rtol=0, atol=0)
    for name in single_grads:
        torch.testing.assert_close(pooled_grads[name], single_grads[name], rtol=0, atol=0, msg=name)
    _assert_matches_reference(inputs, batch_tile=1)


def test_cpu_default_plan_splits_the_batch_over_threads():
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert mamba_mixer._scan_plan(126, 130, 256, 16, cpu, None, None, None).batch_tile == 65
        assert mamba_mixer._scan_plan(126, 501, 256, 16, cpu, None, None, None).batch_tile == 126  # ≤ 128 each
        torch.set_num_threads(1)
        assert mamba_mixer._scan_plan(126, 130, 256, 16, cpu, None, None, None).batch_tile == 65  # 130 > 128
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="mode.*'fast'"):
        mamba_mixer._scan_plan(10, 1, 4, 2, cpu, None, None, "fast")


def test_default_plan_at_thesis_size_equals_reference():
    """The real shapes (d_inner 256, d_state 16) with the default chunk/tile plan."""
    inputs = _scan_inputs(batch=66, length=10, d_inner=256, d_state=16, delta_mean=-3.0, seed=3)  # 3 tiles of 22
    _assert_matches_reference(inputs)


def test_chunked_scan_is_fp32_under_bf16_autocast():
    inputs = _scan_inputs(batch=2, length=50, d_inner=8, d_state=4, delta_mean=-3.0)
    low = {name: value.bfloat16() if value.dim() == 3 else value for name, value in inputs.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = selective_scan_chunked(**low)
    assert out.dtype == torch.float32
    expected = selective_scan_reference(**{name: value.float() for name, value in low.items()})
    assert _relative_error(out, expected) < 1e-6  # same bf16 inputs, fp32 arithmetic: no bf16 rounding inside


def test_no_state_tensor_for_the_whole_sequence_is_kept_for_backward():
    """Training memory: the scan saves its inputs and one state per chunk, never (batch, length, d_inner, d_state)."""
    inputs = _scan_inputs(batch=2, length=256, d_inner=32, d_state=16, delta_mean=-3.0)
    leaves = {name: value.clone().requires_grad_() for name, value in inputs.items()}
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        selective_scan_chunked(**leaves, chunk_size=32).sum().backward()
    full_states = 2 * 256 * 32 * 16
    assert max(saved) <= full_states // 8, f"largest saved tensor {max(saved)} elements (all states: {full_states})"


def _assert_mixer_matches_reference(mixer, hidden, backend):
    """Output and every gradient (input and parameters) of ``mixer`` on ``backend`` within TOLERANCE of the
    reference backend; returns the output."""
    mixer.backend = "reference"
    expected = mixer(hidden)
    expected_grads = torch.autograd.grad(expected.square().sum(), [hidden, *mixer.parameters()])
    mixer.backend = backend
    out = mixer(hidden)
    grads = torch.autograd.grad(out.square().sum(), [hidden, *mixer.parameters()])
    assert _relative_error(out, expected) < TOLERANCE
    names = ["input"] + [name for name, _ in mixer.named_parameters()]
    for name, grad, reference in zip(names, grads, expected_grads):
        assert _relative_error(grad, reference) < TOLERANCE, name
    return out


@pytest.mark.parametrize("backend", ["torch", "cpu", "reference"])
def test_mixer_backends_share_weights_and_agree(backend):
    torch.manual_seed(0)
    mixer = MambaMixer(d_model=16, d_state=8, d_conv=4, expand=2, backend="reference")
    mixer.reset_mamba_parameters()
    _assert_mixer_matches_reference(mixer, torch.randn(37, 3, 16, requires_grad=True), backend)


@pytest.mark.parametrize("length, batch", [(1, 1), (2, 3), (5, 1), (70, 2)])
def test_fused_cpu_mixer_matches_reference_at_edge_shapes(length, batch):
    """The "cpu" mixer (conv + SiLU and softplus + scan + gate in compiled kernels, strided views of the
    projections): shorter than the conv kernel, one sequence, several chunks (70 > 64)."""
    torch.manual_seed(1)
    mixer = MambaMixer(d_model=8, d_state=4, d_conv=4, expand=2, backend="reference")
    mixer.reset_mamba_parameters()
    with torch.no_grad():
        mixer.conv1d.bias.normal_()
        mixer.D.normal_()
    hidden = torch.randn(length, batch, 8, requires_grad=True)
    out = _assert_mixer_matches_reference(mixer, hidden, "cpu")
    with torch.no_grad():  # inference keeps no chunk states and gives the same numbers
        torch.testing.assert_close(mixer(hidden), out.detach(), rtol=0, atol=0)


def test_fused_cpu_mixer_is_fp32_under_bf16_autocast_and_propagates_nan():
    torch.manual_seed(2)
    mixer = MambaMixer(d_model=8, d_state=4, expand=2, backend="cpu")
    mixer.reset_mamba_parameters()
    hidden = torch.randn(20, 2, 8)
    full = mixer(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = mixer(hidden)
    assert low.dtype == torch.bfloat16  # out_proj runs under autocast; the core in between ran in fp32
    assert ((low.float() - full).norm() / full.norm()).item() < 0.02
    hidden[7, 1, 3] = float("nan")
    out = mixer(hidden)
    assert out[:7].isfinite().all() and out[7:, 1].isnan().all() and out[:, 0].isfinite().all()


def test_mixer_parameter_names_and_shapes_are_mamba_ssm_s():
    mixer = MambaMixer(d_model=64, d_state=16, d_conv=4, expand=4)
    shapes = {name: tuple(p.shape) for name, p in mixer.named_parameters()}
    assert shapes == {
        "A_log": (256, 16),
        "D": (256,),
        "in_proj.weight": (512, 64),
        "conv1d.weight": (256, 1, 4),
        "conv1d.bias": (256,),
        "x_proj.weight": (4 + 32, 256),
        "dt_proj.weight": (256, 4),
        "dt_proj.bias": (256,),
        "out_proj.weight": (64, 256),
    }


def test_mixer_causal_conv_equals_mamba_ssm_conv1d():
    torch.manual_seed(0)
    mixer = MambaMixer(d_model=8, d_state=4, d_conv=4, expand=2)
    for length in (11, 2):  # also shorter than the kernel
        x = torch.randn(length, 2, 16)
        expected = mixer.conv1d(x.permute(1, 2, 0))[..., :length].permute(2, 0, 1)  # mamba_ssm: conv1d(x)[..., :L]
        torch.testing.assert_close(mixer.causal_conv(x), expected, rtol=1e-6, atol=1e-6)


def test_mamba_init_follows_mamba_ssm():
    torch.manual_seed(0)
    mixer = MambaMixer(d_model=64, d_state=16, d_conv=4, expand=4)
    mixer.reset_mamba_parameters()
    torch.testing.assert_close(mixer.A_log[7], torch.log(torch.arange(1, 17.0)))
    torch.testing.assert_close(mixer.D, torch.ones(256))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert mixer.dt_proj.weight.abs().max() <= 4**-0.5


def test_bidirectional_groups_do_not_change_the_result():
    torch.manual_seed(0)
    block = BidirectionalMamba(d_model=8, d_state=4, expand=2, backend="torch")
    sequences = torch.randn(9, 10, 8)
    whole = block(sequences)
    block.max_tokens = 20  # 2 sequences per group
    torch.testing.assert_close(block(sequences), whole, rtol=1e-6, atol=1e-6)
    assert whole.shape == (9, 10, 16)


def test_auto_backend_on_cpu_is_the_compiled_scan_and_never_imports_mamba_ssm(monkeypatch):
    # the machines this project runs on have a C compiler (make install needs none, the kernel builds on first use)
    assert resolve_backend("auto", torch.device("cpu")) == "cpu", native.kernel_status()
    assert resolve_backend("auto", torch.device("cpu"), d_inner=12, d_state=4) == "torch"  # 12: not a multiple of 8
    with pytest.raises(ValueError, match="mamba_backend.*'fast'"):
        resolve_backend("fast", torch.device("cpu"))
    monkeypatch.setattr(mamba_mixer, "_MAMBA_SSM_TRIED", False)
    monkeypatch.delitem(sys.modules, "mamba_ssm", raising=False)
    mixer = MambaMixer(d_model=8, d_state=4, expand=2, backend="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on CPU: "auto" means cpu/torch there, silently
        mixer(torch.randn(5, 1, 8))
    assert "mamba_ssm" not in sys.modules
    assert not mamba_mixer._MAMBA_SSM_TRIED  # not even attempted


def test_package_import_does_not_import_mamba_ssm():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, polsess_hf; assert 'mamba_ssm' not in sys.modules; print('OK')"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_failed_mamba_ssm_import_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(mamba_mixer, "_MAMBA_SSM_TRIED", False)
    monkeypatch.setattr(mamba_mixer, "_MAMBA_SSM_SCAN", None)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # `import mamba_ssm…` now raises ImportError
    with pytest.warns(RuntimeWarning, match="mamba_ssm's CUDA kernels are not available.*(ImportError|ModuleNotFoundError)"):
        assert mamba_mixer.load_mamba_ssm_selective_scan() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mamba_mixer.load_mamba_ssm_selective_scan() is None  # second call: no second warning


def test_dispatch_reaches_each_backend():
    inputs = _scan_inputs(batch=1, length=10, d_inner=4, d_state=2, delta_mean=-3.0)
    reference = selective_scan(**inputs, backend="reference")
    torch.testing.assert_close(selective_scan(**inputs, backend="torch"), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(selective_scan(**inputs, backend="auto"), reference, rtol=1e-5, atol=1e-6)
    wide = _scan_inputs(batch=1, length=10, d_inner=8, d_state=2, delta_mean=-3.0)
    torch.testing.assert_close(
        selective_scan(**wide, backend="cpu"), selective_scan(**wide, backend="reference"), rtol=1e-5, atol=1e-6
    )


def test_worker_threads_run_under_the_callers_inference_mode():
    """separate() runs models under torch.inference_mode: the scan's worker threads must write into its inference
    tensors (they failed with "Inplace update to inference tensor outside InferenceMode")."""
    torch.manual_seed(0)
    length, batch, d_inner, d_state = 20, 300, 64, 16
    args = (torch.randn(length, batch, d_inner), torch.randn(length, batch, d_inner) - 2,
            -torch.rand(d_inner, d_state) - 0.5, torch.randn(length, batch, d_state), torch.randn(length, batch, d_state))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            y = selective_scan_chunked(*args, batch_tile=64)
        expected = selective_scan_reference(*args)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile_tokens", [1, 27, 10_000])
def test_cpu_inference_tiles_equal_the_autograd_path(monkeypatch, tile_tokens):
    """Without autograd the "cpu" backend runs BidirectionalMamba tile by tile (a few whole sequences through both
    directions, intermediates in per-thread workspaces): one sequence per tile, uneven tiles (10 = 3+3+3+1), one
    tile. Same numbers as the autograd path, under inference mode too, and on 1 or 2 threads."""
    import polsess_hf.models.spmamba.mamba_mixer as mamba_mixer

    torch.manual_seed(0)
    block = BidirectionalMamba(d_model=8, d_state=4, expand=2, backend="cpu")
    for mixer in (block.forward_blocks[0].mixer, block.backward_blocks[0].mixer):
        mixer.reset_mamba_parameters()
        with torch.no_grad():
            mixer.conv1d.bias.normal_()
            mixer.D.normal_()
    sequences = torch.randn(9, 10, 8)
    expected = block(sequences)  # grad mode: whole-batch autograd path
    block.set_backend("reference")
    reference = block(sequences).detach()
    block.set_backend("cpu")
    monkeypatch.setattr(mamba_mixer, "_INFERENCE_TILE_TOKENS", tile_tokens)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            with torch.no_grad():
                assert block.tiled_inference_supported(sequences)
                tiled = block(sequences)
            with torch.inference_mode():
                in_inference_mode = block(sequences)
            torch.testing.assert_close(tiled, expected.detach(), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(in_inference_mode, tiled, rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)
    assert _relative_error(tiled, reference) < TOLERANCE
    assert not block.tiled_inference_supported(sequences)  # grad mode here
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not block.tiled_inference_supported(sequences)  # autocast is per thread: not in the tiles
