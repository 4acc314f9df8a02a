#!/usr/bin/env python
"""Progressive data-scaling hyperparameter search (Optuna): stages, pruning, diverse top-k, multi-seed validation.

    python examples/run_hpo.py configs/hpo/tiny.yaml                      # the mini corpus, 2 CPU cores, minutes
    python examples/run_hpo.py configs/hpo/dprnn_progressive.yaml         # the thesis's DPRNN study (GPU)
    python examples/run_hpo.py configs/hpo/dprnn_progressive.yaml --storage postgresql://user@db/hpo  # + workers

Run the same command again to resume after a crash or kill (finished trials are kept, a killed trial is retried
from its last epoch). Run it in more processes, or on more machines with a shared ``--storage``, to add
workers. The report (CSV, Markdown summary, figures) lands in ``<output_dir>/report``; the winner's training
config in ``<output_dir>/winner.yaml``. Same as the ``polsess-hpo`` command.
"""

from polsess_hf.hpo.search import main

if __name__ == "__main__":
    main()
