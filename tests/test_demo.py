"""`make demo` (examples/demo.py) end to end with a tiny model: train → evaluation table → separated WAVs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_trains_evaluates_and_separates(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tiny = "{n_filters: 16, bottleneck_channels: 16, hidden_channels: 32, n_blocks: 2, n_repeats: 1}"
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py"), "--num_train_epochs", "1",
         "--output_dir", str(tmp_path / "quickstart"), "--data_root", str(tmp_path / "mini_polsess"),
         "--mini_corpus_rows", "[8, 4, 4]", "--model_config", tiny, "--report_to", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "=== polsess_hf demo ===" in completed.stdout

    assert (tmp_path / "quickstart" / "best" / "model.safetensors").is_file()
    with open(tmp_path / "evaluation" / "evaluation.csv", newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert {"SER", "SE", "C", "AVERAGE", "SER+SE"} <= set(rows), rows.keys()
    assert int(rows["AVERAGE"]["n"]) == sum(int(r["n"]) for name, r in rows.items() if name not in ("AVERAGE", "SER+SE"))
    assert (tmp_path / "evaluation" / "evaluation.png").stat().st_size > 10_000

    mixtures = [p for p in (tmp_path / "separated").glob("*.wav") if "_spk" not in p.name]
    assert len(mixtures) == 1
    mixture, rate = soundfile.read(mixtures[0])
    for k in (1, 2):
        source, source_rate = soundfile.read(mixtures[0].with_name(f"{mixtures[0].stem}_spk{k}.wav"))
        assert source_rate == rate == 8000 and source.shape == mixture.shape
        assert 0 < abs(source).max() <= 1.0
