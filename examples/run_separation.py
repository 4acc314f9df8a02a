#!/usr/bin/env python
"""Train a separator on PolSESS from one YAML config; command-line flags override it.

    accelerate launch examples/run_separation.py configs/quickstart.yaml
    accelerate launch examples/run_separation.py configs/dprnn_baseline.yaml --seed 123 --data_root /data/PolSESS
    accelerate launch examples/run_separation.py configs/quickstart.yaml --resume_from_checkpoint last
    accelerate launch --multi_gpu --num_processes 2 examples/run_separation.py configs/quickstart.yaml  # CPU DDP

Every key of the model, data and training sections can be given as ``--key value``; unknown keys are errors
(``--help`` lists them). Works with plain ``python`` too (one process).
"""

from polsess_hf.training.runner import main

if __name__ == "__main__":
    main()
