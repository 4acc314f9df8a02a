"""`report_to: wandb` with ``WANDB_MODE=offline``: training logs its metrics to a local W&B run (no network)."""

from __future__ import annotations

import json

import pytest
import yaml

from tiny_configs import TINY_CONVTASNET

import wandb  # in the test extra: a missing wandb must fail here, not skip


@pytest.mark.slow  # W&B starts a service process: ~1 min on 2 cores
def test_offline_wandb_run_records_the_validation_metrics(tmp_path, mini_root, monkeypatch):
    from polsess_hf.training.runner import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "polsess-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"model_type": "convtasnet", "model_config": TINY_CONVTASNET},
        "data": {"data_root": str(mini_root), "cache_dir": str(tmp_path / "hf_cache"), "task": "SB",
                 "train_segment_seconds": 0.25},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "per_device_train_batch_size": 4,
                     "report_to": "wandb", "disable_tqdm": True, "use_cpu": True},
    }))
    results = main([str(config)])

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    assert wandb.run is None  # the runner closed the run (its records are complete on disk)
    # Offline runs keep their records in the binary run file (protobuf): keys as strings, values as JSON text.
    records = (runs[0] / f"run-{runs[0].name.split('-')[-1]}.wandb").read_bytes()
    for key in ("eval/si_sdr", "eval/si_sdri", "train/loss", f"best/{results['best_metric_name']}", "best/epoch"):
        assert key.encode() in records, key
    for entry in results["history"]:  # every epoch's validation value was logged
        assert json.dumps(entry["eval_si_sdr"]).encode() in records, entry
    assert json.dumps(results["best_metric"]).encode() in records
