#!/usr/bin/env python
"""`make demo`: mini corpus → train configs/quickstart.yaml → evaluate → separate one mixture into WAV files.

Everything goes under ``demo_outputs/`` (git-ignored):

* ``demo_outputs/mini_polsess/``      the generated mini corpus (PolSESS layout, 8 kHz, 4 s clips)
* ``demo_outputs/quickstart/``        checkpoints, TensorBoard logs, ``results.json``, ``best/`` (the best model)
* ``demo_outputs/separated/``         ``<mixture>_spk1.wav`` and ``<mixture>_spk2.wav``

Training goes through the same code as ``accelerate launch examples/run_separation.py configs/quickstart.yaml``
(:func:`polsess_hf.training.runner.main`). Extra arguments are passed on as overrides, e.g.
``python examples/demo.py --num_train_epochs 2``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    from transformers import AutoModel

    import polsess_hf  # noqa: F401  (registers the architectures with AutoModel)
    from polsess_hf.data import SeparationCollator, load_polsess
    from polsess_hf.training.runner import main as train_main
    from polsess_hf.training.trainer import batch_metrics

    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    config = REPO / "configs" / "quickstart.yaml"
    results = train_main([str(config), *argv])
    best_dir = Path(results["best_model_dir"])
    train_seconds = time.time() - start

    # Evaluate the best model on the pooled SER+SE validation split (the monitored set), fp32.
    from polsess_hf.training.arguments import parse_config

    _, data_args, _ = parse_config(config, argv)
    model = AutoModel.from_pretrained(best_dir).eval()
    val = load_polsess(data_args.data_root, "val", task=data_args.task, variants=data_args.validation_variants,
                       cache_dir=data_args.cache_dir)
    loader = torch.utils.data.DataLoader(val, batch_size=10, collate_fn=SeparationCollator("stack"))
    scores, gains = [], []
    with torch.no_grad():
        for batch in loader:
            estimates = model(batch["input_values"]).estimates
            score, gain = batch_metrics(estimates, batch["labels"], batch["input_values"])
            scores.append(score)
            gains.append(gain)
    si_sdr, si_sdri = torch.cat(scores).mean().item(), torch.cat(gains).mean().item()

    # Separate one validation mixture (the unmodified mix file) into one WAV per speaker.
    item = val[0]
    mixture_path = Path(val.index[int(val.rows[0])]["mix_path"]) if "mix_path" in val.index.column_names else None
    name = Path(item["id"]).stem
    out_dir = best_dir.parent.parent / "separated"  # demo_outputs/separated beside demo_outputs/quickstart
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        estimates = model(item["input_values"][None]).estimates[0].numpy()
    written = []
    for index, estimate in enumerate(estimates, start=1):
        # Scale-invariant training leaves the gain free: peak-normalise to 0.9 for listening.
        estimate = 0.9 * estimate / max(float(np.abs(estimate).max()), 1e-8)
        path = out_dir / f"{name}_spk{index}.wav"
        soundfile.write(path, estimate, model.config.sampling_rate, subtype="PCM_16")
        written.append(path)
    mixture_copy = out_dir / f"{name}_mixture.wav"
    soundfile.write(mixture_copy, item["input_values"].numpy(), model.config.sampling_rate, subtype="PCM_16")

    print("\n=== polsess_hf demo ===")
    print(f"mini corpus:        {Path(data_args.data_root).resolve()}")
    print(f"training:           {train_seconds:.0f} s, best epoch {results['best_epoch']}, "
          f"{results['best_metric_name']} {results['best_metric']:.2f} dB")
    print(f"best model:         {best_dir.resolve()}")
    print(f"validation (SER+SE, {len(val)} clips): SI-SDR {si_sdr:.2f} dB, SI-SDRi {si_sdri:.2f} dB")
    print(f"mixture:            {mixture_copy.resolve()}" + (f" (from {mixture_path})" if mixture_path else ""))
    for path in written:
        print(f"separated speaker:  {path.resolve()}")
    print(f"TensorBoard:        tensorboard --logdir {(best_dir.parent / 'runs').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
