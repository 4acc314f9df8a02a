"""Two-process DDP on CPU (gloo) through `accelerate launch --multi_gpu --num_processes 2`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_run_separation import REPO, SCRIPT, _write_config

ACCELERATE = Path(sys.executable).with_name("accelerate")


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_and_reduces_metrics(tmp_path, mini_root):
    from transformers import AutoModel

    import polsess_hf  # noqa: F401
    from polsess_hf.data import SeparationCollator, load_polsess
    from polsess_hf.training.trainer import batch_metrics

    config = _write_config(tmp_path / "ddp.yaml", mini_root, tmp_path / "ddp", num_train_epochs=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               str(SCRIPT), str(config)]
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-5000:]
    assert "processes: 2 (ddp)" in output, output[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["global_step"] == 2  # 8 rows / (2 processes x batch 2)

    # The reduced validation metric equals a single-process evaluation of the same (best) weights.
    model = AutoModel.from_pretrained(tmp_path / "ddp" / "best").eval()
    val = load_polsess(mini_root, "val", variants=["SER", "SE"], cache_dir=tmp_path / "hf_cache")
    batch = SeparationCollator("stack")([val[i] for i in range(len(val))])
    with torch.no_grad():
        score, gain = batch_metrics(model(batch["input_values"]).estimates, batch["labels"], batch["input_values"])
    assert results["best_eval"]["eval_si_sdr"] == pytest.approx(score.mean().item(), abs=1e-4)
    assert results["best_eval"]["eval_si_sdri"] == pytest.approx(gain.mean().item(), abs=1e-4)
