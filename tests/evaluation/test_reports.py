"""polsess_hf.reports / examples/summarize_runs.py: the seed log's multi-seed tables from run directories.

Synthetic run directories carry numbers we know (the thesis's series-1 best val SI-SDRs); one real tiny run
checks the format run_separation.py actually writes."""

from __future__ import annotations

import csv
import json
import runpy
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tiny_configs import TINY_CONVTASNET
from polsess_hf.reports import config_value, find_runs, load_run, main, summarize_groups, write_report

REPO = Path(__file__).resolve().parents[2]
# Series 1 of the seed log: best val SI-SDR (dB) of seeds 42, 123, 456 and their best epochs.
SERIES_1 = {
    "spmamba": ([5.68, 5.45, 5.55], [19, 29, 26]),
    "sepformer": ([5.14, 5.26, 4.89], [45, 42, 42]),
    "dprnn": ([3.01, 2.87, 3.20], [95, 62, 94]),
    "convtasnet": ([3.28, 2.70, 2.86], [25, 18, 19]),
}
SEEDS = [42, 123, 456]


def write_run(path: Path, model_type: str, seed: int, best: float, best_epoch: int, *, epochs: int = 4,
              learning_rate: float = 1e-3, finished: bool = True) -> Path:
    """A run directory in run_separation.py's format whose val SI-SDR peaks at ``best`` in ``best_epoch``."""
    path.mkdir(parents=True)
    config = {"model": {"model_type": model_type}, "data": {"task": "SB"},
              "training": {"seed": seed, "learning_rate": learning_rate, "greater_is_better": True,
                           "metric_for_best_model": "si_sdr"}}
    (path / "training_config.yaml").write_text(yaml.safe_dump(config))
    history = []
    for epoch in range(1, max(epochs, best_epoch) + 1):
        value = best - 0.5 * abs(epoch - best_epoch)
        # SI-SDRi peaks one epoch before SI-SDR does (a bump of 0.8 dB there).
        bump = 0.8 if epoch == best_epoch - 1 else 0.0
        history.append({"eval_si_sdr": value, "eval_si_sdri": value + 4.0 + bump, "epoch": float(epoch)})
    if finished:
        results = {"best_epoch": best_epoch, "best_metric_name": "eval_si_sdr", "best_metric": best,
                   "epochs_run": float(len(history)), "history": history}
        (path / "results.json").write_text(json.dumps(results))
    else:
        state = {"best_metric": best, "epoch": float(len(history)),
                 "log_history": [{**entry, "step": 10 * i} for i, entry in enumerate(history, 1)]}
        (path / "checkpoint-10").mkdir()
        (path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"best_metric": -99.0, "epoch": 1.0,
                                                                                "log_history": history[:1]}))
        (path / f"checkpoint-{10 * len(history)}").mkdir()
        (path / f"checkpoint-{10 * len(history)}" / "trainer_state.json").write_text(json.dumps(state))
    return path


@pytest.fixture
def series_1(tmp_path) -> Path:
    root = tmp_path / "runs"
    for model_type, (values, epochs) in SERIES_1.items():
        for seed, value, epoch in zip(SEEDS, values, epochs):
            write_run(root / f"{model_type}_s{seed}", model_type, seed, value, epoch, epochs=epoch + 3)
    return root


