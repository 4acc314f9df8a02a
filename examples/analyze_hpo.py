#!/usr/bin/env python
"""Write the report of an HPO study: trials.csv, summary.md (stages, top-10 ranges, correlations, importance,
selection, validation) and figures, from its Optuna storage.

    python examples/analyze_hpo.py configs/hpo/tiny.yaml
    python examples/analyze_hpo.py configs/hpo/dprnn_progressive.yaml --storage postgresql://user@db/hpo --out report/

Same as the ``polsess-analyze-hpo`` command; ``run_hpo.py`` writes the report at the end by itself.
"""

from polsess_hf.hpo.analysis import main

if __name__ == "__main__":
    main()
