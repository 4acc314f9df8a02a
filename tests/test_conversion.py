"""Error paths of the thesis-checkpoint converter shared by all architectures (per-architecture conversions are
tested next to each model)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polsess_hf.conversion import CheckpointConversionError, convert_thesis_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        convert_thesis_checkpoint(tmp_path / "nope.pt", tmp_path / "out")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointConversionError, match="garbage.pt.*cannot be read"):
        convert_thesis_checkpoint(path, tmp_path / "out")


def test_dict_without_expected_keys(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointConversionError, match=r"model_state_dict.*config.*\['state_dict'\]"):
        convert_thesis_checkpoint(path, tmp_path / "out")


def test_unknown_model_type(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": {}, "config": {"model": {"model_type": "mossformer2"}}}, path)
    with pytest.raises(CheckpointConversionError, match="mossformer2.*convtasnet"):
        convert_thesis_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "convert_thesis_checkpoint.py"), str(tmp_path / "x.pt"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "error:" in result.stderr and "x.pt" in result.stderr
    assert "Traceback" not in result.stderr
