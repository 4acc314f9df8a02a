import itertools

import numpy as np
import pytest
import torch

from polsess_hf.losses import neg_pit_si_sdr_loss, pairwise_si_sdr, pit_permutate, pit_si_sdr, si_sdr


def numpy_si_sdr(estimate: np.ndarray, target: np.ndarray, eps: float = 1e-8) -> float:
    """Independent float64 reference (asteroid's zero-mean definition)."""
    estimate = estimate - estimate.mean()
    target = target - target.mean()
    projection = np.dot(estimate, target) / (np.dot(target, target) + eps) * target
    noise = estimate - projection
    return float(10 * np.log10(np.dot(projection, projection) / (np.dot(noise, noise) + eps) + eps))


def test_si_sdr_matches_numpy_reference():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((4, 8000))
    estimate = target + 0.3 * rng.standard_normal((4, 8000)) + 0.5  # DC offset must not matter
    ours = si_sdr(torch.from_numpy(estimate), torch.from_numpy(target))
    expected = [numpy_si_sdr(e, t) for e, t in zip(estimate, target)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)
    # the numbers themselves: noise at -10.46 dB relative to unit-variance speech
    assert 10.0 < ours.mean().item() < 11.0


def test_si_sdr_is_scale_invariant_and_known_value():
    target = torch.sin(torch.linspace(0, 100, 4000, dtype=torch.float64))
    noise = torch.cos(torch.linspace(0, 37, 4000, dtype=torch.float64))
    noise = noise - (noise @ target) / (target @ target) * target  # orthogonal to target
    noise = noise - noise.mean()
    target = target - target.mean()
    noise = noise - (noise @ target) / (target @ target) * target
    estimate = target + noise * (target.norm() / noise.norm()) * 0.1  # exactly 20 dB
    assert si_sdr(estimate, target).item() == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(7.5 * estimate, target).item() == pytest.approx(20.0, abs=1e-6)


def test_half_precision_inputs_are_computed_in_float32():
    target = torch.randn(2, 32000)
    estimate = target + 0.1 * torch.randn(2, 32000)
    full = si_sdr(estimate, target)
    low = si_sdr(estimate.bfloat16(), target.bfloat16())
    assert low.dtype == torch.float32
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low, full, atol=0.2, rtol=0)


def test_pairwise_matrix_entries():
    est = torch.randn(3, 2, 500, dtype=torch.float64)
    tgt = torch.randn(3, 2, 500, dtype=torch.float64)
    matrix = pairwise_si_sdr(est, tgt)
    assert matrix.shape == (3, 2, 2)
    for b, i, j in itertools.product(range(3), range(2), range(2)):
        assert matrix[b, i, j].item() == pytest.approx(numpy_si_sdr(est[b, i].numpy(), tgt[b, j].numpy()), rel=1e-10)


@pytest.mark.parametrize("n_src", [2, 3])
def test_pit_recovers_a_known_permutation(n_src):
    torch.manual_seed(1)
    targets = torch.randn(4, n_src, 1000, dtype=torch.float64)
    perms = [torch.randperm(n_src) for _ in range(4)]
    # estimates[b, perm[b][j]] = targets[b, j] (+ small noise)
    estimates = torch.empty_like(targets)
    for b, perm in enumerate(perms):
        estimates[b, perm] = targets[b] + 0.01 * torch.randn(n_src, 1000, dtype=torch.float64)
    best, found = pit_si_sdr(estimates, targets)
    for b, perm in enumerate(perms):
        assert found[b].tolist() == perm.tolist()
    assert (best > 35).all()
    reordered = pit_permutate(estimates, found)
    torch.testing.assert_close(reordered, targets, atol=0.05, rtol=0)


def test_loss_is_negative_mean_and_differentiable():
    targets = torch.randn(2, 2, 800)
    estimates = (targets.flip(1) + 0.5 * torch.randn(2, 2, 800)).requires_grad_()
    loss = neg_pit_si_sdr_loss(estimates, targets)
    best, _ = pit_si_sdr(estimates, targets)
    assert loss.item() == pytest.approx(-best.mean().item())
    loss.backward()
    assert torch.isfinite(estimates.grad).all() and estimates.grad.abs().sum() > 0


def test_silent_target_gives_finite_value():
    value = si_sdr(torch.randn(1, 100), torch.zeros(1, 100))
    assert torch.isfinite(value).all()


def test_shape_mismatch_is_reported_with_shapes():
    with pytest.raises(ValueError, match=r"\(2, 100\).*\(2, 99\)"):
        si_sdr(torch.zeros(2, 100), torch.zeros(2, 99))
    with pytest.raises(ValueError, match="batch, n_src, time"):
        pairwise_si_sdr(torch.zeros(2, 100), torch.zeros(2, 100))
