"""Whole studies with real training: the tiny config end to end (stages, pruning, narrowing, selection,
multi-seed validation, report), a study SIGKILLed mid-trial and resumed by re-running the command, and two worker
processes sharing one SQLite study."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from polsess_hf.hpo.config import load_hpo_config
from polsess_hf.hpo.space import SearchSpace, distance, union_bounds
from sigkill_victim import write_victim  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUN_HPO = REPO / "examples" / "run_hpo.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY_DPRNN = {"n_filters": 8, "kernel_size": 16, "chunk_size": 25, "n_blocks": 1, "hidden_size": 8}

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """8 training rows (2 steps of 4 per epoch) and 4 validation rows."""
    from polsess_hf.data import make_mini_polsess

    return make_mini_polsess(tmp_path_factory.mktemp("hpo") / "mini_polsess", 8, 4, 0, seed=5)


def _small_study(path: Path, root: Path, output_dir: Path, *, n_trials: int, epochs: int, validation=None) -> Path:
    config = {
        "study": {"name": "small", "output_dir": str(output_dir), "seed": 1, "poll_interval": 0.2},
        "base": {
            "model": {"model_type": "dprnn", "model_config": TINY_DPRNN},
            "data": {"data_root": str(root), "cache_dir": str(path.parent / "hf_cache"), "train_segment_seconds": 0.25},
            "training": {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "use_cpu": True,
                         "precision": "no", "seed": 42},
        },
        "stages": [{
            "name": "only", "n_trials": n_trials, "num_train_epochs": epochs, "sampler": {"type": "random"},
            "space": {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
                      "max_grad_norm": {"type": "uniform", "low": 1.0, "high": 5.0}},
        }],
    }
    if validation:
        config["validation"] = validation
    path.write_text(yaml.safe_dump(config))
    return path


def _storage(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / 'study.db').resolve()}"


def test_tiny_study_end_to_end(tmp_path):
    """configs/hpo/tiny.yaml as shipped, with its folders moved into tmp_path."""
    from polsess_hf.hpo.analysis import main as analyze_main
    from polsess_hf.hpo.search import run_study, stage_candidates
    from polsess_hf.training.arguments import parse_config

    raw = yaml.safe_load((REPO / "configs/hpo/tiny.yaml").read_text())
    raw["study"]["output_dir"] = str(tmp_path / "out")
    raw["base"]["data"]["data_root"] = str(tmp_path / "mini")
    raw["base"]["data"]["cache_dir"] = str(tmp_path / "hf_cache")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_hpo_config(path)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    start = time.time()
    summary = run_study(config)
    print(f"tiny study: {time.time() - start:.1f} s")
    assert hf_logging.get_verbosity() == verbosity  # the quiet trial logging does not leak out of run_study
    storage = _storage(tmp_path / "out")
    studies = {name: optuna.load_study(study_name=f"tiny.{name}", storage=storage)
               for name in ("stage1", "stage2", "validation")}

    # Stage 1: 6 finished trials, and the aggressive successive-halving pruner really pruned.
    stage1 = studies["stage1"].get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in stage1) == 6
    pruned = [t for t in stage1 if t.state == TrialState.PRUNED]
    assert pruned, "the tiny config's pruner must prune at least one trial"
    for trial in pruned:
        stop = trial.user_attrs["pruned_at"]
        assert stop < 3 and max(trial.intermediate_values) == stop and trial.user_attrs["epochs_run"] == stop
    for trial in (t for t in stage1 if t.state == TrialState.COMPLETE):
        curve = [v for _, v in trial.user_attrs["curve"]]
        assert trial.value == pytest.approx(max(curve))  # the objective is the best epoch
        assert list(trial.intermediate_values.values()) == pytest.approx(list(np.maximum.accumulate(curve)))

    # Stage 2's space is stage 1's top half (min 2) narrowed with 10 % log-aware padding, inside stage 1's space.
    space1 = SearchSpace.from_config(raw["stages"][0]["space"])
    top = stage_candidates(studies["stage1"])
    expected = space1.narrow([t.params for t in top[:max(2, int(np.ceil(0.5 * len(top))))]], padding=0.1)
    space2 = SearchSpace.from_config(studies["stage2"].user_attrs["search_space"])
    assert space2.to_config() == expected.to_config()
    for spec in space2:
        if spec.kind != "categorical":
            assert space1[spec.name].low <= spec.low <= spec.high <= space1[spec.name].high
    for trial in studies["stage2"].get_trials():
        assert all(space2[name].contains(value) for name, value in trial.params.items())
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in studies["stage2"].get_trials()) == 4

    # Selection: distinct enough, best first; validation: every (configuration, seed) once, winner = best mean.
    selection = studies["validation"].user_attrs["selection"]
    chosen = selection["chosen"]
    assert 1 <= len(chosen) <= 2 and chosen[0]["key"] == f"stage2#{stage_candidates(studies['stage2'])[0].number}"
    specs = union_bounds([space2])
    for i, entry in enumerate(chosen[1:], start=1):
        gaps = [distance(entry["params"], earlier["params"], specs) for earlier in chosen[:i]]
        assert min(gaps) >= 0.05 and entry["min_distance"] == pytest.approx(min(gaps))
    runs = studies["validation"].get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["run_key"] for t in runs) == sorted(f"{c['key']}/seed{s}" for c in chosen for s in (42, 123))
    for trial in runs:
        assert (Path(trial.user_attrs["trial_dir"]) / "best" / "model.safetensors").is_file()
    results = summary["validation"]
    means = {c["key"]: np.mean([t.value for t in runs if t.user_attrs["candidate"] == c["key"]]) for c in chosen}
    winner = results["winner"]
    assert winner["key"] == max(means, key=means.get) and winner["mean"] == pytest.approx(means[winner["key"]])
    assert winner["std"] == pytest.approx(np.std([t.value for t in runs if t.user_attrs["candidate"] == winner["key"]], ddof=1))
    model_args, _, training_args = parse_config(summary["winner_config"])
    assert training_args.learning_rate == pytest.approx(winner["params"]["learning_rate"])
    assert model_args.model_config["chunk_size"] == winner["params"]["model.chunk_size"]

    # Report: one CSV row per stored trial, the summary's sections and numbers, four figures.
    report = tmp_path / "out" / "report"
    with (report / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(s.get_trials()) for s in studies.values())
    assert {"learning_rate", "weight_decay", "max_grad_norm", "lr_factor", "lr_patience", "model.chunk_size"} <= set(rows[0])
    assert sum(r["stage"] == "stage1" and r["state"] == "PRUNED" for r in rows) == len(pruned)
    text = (report / "summary.md").read_text()
    best1 = max(t.value for t in stage1 if t.state == TrialState.COMPLETE)
    assert f"| stage1 | 16 | 3 | 6 | {6 - len(pruned)} | {len(pruned)} | 0 | {best1:.4g} |" in text
    for heading in ("## Top-10 ranges", "## Correlation with the score", "## Parameter importance (Optuna)",
                    "## Selection (diverse top-k)", "## Multi-seed validation", f"**Winner: {winner['key']}**"):
        assert heading in text
    assert "| stage1 | learning_rate (log10) | " in text and "narrowed from stage1" in text
    for name in ("score_distribution", "top20", "lr_vs_score", "curves"):
        figure = report / "figures" / f"{name}.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000

    # The analysis CLI rewrites the same report from the storage alone.
    analyze_main([str(path), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "trials.csv").read_text() == (report / "trials.csv").read_text()


# SIGKILLs itself as the 10th optimizer step of the process begins: trial 0 takes steps 1-6 (3 epochs × 2), trial 1
# is killed at its 4th step, in epoch 2, after its epoch-1 checkpoint was written. A deterministic kill point.


def test_killed_study_resumes_by_running_the_same_command(tmp_path, small_root):
    from polsess_hf.hpo.objective import train_trial

    output = tmp_path / "out"
    config_path = _small_study(tmp_path / "small.yaml", small_root, output, n_trials=3, epochs=3)
    victim = tmp_path / "victim.py"
    write_victim(victim, "polsess_hf.hpo.search", kill_at_step=10)
    killed = subprocess.run([sys.executable, str(victim), str(config_path), "--no-report"], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    study = optuna.load_study(study_name="small.only", storage=_storage(output))
    before = study.get_trials()
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert [p.name for p in (output / "trials" / "only" / "trial-0001").glob("checkpoint-*")] == ["checkpoint-2"]

    resumed = subprocess.run([sys.executable, str(RUN_HPO), str(config_path)], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    after = study.get_trials()
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    # The finished trial was not re-run.
    assert after[0].value == before[0].value and after[0].datetime_complete == before[0].datetime_complete
    # The killed trial was retried with its parameters, from its epoch-1 checkpoint, in its own folder.
    retry = after[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == before[1].params
    assert retry.user_attrs["resumed_from"].endswith("trial-0001/checkpoint-2")
    assert [e for e, _ in retry.user_attrs["curve"]] == [1, 2, 3] and sorted(retry.intermediate_values) == [1, 2, 3]
    assert sorted(p.name for p in (output / "trials" / "only").iterdir()) == ["trial-0000", "trial-0001", "trial-0003"]
    # ... and it ends where an uninterrupted run of the same configuration ends.
    sections = yaml.safe_load((output / "trials" / "only" / "trial-0001" / "trial_config.yaml").read_text())
    sections["training"]["output_dir"] = str(tmp_path / "uninterrupted")
    reference = train_trial(sections, tmp_path / "uninterrupted")
    assert retry.value == pytest.approx(reference["best"], abs=1e-4)
    assert (output / "report" / "summary.md").is_file()


# A worker whose first training step waits until both workers have reached theirs: without it, one worker could
# finish the whole stage while the other is still importing torch (a loaded machine), and the test would prove
# nothing. Sleeping in the barrier costs no CPU; afterwards both run freely.
_BARRIER_WORKER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from polsess_hf.training.trainer import SeparationTrainer
from polsess_hf.hpo.search import main

barrier = Path({barrier!r})
_step = SeparationTrainer.training_step

def training_step(self, *args, **kwargs):
    if not (barrier / str(os.getpid())).exists():
        (barrier / str(os.getpid())).touch()
        deadline = time.time() + 300
        while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
    return _step(self, *args, **kwargs)

SeparationTrainer.training_step = training_step
main(sys.argv[1:])
"""


