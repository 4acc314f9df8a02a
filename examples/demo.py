#!/usr/bin/env python
"""`make demo`: mini corpus → train configs/quickstart.yaml → per-variant evaluation → separate a mixture into WAVs.

Everything goes under ``demo_outputs/`` (git-ignored):

* ``demo_outputs/mini_polsess/``   the generated mini corpus (PolSESS layout, 8 kHz, 4 s clips)
* ``demo_outputs/quickstart/``     checkpoints, TensorBoard logs, ``results.json``, ``best/`` (the best model)
* ``demo_outputs/evaluation/``     the per-variant table of the best model on the test split (MD, CSV, JSON, PNG)
* ``demo_outputs/separated/``      ``<mixture>_spk1.wav``, ``<mixture>_spk2.wav`` and a copy of the mixture

Each step is the toolkit's own command run in-process: ``examples/run_separation.py configs/quickstart.yaml``
(:func:`polsess_hf.training.runner.main`), ``polsess-evaluate`` (:func:`polsess_hf.evaluation.main`) and
``polsess-separate`` (:func:`polsess_hf.inference.main`). Extra arguments are passed on to training as overrides,
e.g. ``python examples/demo.py --num_train_epochs 2``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    import torch

    from polsess_hf.evaluation import main as evaluate_main
    from polsess_hf.inference import main as separate_main
    from polsess_hf.training.arguments import parse_config
    from polsess_hf.training.runner import main as train_main

    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = REPO / "configs" / "quickstart.yaml"
    _, data_args, training_args = parse_config(config, argv)
    outputs = Path(training_args.output_dir).parent  # demo_outputs/

    start = time.time()
    results = train_main([str(config), *argv])
    train_seconds = time.time() - start
    best_dir = Path(results["best_model_dir"])

    print("\n=== evaluation of the best model on the test split (polsess-evaluate) ===")
    evaluation_dir = outputs / "evaluation"
    start = time.time()
    evaluate_main(["--model", str(best_dir), "--data-root", str(data_args.data_root), "--split", "test",
                   "--output-dir", str(evaluation_dir), "--plot", "--no-progress",
                   *(["--cache-dir", str(data_args.cache_dir)] if data_args.cache_dir else [])])
    evaluation_seconds = time.time() - start

    print("\n=== separating one test mixture (polsess-separate) ===")
    mixture = sorted((Path(data_args.data_root) / "test" / "mix").glob("*.wav"))[0]
    separated_dir = outputs / "separated"
    separated_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mixture, separated_dir / mixture.name)
    status = separate_main([str(mixture), "--model", str(best_dir), "--out-dir", str(separated_dir),
                            "--subtype", "PCM_16"])
    if status:
        return status

    print("\n=== polsess_hf demo ===")
    print(f"mini corpus:   {Path(data_args.data_root).resolve()}")
    print(f"training:      {train_seconds:.0f} s, best epoch {results['best_epoch']}, "
          f"validation {results['best_metric_name']} {results['best_metric']:.2f} dB")
    for key, value in results.get("best_eval", {}).items():
        print(f"               {key} {value:.2f} dB")
    print(f"best model:    {best_dir.resolve()}")
    print(f"evaluation:    {evaluation_dir.resolve()}/evaluation.md (.csv, .json, .png), {evaluation_seconds:.0f} s")
    print(f"mixture:       {(separated_dir / mixture.name).resolve()}")
    for path in sorted(separated_dir.glob(f"{mixture.stem}_spk*.wav")):
        print(f"separated:     {path.resolve()}")
    print(f"TensorBoard:   tensorboard --logdir {Path(training_args.output_dir).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
