#!/usr/bin/env python
"""Per-variant evaluation tables of a trained separator (same as the ``polsess-evaluate`` console script).

    python examples/evaluate_separation.py --model demo_outputs/quickstart/best --data-root demo_outputs/mini_polsess
    python examples/evaluate_separation.py --model user/convtasnet-polsess-sb --data-root /data/PolSESS \\
        --split test --batch-size 8 --plot --output-dir results/convtasnet
    python examples/evaluate_separation.py --model runs/dprnn/best --data-root /data/Libri2Mix --no-pesq
    python examples/evaluate_separation.py --model runs/dprnn/best --data-root /data/PolSESS --max-samples 20

One pass per MM-IPC variant (SER, SR, ER, R, SE, S, E, C) plus the pooled SER+SE set (or the Clean and Noisy
Libri2Mix sets); SI-SDR, SI-SDRi, SDR, PESQ, PESQi, STOI, STOIi and item counts, with a sample-weighted AVERAGE
row; evaluation.md / .csv / .json (and evaluation.png with --plot) in --output-dir. ``--help`` lists the options;
:mod:`polsess_hf.evaluation` documents the averaging and :mod:`polsess_hf.metrics` the metrics.
"""

import sys

from polsess_hf.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
