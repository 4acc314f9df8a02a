"""examples/run_separation.py end to end on a tiny corpus: YAML + CLI, per-variant validation, best checkpoint,
and exact resume after a SIGKILL in the middle of a run (a real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny_configs import TINY_CONVTASNET
from sigkill_victim import write_victim  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "run_separation.py"


def _write_config(path: Path, mini_root: Path, output_dir: Path, **training) -> Path:
    config = {
        "model": {"model_type": "convtasnet", "model_config": TINY_CONVTASNET},
        "data": {
            "data_root": str(mini_root),
            "cache_dir": str(path.parent / "hf_cache"),
            "task": "SB",
            "train_segment_seconds": 0.25,
            # Stage 2 starts the LR scheduler: the gate and the plateau state must survive the resume.
            "curriculum": [
                {"epoch": 1, "variants": ["C", "R"]},
                {"epoch": 2, "variants": ["C", "R", "SR", "S", "SER", "SE"], "lr_scheduler": "start"},
            ],
        },
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 3,
            "per_device_train_batch_size": 2,
            "per_device_eval_batch_size": 4,
            "learning_rate": 3e-3,
            "lr_factor": 0.5,
            "lr_patience": 0,
            "report_to": "none",
            "disable_tqdm": True,
            "save_total_limit": 5,
            "use_cpu": True,
            **training,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path, *extra: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(config), *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def test_per_variant_validation_and_results_in_process(tmp_path, mini_root):
    from polsess_hf.training.runner import main

    config = _write_config(tmp_path / "c.yaml", mini_root, tmp_path / "run")
    results = main([str(config), "--num_train_epochs", "1", "--per_variant_validation", "true",
                    "--validation_variants", "[SER, C]"])
    assert results["best_metric_name"] == "eval_si_sdri" and results["best_epoch"] == 1
    best = results["best_eval"]
    assert set(best) >= {"eval_si_sdr_SER", "eval_si_sdri_SER", "eval_si_sdr_C", "eval_si_sdri_C"}
    assert best["eval_si_sdri"] == pytest.approx((best["eval_si_sdri_SER"] + best["eval_si_sdri_C"]) / 2)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "best" / "training_config.yaml").is_file()
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["best_metric"] == pytest.approx(results["best_metric"])


# The victim runs the real runner in a subprocess and SIGKILLs itself as its 6th optimizer step begins (mid epoch 2,
# after checkpoint-4 was written): a deterministic kill point, independent of how fast the machine is.


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, mini_root):
    uninterrupted = _run(_write_config(tmp_path / "a.yaml", mini_root, tmp_path / "a"))
    killed_config = _write_config(tmp_path / "b.yaml", mini_root, tmp_path / "b")
    victim_script = tmp_path / "victim.py"
    write_victim(victim_script, "polsess_hf.training.runner", kill_at_step=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    victim = subprocess.run([sys.executable, str(victim_script), str(killed_config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stdout[-3000:]
    # 8 rows / batch 2 = 4 steps per epoch: checkpoint-4 is epoch 1; nothing after it was written.
    assert (tmp_path / "b" / "checkpoint-4" / "separation_state.json").is_file()
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (tmp_path / "b" / "results.json").exists()

    _finish(_run(killed_config, "--resume_from_checkpoint", "last"))
    _finish(uninterrupted)

    results_a = json.loads((tmp_path / "a" / "results.json").read_text())
    results_b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results_a["best_epoch"] == results_b["best_epoch"]
    assert results_b["global_step"] == results_a["global_step"] == 12
    for entry_a, entry_b in zip(results_a["history"], results_b["history"], strict=True):
        for key in ("eval_si_sdr", "eval_si_sdri"):
            assert entry_b[key] == pytest.approx(entry_a[key], abs=1e-5), (key, entry_a, entry_b)
    weights_a = load_file(tmp_path / "a" / "best" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "best" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], atol=1e-6, rtol=0)
    # The last checkpoints (optimizer, scheduler with its gate) match too.
    scheduler_a = torch.load(tmp_path / "a" / "checkpoint-12" / "scheduler.pt", weights_only=False)
    scheduler_b = torch.load(tmp_path / "b" / "checkpoint-12" / "scheduler.pt", weights_only=False)
    assert scheduler_a["enabled"] and scheduler_b["enabled"]
    assert scheduler_a["_last_lr"] == scheduler_b["_last_lr"]
    assert scheduler_a["best"] == pytest.approx(scheduler_b["best"], abs=1e-5)
