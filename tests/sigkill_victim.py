"""A training entry point run in a subprocess that SIGKILLs itself as a given optimizer step of the process begins:
a real, deterministic kill point for the resume tests (independent of how fast the machine is)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_TEMPLATE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from polsess_hf.training.trainer import SeparationTrainer
from {module} import main

_step = SeparationTrainer.training_step
_calls = [0]

def training_step(self, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] == {kill_at_step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, *args, **kwargs)

SeparationTrainer.training_step = training_step
main(sys.argv[1:])
"""


def write_victim(path: Path, module: str, kill_at_step: int) -> Path:
    """Write a script running ``module.main(argv)`` that is killed as its ``kill_at_step``-th step begins."""
    path.write_text(_TEMPLATE.format(repo=str(REPO), module=module, kill_at_step=kill_at_step))
    return path
