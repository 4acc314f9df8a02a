#!/usr/bin/env python
"""Aggregate finished training runs into the seed log's tables (per model: mean, std, best and worst run,
improvement over a baseline in dB and %, ranking), as Markdown and CSV, plus a figure of validation curves.

    python examples/summarize_runs.py runs/convtasnet_s42 runs/convtasnet_s123 runs/dprnn_s42 runs/dprnn_s123
    python examples/summarize_runs.py runs/ --baseline convtasnet --output-dir reports/series1
    python examples/summarize_runs.py runs/ --group-by training.learning_rate --metric eval_si_sdri

Each RUN_DIR is an ``output_dir`` of ``examples/run_separation.py`` (``results.json`` + ``training_config.yaml``),
or a folder whose subfolders are such runs. See :mod:`polsess_hf.reports` for the definitions.
"""

import sys

from polsess_hf.reports import main

if __name__ == "__main__":
    sys.exit(main())
