"""The per-epoch report/prune callback driven through Optuna's ask/tell (no training), the worker slot rule, and
the storage helpers (dead local workers' trials failed and re-queued, storage URLs)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from polsess_hf.hpo.objective import OptunaReportCallback
from polsess_hf.hpo.search import SurplusTrial, _claim_slot
from polsess_hf.hpo.storage import (
    fail_dead_local_trials,
    make_storage,
    retry_callback,
    worker_identity,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run_epochs(callback: OptunaReportCallback, values: list[float]) -> SimpleNamespace:
    """Feed ``values`` as the per-epoch validation metric the way Trainer does (state.epoch = completed epochs)."""
    control = SimpleNamespace(should_training_stop=False)
    state = SimpleNamespace(epoch=0.0, log_history=[])
    callback.on_train_begin(None, state, control)
    for epoch, value in enumerate(values, start=1):
        state.epoch = float(epoch)
        callback.on_evaluate(None, state, control, metrics={"eval_si_sdr": value})
        if control.should_training_stop:
            break
    return control


def test_successive_halving_by_epochs_prunes_a_worse_trial_at_its_first_rung():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    first = study.ask()
    reporter = OptunaReportCallback(first, "eval_si_sdr", num_epochs=3)
    assert not _run_epochs(reporter, [1.0, 0.5, 2.0]).should_training_stop
    # Reported values are the running best: the dip at epoch 2 is not a regression for the pruner.
    assert study.get_trials()[0].intermediate_values == {1: 1.0, 2: 1.0, 3: 2.0}
    assert reporter.best == 2.0 and reporter.best_epoch == 3 and reporter.pruned_at is None
    study.tell(first, reporter.best)

    second = study.ask()
    reporter = OptunaReportCallback(second, "eval_si_sdr", num_epochs=3)
    control = _run_epochs(reporter, [0.2, 5.0, 6.0])
    assert control.should_training_stop and reporter.pruned_at == 1 and reporter.curve == [(1, 0.2)]
    assert study.get_trials()[1].intermediate_values == {1: 0.2}


def test_median_pruner_by_epochs_and_the_last_epoch_is_never_pruned():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    _run_epochs(OptunaReportCallback(first, "eval_si_sdr", 2), [3.0, 4.0])
    study.tell(first, 4.0)
    second = study.ask()
    reporter = OptunaReportCallback(second, "eval_si_sdr", 2)
    assert _run_epochs(reporter, [1.0, 2.0]).should_training_stop and reporter.pruned_at == 1
    # A trial at its last epoch has used its whole budget: it completes even if below the median.
    third = study.ask()
    last = OptunaReportCallback(third, "eval_si_sdr", 1)
    assert not _run_epochs(last, [-5.0]).should_training_stop and last.pruned_at is None


def test_resumed_run_restores_its_curve_and_nan_is_no_improvement():
    reporter = OptunaReportCallback(None, "eval_si_sdr", 5)
    state = SimpleNamespace(epoch=2.0, log_history=[{"eval_si_sdr": 1.5, "epoch": 1.0}, {"loss": 3.0, "epoch": 1.0},
                                                    {"eval_si_sdr": 2.5, "epoch": 2.0}])
    control = SimpleNamespace(should_training_stop=False)
    reporter.on_train_begin(None, state, control)
    state.epoch = 3.0
    reporter.on_evaluate(None, state, control, metrics={"eval_si_sdr": float("nan")})
    assert reporter.curve[:2] == [(1, 1.5), (2, 2.5)] and reporter.best == 2.5 and reporter.best_epoch == 2


def test_claim_slot_lets_exactly_target_trials_run():
    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(3)]
    _claim_slot(study, trials[0], 2)
    _claim_slot(study, trials[1], 2)
    with pytest.raises(SurplusTrial):
        _claim_slot(study, trials[2], 2)
    assert trials[2].user_attrs["surplus"] is True
    # A failed trial frees its slot for a later one.
    study.tell(trials[0], state=TrialState.FAIL)
    study.tell(trials[2], state=TrialState.FAIL)
    fourth = study.ask()
    _claim_slot(study, fourth, 2)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_dead_local_workers_trial_is_failed_and_requeued_with_its_epochs(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'db' / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j' / 'study.log'}"
    storage = make_storage(url, heartbeat_interval=60, grace_period=120, max_retry=2)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 1.0)
    orphan = study.ask()
    x = orphan.suggest_float("x", 0, 1)
    orphan.report(0.5, step=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan.set_user_attr("worker_host", worker_identity()["worker_host"])
    orphan.set_user_attr("worker_pid", int(dead.stdout))
    alive = study.ask()  # a running trial of this (live) process is left alone
    alive.set_user_attr("worker_host", worker_identity()["worker_host"])
    alive.set_user_attr("worker_pid", worker_identity()["worker_pid"])

    assert fail_dead_local_trials(study, retry_callback(2)) == [orphan.number]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = trials[3]
    assert retry.params == {"x": x} and retry.intermediate_values == {1: 0.5}
    assert retry.system_attrs["failed_trial"] == orphan.number
    assert fail_dead_local_trials(study, retry_callback(2)) == []  # idempotent


def test_storage_urls(tmp_path):
    assert isinstance(make_storage(f"journal:{tmp_path / 'a.log'}"), optuna.storages.JournalStorage)
    rdb = make_storage(f"sqlite:///{tmp_path / 'x' / 'y.db'}", heartbeat_interval=5, grace_period=10)
    assert isinstance(rdb, optuna.storages.RDBStorage) and rdb.get_heartbeat_interval() == 5
    with pytest.raises(ValueError, match="cannot open Optuna storage 'nosuch://x'"):
        make_storage("nosuch://x")


def test_trial_seeded_sampler_gives_each_trial_number_its_own_stream():
    from polsess_hf.hpo.config import TrialSeededSampler

    def draw(order_of_workers):
        storage = optuna.storages.InMemoryStorage()
        workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                       sampler=TrialSeededSampler({"type": "tpe", "n_startup_trials": 10}, 7))
                   for _ in range(2)]
        for worker in order_of_workers:
            trial = workers[worker].ask()
            trial.suggest_float("x", 0, 1)
        return {t.number: t.params["x"] for t in workers[0].get_trials()}

    alone, shared = draw([0, 0, 0, 0]), draw([0, 1, 1, 0])
    assert alone == shared and len(set(alone.values())) == 4  # same draws, and two workers never repeat one


def test_hyperband_with_per_trial_seeded_tpe_prunes_by_epoch():
    """Synthetic learning curves through the real callback: hyperband (brackets by trial number) with TPE."""
    from polsess_hf.hpo.config import TrialSeededSampler, make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner({"type": "hyperband", "min_resource": 1,
                                                                         "reduction_factor": 3}, max_epochs=9),
                                sampler=TrialSeededSampler({"type": "tpe", "n_startup_trials": 4}, 0))
    for _ in range(20):
        trial = study.ask()
        quality = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        reporter = OptunaReportCallback(trial, "eval_si_sdr", num_epochs=9)
        # Better learning rates (closer to 1e-2) learn faster; curves rise with epochs.
        _run_epochs(reporter, [-abs(np.log10(quality) + 2) * 3 + e for e in range(1, 10)])
        if reporter.pruned_at is not None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, reporter.best)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.PRUNED) >= 5 and states.count(TrialState.COMPLETE) >= 3
    pruned_at = {max(t.intermediate_values) for t in study.get_trials() if t.state == TrialState.PRUNED}
    assert pruned_at <= {1, 3}  # hyperband rungs at epochs 1 and 3 (eta 3, max 9)


def test_fail_running_marks_every_running_trial(tmp_path):
    from polsess_hf.hpo.storage import fail_running_trials

    study = optuna.create_study(storage=make_storage(f"journal:{tmp_path / 'j.log'}"), direction="maximize")
    running = study.ask()
    running.suggest_int("n", 1, 3)
    assert fail_running_trials(study, retry_callback(1)) == [0]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]


# Two processes empty one queue of WAITING trials as fast as they can, the way workers claim retries and validation
# runs. The storage module is loaded on its own (it needs only optuna) so the processes start in about a second.
_POPPER = """
import importlib.util, json, sys, time
from pathlib import Path
import optuna

