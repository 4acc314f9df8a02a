"""Where a study lives, and how trials of dead workers are found and retried.

* **Default**: an SQLite file ``<output_dir>/study.db`` (Optuna ``RDBStorage``). Re-running the same command
  resumes: finished trials stay finished, and a trial whose process was killed is marked failed and retried
  (a WAITING copy with the same hyperparameters, which continues from the killed run's last epoch checkpoint).
  Several worker processes on one machine may share it: its transactions begin immediate, so two workers never
  claim the same queued trial (see :func:`_sqlite_immediate_transactions`).
* **Any Optuna RDB URL** (``postgresql://user@host/db``, ``mysql+pymysql://...``): many workers on many
  machines. **``journal:<path>``**: Optuna's ``JournalStorage`` on a file (many processes on one machine or a
  shared file system with working locks; no database server).

A killed worker is detected two ways:

1. **Same machine** (every storage): each running trial records its worker's host name and process id; a
   worker that starts or polls fails the RUNNING trials of processes on its host that no longer exist, at
   once. This is what makes "kill, then run the same command again" resume immediately.
2. **Other machines** (RDB storages): Optuna's heartbeat. Each running trial refreshes a heartbeat every
   ``heartbeat_interval`` seconds; a trial silent for ``grace_period`` seconds is failed by the next worker
   that looks. Optuna's ``JournalStorage`` has no heartbeat: a worker killed on *another* machine leaves its
   trial RUNNING until someone runs ``polsess-hpo CONFIG --fail-running`` (with no other worker alive).

Either way the failed trial is retried up to ``max_retry`` times (Optuna's
``RetryHeartbeatStaleTrialCallback``), keeping its intermediate values.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

logger = logging.getLogger(__name__)

__all__ = ["make_storage", "retry_callback", "fail_dead_local_trials", "fail_running_trials", "worker_identity",
           "WORKER_HOST_ATTR", "WORKER_PID_ATTR"]

WORKER_HOST_ATTR = "worker_host"
WORKER_PID_ATTR = "worker_pid"
_SCHEMA_ATTEMPTS = 5

# Renamed in Optuna 4.9; the old name stays importable until 6.0.
_Retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def retry_callback(max_retry: int) -> Callable:
    """Re-queue a failed (killed) trial with the same parameters and its reported epochs, at most ``max_retry``
    times."""
    with warnings.catch_warnings():  # experimental in Optuna since 2.8, and what its docs recommend
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _Retry(max_retry=max_retry, inherit_intermediate_values=True)


def make_storage(url: str, *, heartbeat_interval: int = 60, grace_period: int = 180,
                 max_retry: int = 3) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: ``journal:<file>`` → ``JournalStorage``; anything else → ``RDBStorage``
    with heartbeat (SQLite files get their folder created and a 60 s lock timeout for concurrent workers)."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not str(path):
            raise ValueError(f"storage {url!r}: give a file after 'journal:', e.g. journal:outputs/hpo/study.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = None
    if url.startswith("sqlite:///"):
        database = url[len("sqlite:///"):]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Two workers writing at once wait for the lock instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 60}}
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeat is "experimental" since Optuna 2.9; it detects dead hosts
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, heartbeat_stale_trial_callback=retry_callback(max_retry),
                )
            if url.startswith("sqlite"):
                _sqlite_immediate_transactions(storage.engine)
            return storage
        except ImportError as error:  # a database driver (psycopg2, pymysql) that is not installed
            raise ImportError(f"storage {url!r} needs a database driver that is not installed: {error}") from error
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as error:
            # Workers started together on a fresh database race to create its tables (one wins, the other hits
            # a UNIQUE constraint or a lock): wait a moment and open the tables the winner made.
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise ValueError(f"cannot open Optuna storage {url!r}: {error}") from error
            time.sleep(0.5 + random.random())
        except Exception as error:  # sqlalchemy.exc.ArgumentError etc.: say which URL
            raise ValueError(f"cannot open Optuna storage {url!r}: {error}. Use sqlite:///PATH, an Optuna RDB URL "
                             "(postgresql://...), or journal:PATH") from error
    raise AssertionError("unreachable")


def _sqlite_immediate_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Why: Optuna claims a queued (WAITING) trial by reading its state and setting it RUNNING in one transaction
    with ``SELECT ... FOR UPDATE``, which SQLite ignores; with SQLite's default deferred transactions two workers
    can both read WAITING and both run the trial (seen in this package's two-worker test). Taking the lock at
    BEGIN serialises those read-then-write steps, as the row lock does on PostgreSQL/MySQL. This is SQLAlchemy's
    documented pysqlite recipe (pysqlite's own BEGIN handling off, ours emitted on "begin").
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the schema predate the listeners


def worker_identity() -> dict[str, object]:
    """This process's host and id (stored on every trial it runs)."""
    return {WORKER_HOST_ATTR: socket.gethostname(), WORKER_PID_ATTR: os.getpid()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial, callback: Optional[Callable]) -> bool:
    try:
        study.tell(trial.number, state=TrialState.FAIL)
    except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # another worker finished or failed it first
    if callback is not None:
        callback(study, study.get_trials(deepcopy=False)[trial.number])
    return True


def fail_dead_local_trials(study: optuna.Study, callback: Optional[Callable]) -> list[int]:
    """Fail (and retry via ``callback``) RUNNING trials whose worker process on this host is gone; returns their
    numbers. Also runs Optuna's heartbeat check (other hosts, RDB storages)."""
    identity = worker_identity()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = trial.user_attrs.get(WORKER_HOST_ATTR), trial.user_attrs.get(WORKER_PID_ATTR)
        if host != identity[WORKER_HOST_ATTR] or pid is None or pid == identity[WORKER_PID_ATTR]:
            continue
        if not _process_alive(int(pid)) and _fail(study, trial, callback):
            logger.warning("%s: trial %d was running in process %d, which is gone: marked failed and re-queued",
                           study.study_name, trial.number, pid)
            failed.append(trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def fail_running_trials(study: optuna.Study, callback: Optional[Callable]) -> list[int]:
    """Fail (and retry) every RUNNING trial: the manual recovery when no worker is alive (``--fail-running``)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if _fail(study, t, callback)]
