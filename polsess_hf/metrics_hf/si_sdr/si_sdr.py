"""SI-SDR and SI-SDRi as a local 🤗 ``evaluate`` metric (zero-mean, permutation-invariant).

Load it by path (no Hub access, so it works with ``HF_HUB_OFFLINE=1`` / ``HF_EVALUATE_OFFLINE=1``)::

    import evaluate
    from polsess_hf.metrics import EVALUATE_METRIC_PATH

    si_sdr = evaluate.load(EVALUATE_METRIC_PATH)                # inputs: predictions, references
    si_sdri = evaluate.load(EVALUATE_METRIC_PATH, "si_sdri")    # inputs: predictions, references, mixtures

The numbers are those of ``polsess_hf.metrics.separation_metrics`` (the evaluation tables): the permutation that
maximises the mean zero-mean SI-SDR is chosen per example, SI-SDR is averaged over its sources, SI-SDRi
subtracts the zero-mean SI-SDR of the mixture used as every source's estimate, and the result is the mean over
examples.
"""

import datasets
import evaluate
import numpy as np
import torch

from polsess_hf.metrics import mixture_si_sdr, pit_reorder, si_sdr_per_source

_CITATION = """\
@inproceedings{le2019sdr,
  title={SDR--half-baked or well done?},
  author={Le Roux, Jonathan and Wisdom, Scott and Erdogan, Hakan and Hershey, John R},
  booktitle={ICASSP 2019},
  pages={626--630},
  year={2019}
}
"""

_DESCRIPTION = """\
Scale-invariant signal-to-distortion ratio (SI-SDR, dB) of separated sources, permutation-invariant, with
estimate and reference made zero-mean; with the "si_sdri" configuration also the improvement over the mixture.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per example an array (n_src, time_steps) of estimates in any speaker order, or (time_steps,)
        for one source.
    references: per example the reference sources, same shape as the prediction.
    mixtures (configuration "si_sdri" only): per example the mixture, (time_steps,).
Returns:
    si_sdr: mean over examples of the best-permutation mean SI-SDR (dB).
    si_sdri: mean over examples of SI-SDR(estimate) - SI-SDR(mixture) (dB), configuration "si_sdri" only.
Examples:
    >>> import evaluate, numpy as np
    >>> from polsess_hf.metrics import EVALUATE_METRIC_PATH
    >>> metric = evaluate.load(EVALUATE_METRIC_PATH, "si_sdri")
    >>> s = np.random.default_rng(0).standard_normal((2, 8000)).astype("float32")
    >>> result = metric.compute(predictions=[s[::-1]], references=[s], mixtures=[s.sum(0)])
    >>> result["si_sdr"] > 90, round(result["si_sdri"]) > 90
    (True, True)
"""

_CONFIGS = ("si_sdr", "si_sdri", "default")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SiSdr(evaluate.Metric):
    def _info(self):
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown configuration {self.config_name!r}; use 'si_sdr' (default) or 'si_sdri'")
        signal = datasets.Sequence(datasets.Value("float32"))
        sources = datasets.Sequence(signal)
        options = [{"predictions": sources, "references": sources}, {"predictions": signal, "references": signal}]
        if self.config_name == "si_sdri":
            for option in options:
                option["mixtures"] = signal
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[datasets.Features(option) for option in options],
            reference_urls=["https://arxiv.org/abs/1811.02508"],
        )

    def _compute(self, predictions, references, mixtures=None):
        scores, improvements = [], []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            estimate = torch.as_tensor(np.asarray(prediction, dtype=np.float32))
            target = torch.as_tensor(np.asarray(reference, dtype=np.float32))
            if estimate.dim() == 1:
                estimate, target = estimate[None], target[None]
            if estimate.shape != target.shape:
                raise ValueError(
                    f"example {index}: prediction {tuple(estimate.shape)} and reference {tuple(target.shape)} "
                    "must have the same shape (n_src, time_steps)"
                )
            ordered, _ = pit_reorder(estimate[None], target[None])
            score = si_sdr_per_source(ordered, target[None]).mean()
            scores.append(float(score))
            if mixtures is not None:
                mixture = torch.as_tensor(np.asarray(mixtures[index], dtype=np.float32))
                if mixture.shape != target.shape[-1:]:
                    raise ValueError(
                        f"example {index}: mixture {tuple(mixture.shape)} must have {target.shape[-1]} samples, "
                        "like its references"
                    )
                improvements.append(float(score - mixture_si_sdr(mixture[None], target[None]).mean()))
        result = {"si_sdr": float(np.mean(scores))}
        if mixtures is not None:
            result["si_sdri"] = float(np.mean(improvements))
        return result