def test_series_1_table_reproduces_the_seed_log(series_1, tmp_path):
    summaries, paths = write_report([series_1], tmp_path / "report")
    assert [s.group for s in summaries] == ["spmamba", "sepformer", "dprnn", "convtasnet"]  # the seed log's ranking
    assert [s.rank for s in summaries] == [1, 2, 3, 4]
    baseline = statistics.fmean(SERIES_1["convtasnet"][0])
    for summary in summaries:
        values = SERIES_1[summary.group][0]
        assert summary.n == 3 and [r.seed for r in summary.runs] == SEEDS
        assert summary.mean == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert summary.std == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert summary.best.value == max(values) and summary.worst.value == min(values)
        assert summary.improvement == pytest.approx(statistics.fmean(values) - baseline, abs=1e-12)
        assert summary.improvement_percent == pytest.approx((statistics.fmean(values) - baseline) / baseline * 100)
    assert summaries[-1].is_baseline and summaries[-1].improvement == 0.0  # default baseline: the worst mean
    spmamba = summaries[0]
    assert spmamba.best.seed == 42 and spmamba.worst.seed == 123 and spmamba.best.best_epoch == 19

    markdown = paths["markdown"].read_text()
    # The seed log's Series 2 rows, with two differences of rounding: SPMamba's +88% there is 2.61 / 2.95 of the
    # rounded means (exact: 2.6133 / 2.9467 = 88.7%), and ConvTasNet's std, 0.29 there, is 0.2996 (sample std).
    assert "| 1 | spmamba | 3 | 5.56 dB | 0.12 dB | 5.68 dB | 5.45 dB | +2.61 dB (+89%) |" in markdown
    assert "| 2 | sepformer | 3 | 5.10 dB | 0.19 dB | 5.26 dB | 4.89 dB | +2.15 dB (+73%) |" in markdown
    assert "| 3 | dprnn | 3 | 3.03 dB | 0.17 dB | 3.20 dB | 2.87 dB | +0.08 dB (+3%) |" in markdown
    assert "| 4 | convtasnet | 3 | 2.95 dB | 0.30 dB | 3.28 dB | 2.70 dB | baseline |" in markdown
    assert "| convtasnet_s42 | 42 | 3.28 dB | 25 | 28 | yes |" in markdown

    with open(paths["csv"], newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["model_type"] for row in table] == [s.group for s in summaries]
    for row, summary in zip(table, summaries):
        assert float(row["mean"]) == summary.mean and float(row["std"]) == summary.std
        assert float(row["improvement_percent"]) == pytest.approx(summary.improvement_percent)
        assert row["best_run"] == summary.best.name and int(row["baseline"]) == summary.is_baseline
    with open(paths["runs_csv"], newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 12 and {float(r["value"]) for r in runs} == {v for vs, _ in SERIES_1.values() for v in vs}


def test_explicit_baseline_other_metric_and_grouping_keys(series_1, tmp_path):
    summaries = summarize_groups([load_run(p) for p in find_runs([series_1])], baseline="dprnn")
    dprnn = statistics.fmean(SERIES_1["dprnn"][0])
    by_group = {s.group: s for s in summaries}
    assert by_group["dprnn"].is_baseline and not by_group["convtasnet"].is_baseline
    assert by_group["convtasnet"].improvement == pytest.approx(statistics.fmean(SERIES_1["convtasnet"][0]) - dprnn)
    assert by_group["convtasnet"].improvement_percent < 0

    # --metric: the best of another history key, not its value at the best_metric epoch (62 for this run).
    record = load_run(series_1 / "dprnn_s123", metric="eval_si_sdri")
    curve = dict(record.curve)
    assert record.metric == "eval_si_sdri" and record.value == max(curve.values())
    assert record.best_epoch == 61 and record.value == pytest.approx(2.87 - 0.5 + 4.0 + 0.8)

    by_seed = summarize_groups([load_run(p) for p in find_runs([series_1])], group_by="seed")
    assert sorted(s.group for s in by_seed) == ["123", "42", "456"] and all(s.n == 4 for s in by_seed)
    assert config_value({"training": {"learning_rate": 0.5}}, "learning_rate") == 0.5
    assert config_value({"training": {"learning_rate": 0.5}}, "training.learning_rate") == 0.5
    assert config_value({"data": {"seed": 1}, "training": {"seed": 2}}, "seed") == 2  # the shortcut
    with pytest.raises(KeyError, match="group key 'lr' is in \\['data', 'training'\\]; write e.g. data.lr"):
        config_value({"data": {"lr": 1}, "training": {"lr": 2}}, "lr")


def test_unfinished_run_is_read_from_its_newest_checkpoint(tmp_path):
    run = write_run(tmp_path / "running", "dprnn", 7, 2.5, 3, epochs=5, finished=False)
    record = load_run(run)
    assert not record.finished and record.value == 2.5 and record.best_epoch == 3
    assert record.metric == "eval_si_sdr" and len(record.curve) == 5 and record.epochs_run == 5.0
    finished = write_run(tmp_path / "done", "dprnn", 8, 3.5, 2)
    summaries, paths = write_report([run, finished], tmp_path / "report", plot=False)
    assert summaries[0].mean == pytest.approx(3.0) and summaries[0].std == pytest.approx(statistics.stdev([2.5, 3.5]))
    assert "| running | 7 | 2.50 dB | 3 | 5 | no |" in paths["markdown"].read_text()
    assert "figure" not in paths


def test_single_run_groups_have_no_std(tmp_path):
    runs = [write_run(tmp_path / "a", "convtasnet", 1, 1.0, 1), write_run(tmp_path / "b", "dprnn", 1, 2.0, 1)]
    summaries, paths = write_report(runs, tmp_path / "report", plot=False)
    assert np.isnan(summaries[0].std)
    assert "| 1 | dprnn | 1 | 2.00 dB | – | 2.00 dB | 2.00 dB | +1.00 dB (+100%) |" in paths["markdown"].read_text()


def test_errors(tmp_path, series_1):
    with pytest.raises(SystemExit, match="run directory '.*nowhere' does not exist"):
        main([str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="is not a run directory .* and none of its subfolders is one"):
        main([str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="baseline group 'lstm' not found; groups: \\['spmamba', 'sepformer'"):
        main([str(series_1), "--baseline", "lstm", "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="metric 'eval_pesq' is not in its validation history; available: "
                                         "\\['eval_si_sdr', 'eval_si_sdri'\\]"):
        main([str(series_1), "--metric", "eval_pesq", "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="training config has no 'model.width'"):
        main([str(series_1), "--group-by", "model.width", "--output-dir", str(tmp_path / "out")])
    broken = write_run(tmp_path / "broken", "dprnn", 1, 1.0, 1)
    (broken / "results.json").write_text(json.dumps({"history": []}))
    with pytest.raises(SystemExit, match="broken/results.json has no 'best_metric'"):
        main([str(broken), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_real_tiny_run_and_the_example_script(tmp_path, mini_root, cache_dir, monkeypatch, capsys):
    from polsess_hf.training.runner import main as train

    config = {
        "model": {"model_type": "convtasnet", "model_config": TINY_CONVTASNET},
        "data": {"data_root": str(mini_root), "cache_dir": str(cache_dir), "task": "SB",
                 "train_segment_seconds": 0.25, "validation_variants": ["SER", "SE"]},
        "training": {"output_dir": str(tmp_path / "runs" / "tiny"), "num_train_epochs": 2,
                     "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "learning_rate": 3e-3,
                     "report_to": "none", "disable_tqdm": True, "use_cpu": True, "seed": 5},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    results = train([str(tmp_path / "tiny.yaml")])

    out = tmp_path / "report"
    monkeypatch.setattr(sys, "argv", ["summarize_runs.py", str(tmp_path / "runs"), "--output-dir", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / "summarize_runs.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert "| 1 | convtasnet | 1 |" in capsys.readouterr().out
    record = load_run(tmp_path / "runs" / "tiny")
    assert record.value == results["best_metric"] and record.seed == 5 and record.finished
    assert [epoch for epoch, _ in record.curve] == [1.0, 2.0]
    assert dict(record.curve)[results["best_epoch"]] == results["best_metric"]
    from PIL import Image

    with Image.open(out / "validation_curves.png") as image:
        assert image.size[0] > 600 and len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20