spec = importlib.util.spec_from_file_location("hpo_storage", {storage_module!r})
storage_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(storage_module)
url, out, barrier = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
study = optuna.load_study(study_name="queue", storage=storage_module.make_storage(url))
(barrier / out.name).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.005)
popped = []
while (trial_id := study._pop_waiting_trial_id()) is not None:
    popped.append(trial_id)
out.write_text(json.dumps(popped))
"""


def test_two_processes_never_claim_the_same_queued_trial_on_sqlite(tmp_path):
    """SQLite ignores Optuna's SELECT ... FOR UPDATE; without BEGIN IMMEDIATE this test saw 6-10 of 60 trials
    claimed twice (both workers would run them)."""
    import polsess_hf.hpo.storage as storage_module

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=make_storage(url))
    for i in range(60):
        study.enqueue_trial({}, user_attrs={"i": i})
    script = tmp_path / "popper.py"
    script.write_text(_POPPER.format(storage_module=storage_module.__file__))
    (tmp_path / "barrier").mkdir()
    outputs = [tmp_path / f"popped{k}.json" for k in range(2)]
    workers = [subprocess.Popen([sys.executable, str(script), url, str(out), str(tmp_path / "barrier")])
               for out in outputs]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    first, second = (set(json.loads(out.read_text())) for out in outputs)
    assert not first & second
    assert len(first | second) == 60