def test_two_workers_share_one_study(tmp_path, small_root):
    output = tmp_path / "out"
    validation = {"top_k": 2, "min_distance": 0.0, "seeds": [1, 2], "num_train_epochs": 1}
    config_path = _small_study(tmp_path / "small.yaml", small_root, output, n_trials=8, epochs=1, validation=validation)
    (tmp_path / "barrier").mkdir()
    script = tmp_path / "worker.py"
    script.write_text(_BARRIER_WORKER.format(repo=str(REPO), barrier=str(tmp_path / "barrier")))
    workers = [subprocess.Popen([sys.executable, str(script), str(config_path)], cwd=REPO, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, text in zip(workers, outputs):
        assert worker.returncode == 0, text[-3000:]
    storage = _storage(output)
    trials = optuna.load_study(study_name="small.only", storage=storage).get_trials()
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    # None lost, none run twice: exactly 8 trained, each in its own folder; failures only as untrained surplus.
    assert len(finished) == 8
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)
    folders = {t.user_attrs["trial_dir"] for t in finished}
    assert len(folders) == 8 and len(list((output / "trials" / "only").iterdir())) == 8
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 8
    assert {t.user_attrs["worker_pid"] for t in finished} == {w.pid for w in workers}, "both workers must train"
    assert len(list((tmp_path / "barrier").iterdir())) == 2
    runs = optuna.load_study(study_name="small.validation", storage=storage).get_trials()
    done = [t.user_attrs["run_key"] for t in runs if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len(set(done)) == 4
    assert all(t.user_attrs.get("surplus") for t in runs if t.state != TrialState.COMPLETE)
    with (output / "report" / "trials.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(trials) + len(runs)
