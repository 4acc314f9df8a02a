"""polsess_hf.metrics: SI-SDR(i) against a numpy reference, BSS-eval SDR properties, PESQ/STOI oracles and
mixture baselines, invalid inputs, missing optional packages, the thesis convention, the 🤗 evaluate module."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from evaluation_helpers import numpy_si_sdr, speech_like  # noqa: E402
from polsess_hf import metrics
from polsess_hf.metrics import (
    EVALUATE_METRIC_PATH,
    MissingMetricDependency,
    pesq_mode,
    pesq_per_source,
    sdr_per_source,
    separation_metrics,
    stoi_per_source,
)

RATE = 8000


def _sources(n_examples: int = 2, n_src: int = 2, length: int = 16000, seed: int = 0, rate: int = RATE):
    rng = np.random.default_rng(seed)
    signals = np.stack([np.stack([speech_like(rng, length, rate) for _ in range(n_src)]) for _ in range(n_examples)])
    return torch.from_numpy(signals.astype(np.float32))


def test_si_sdr_and_si_sdri_match_a_numpy_reference_under_a_known_permutation():
    targets = _sources(3)
    rng = np.random.default_rng(1)
    noise = torch.from_numpy(0.05 * rng.standard_normal(targets.shape).astype(np.float32))
    estimates = targets.flip(1) + noise + 0.3  # speakers swapped, a DC offset (zero-mean removes it)
    mixture = targets.sum(1) + 0.01
    result = separation_metrics(estimates, targets, mixture, sample_rate=RATE, sdr=False, pesq=False, stoi=False)
    assert result.perm.tolist() == [[1, 0]] * 3
    torch.testing.assert_close(result.estimates, estimates.flip(1))
    for b in range(3):
        expected = np.mean([numpy_si_sdr(estimates[b, 1 - k].numpy(), targets[b, k].numpy()) for k in range(2)])
        baseline = np.mean([numpy_si_sdr(mixture[b].numpy(), targets[b, k].numpy()) for k in range(2)])
        assert result.values["si_sdr"][b] == pytest.approx(expected, abs=1e-3)
        assert result.values["si_sdri"][b] == pytest.approx(expected - baseline, abs=1e-3)


def test_oracle_and_mixture_as_estimate():
    targets = _sources(2)
    mixture = targets.sum(1)
    perfect = separation_metrics(targets.flip(1), targets, mixture, sample_rate=RATE)
    assert (perfect.values["si_sdr"] > 80).all()
    np.testing.assert_allclose(perfect.values["sdr"], metrics.SDR_CLAMP_DB, atol=1e-3)  # +inf clamped
    assert (perfect.values["pesq"] > 4.5).all() and (perfect.values["pesq"] < 4.6).all()  # nb MOS-LQO max 4.55
    np.testing.assert_allclose(perfect.values["stoi"], 1.0, atol=1e-6)
    assert (perfect.values["pesqi"] > 0.5).all() and (perfect.values["stoii"] > 0.1).all()

    as_mixture = separation_metrics(mixture.unsqueeze(1).repeat(1, 2, 1), targets, mixture, sample_rate=RATE)
    for name in ("si_sdri", "pesqi", "stoii"):
        np.testing.assert_array_equal(as_mixture.values[name], 0.0)
    assert (np.abs(as_mixture.values["si_sdr"]) < 1.5).all()  # two equal-power speakers: about 0 dB


def test_bss_eval_sdr_allows_a_short_filter_and_matches_the_snr():
    rng = np.random.default_rng(2)
    target = speech_like(rng, 32000)
    noise = rng.standard_normal(32000)
    noise *= np.sqrt(np.sum(target**2) / np.sum(noise**2) / 10)  # SNR 10 dB
    filtered = np.concatenate([np.zeros(20), target[:-20]])  # a 2.5 ms delay: a 21-tap filter
    estimates = np.stack([target + noise, filtered + noise * np.sqrt(np.sum(filtered**2) / np.sum(target**2))])
    sdr = sdr_per_source(estimates[:, None], np.stack([target, target])[:, None])
    # 512 filter taps absorb a fraction 512/32000 of the white noise: SDR is the SNR + 0.07 dB.
    np.testing.assert_allclose(sdr[:, 0], 10.0, atol=0.2)
    si_sdr_filtered = numpy_si_sdr(estimates[1], target)
    assert si_sdr_filtered < 0.0  # SI-SDR counts the delay as distortion, BSS-eval SDR does not


def test_invalid_pairs_are_nan_and_never_crash(monkeypatch):
    targets = _sources(4)
    estimates = targets + 0.05 * torch.randn(targets.shape)
    targets[1, 0] = 0.0  # silent reference
    estimates[2, 1] = float("nan")  # non-finite estimate
    estimates[3, 0] = 0.0  # silent estimate (pesq itself fails with a ValueError on it)
    result = separation_metrics(estimates, targets, targets.sum(1), sample_rate=RATE)
    for name in ("sdr", "pesq", "pesqi", "stoi", "stoii"):
        assert np.isfinite(result.values[name][0]), name
        assert np.isnan(result.values[name][1:]).all(), name
    assert np.isnan(result.values["si_sdr"][2]) and np.isfinite(result.values["si_sdr"][[0, 1, 3]]).all()

    short = _sources(1, length=1000)  # 0.125 s: PESQ's BufferTooShortError
    assert np.isnan(pesq_per_source(short, short, RATE)).all()
    import pesq

    def no_utterance(rate, reference, estimate, mode):
        if np.abs(reference).max() < 0.01:
            raise pesq.NoUtterancesError(b"No utterances detected")
        return 3.0

    monkeypatch.setattr(pesq, "pesq", no_utterance)
    quiet = _sources(1)
    quiet[0, 1] *= 1e-3
    np.testing.assert_array_equal(pesq_per_source(quiet, quiet, RATE), [[3.0, np.nan]])


def test_pesq_modes_and_resampling():
    assert pesq_mode(8000) == ("nb", 8000) and pesq_mode(16000) == ("wb", 16000)
    assert pesq_mode(44100) == ("wb", 16000) and pesq_mode(11025) == ("nb", 8000)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer in Hz, got 8000.0"):
        pesq_mode(8000.0)
    wide = _sources(1, n_src=1, length=32000, rate=16000)
    assert pesq_per_source(wide, wide, 16000)[0, 0] == pytest.approx(4.644, abs=0.01)  # wb maximum
    hifi = _sources(1, n_src=1, length=44100, rate=44100)
    assert pesq_per_source(hifi, hifi, 44100)[0, 0] == pytest.approx(4.644, abs=0.01)  # resampled to 16 kHz
    degraded = hifi + 0.05 * torch.randn(hifi.shape)
    assert 1.0 < pesq_per_source(degraded, hifi, 44100)[0, 0] < 4.0
    assert stoi_per_source(hifi, hifi, 44100)[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("module, metric, message", [("pesq", "pesq", "PESQ needs the 'pesq' package"),
                                                     ("pystoi", "stoi", "STOI needs the 'pystoi' package")])
def test_missing_optional_package_gives_the_install_command(monkeypatch, module, metric, message):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    targets = _sources(1)
    with pytest.raises(MissingMetricDependency, match=f"{message}.*pip install 'polsess_hf\\[metrics\\]'"):
        separation_metrics(targets, targets, targets.sum(1), sample_rate=RATE)
    assert not getattr(metrics, f"{metric}_available")()
    other = {"pesq": "stoi", "stoi": "pesq"}[metric]
    result = separation_metrics(targets, targets, targets.sum(1), sample_rate=RATE, **{metric: False})
    assert metric not in result.values and f"{other}i" in result.values


@pytest.mark.parametrize("n_src", [2, 1])
def test_thesis_convention_equals_the_trainer_metrics(n_src):
    from polsess_hf.training.trainer import batch_metrics

    targets = _sources(3, n_src=n_src) + 0.02  # a DC offset makes the conventions differ
    estimates = targets.flip(1) + 0.1 * torch.randn(targets.shape)
    mixture = targets.sum(1) + 0.05 * torch.randn(targets.shape[0], targets.shape[-1])
    thesis = separation_metrics(estimates, targets, mixture, sample_rate=RATE, sdr=False, pesq=False, stoi=False,
                                convention="thesis")
    score, improvement = batch_metrics(estimates, targets, mixture)
    np.testing.assert_allclose(thesis.values["si_sdr"], score.numpy(), atol=1e-4)
    np.testing.assert_allclose(thesis.values["si_sdri"], improvement.numpy(), atol=1e-4)
    zero_mean = separation_metrics(estimates, targets, mixture, sample_rate=RATE, sdr=False, pesq=False, stoi=False)
    assert not np.allclose(zero_mean.values["si_sdri"], thesis.values["si_sdri"], atol=1e-4)
    with pytest.raises(ValueError, match="convention must be one of \\['zero_mean', 'thesis'\\], got 'asteroid'"):
        separation_metrics(estimates, targets, mixture, sample_rate=RATE, convention="asteroid")


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"estimates \(2, 2, 100\) and targets \(2, 2, 90\)"):
        separation_metrics(torch.zeros(2, 2, 100), torch.zeros(2, 2, 90), torch.zeros(2, 90), sample_rate=RATE)
    with pytest.raises(ValueError, match=r"mixture must be \(batch_size, time_steps\) = \(2, 90\), got \(2, 80\)"):
        separation_metrics(torch.zeros(2, 2, 90), torch.zeros(2, 2, 90), torch.zeros(2, 80), sample_rate=RATE)


def test_evaluate_module_matches_the_metrics_functions(monkeypatch):
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    rng = np.random.default_rng(3)
    references = [np.stack([speech_like(rng, n), speech_like(rng, n)]).astype(np.float32) for n in (4000, 6000)]
    predictions = [r[::-1] + 0.1 * rng.standard_normal(r.shape).astype(np.float32) for r in references]
    mixtures = [r.sum(0) for r in references]
    expected = [
        separation_metrics(torch.from_numpy(p.copy())[None], torch.from_numpy(r)[None], torch.from_numpy(m)[None],
                           sample_rate=RATE, sdr=False, pesq=False, stoi=False).values
        for p, r, m in zip(predictions, references, mixtures)
    ]
    module = evaluate.load(EVALUATE_METRIC_PATH, "si_sdri")
    for p, r, m in zip(predictions, references, mixtures):  # streaming, examples of different lengths
        module.add_batch(predictions=[p], references=[r], mixtures=[m])
    result = module.compute()
    assert result["si_sdr"] == pytest.approx(np.mean([e["si_sdr"][0] for e in expected]), abs=1e-4)
    assert result["si_sdri"] == pytest.approx(np.mean([e["si_sdri"][0] for e in expected]), abs=1e-4)

    plain = evaluate.load(EVALUATE_METRIC_PATH)
    single = plain.compute(predictions=[p[0] for p in predictions], references=[r[1] for r in references])
    assert single == {"si_sdr": pytest.approx(np.mean([numpy_si_sdr(p[0], r[1]) for p, r in zip(predictions, references)]), abs=1e-3)}
    with pytest.raises(ValueError, match="unknown configuration 'sdr'"):
        evaluate.load(EVALUATE_METRIC_PATH, "sdr")


@pytest.mark.slow  # a fresh interpreter importing evaluate (and through it transformers' pipelines): 8-30 s
def test_evaluate_module_loads_offline_in_a_fresh_process(tmp_path):
    code = (
        "import evaluate, numpy as np; from polsess_hf.metrics import EVALUATE_METRIC_PATH as p; "
        "s = np.random.default_rng(0).standard_normal((2, 4000)).astype('float32'); "
        "r = evaluate.load(p, 'si_sdri').compute(predictions=[s[::-1]], references=[s], mixtures=[s.sum(0)]); "
        "print(round(r['si_sdri'] - r['si_sdr'], 3))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "OMP_NUM_THREADS": "1"}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert output.returncode == 0, output.stderr[-3000:]
    # si_sdri − si_sdr = −SI-SDR(mixture, source) of two independent unit-variance noises: about 0 dB
    assert abs(float(output.stdout.strip().splitlines()[-1])) < 1.0
