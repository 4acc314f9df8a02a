"""polsess_hf.evaluation / polsess-evaluate on the mini corpus and a Libri2Mix-layout tree: the table's rows and
counts, the count-weighted AVERAGE, the pooled SER+SE row, Markdown/CSV/JSON agreement, oracle and identity
checks, batching, the figure and clear errors."""

from __future__ import annotations

import configparser
import csv
import importlib
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation_helpers import IdentitySeparator, numpy_si_sdr, save_tiny_model  # noqa: E402
from polsess_hf.evaluation import (
    AVERAGE_ROW,
    POOLED_SET,
    batch_mean,
    build_evaluation_sets,
    evaluate_separator,
    main,
)

REPO = Path(__file__).resolve().parents[2]
VARIANT_ORDER = ["SER", "SR", "ER", "R", "SE", "S", "E", "C"]
METRICS = ["si_sdr", "si_sdri", "sdr", "pesq", "pesqi", "stoi", "stoii"]


def _cli(model, root, out, cache_dir, *extra) -> list[str]:
    return ["--model", str(model), "--data-root", str(root), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--no-progress", *extra]


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _markdown_rows(path) -> dict[str, list[str]]:
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and not line.startswith("| Variant"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("*")] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, mini_root, cache_dir, tmp_path_factory):
    """Every variant + SER+SE on the whole test split, batch size 2 (3-item variants end with a short batch),
    with --plot. PESQ/STOI (~0.5 s per item) are left to ``quality_run``."""
    out = tmp_path_factory.mktemp("full_run")
    assert main(_cli(tiny_model_dir, mini_root, out, cache_dir, "--batch-size", "2", "--plot", "--no-pesq",
                     "--no-stoi")) == 0
    return out


@pytest.fixture(scope="module")
def quality_run(tiny_model_dir, mini_root, cache_dir, tmp_path_factory):
    """All seven metrics on SER and C (first 3 rows each) and the pooled set (first 3 rows)."""
    out = tmp_path_factory.mktemp("quality_run")
    assert main(_cli(tiny_model_dir, mini_root, out, cache_dir, "--batch-size", "2", "--variants", "C", "SER",
                     "--max-samples", "3")) == 0
    return out


def _check_count_weighted_average(document, variants, metrics):
    rows = {row["variant"]: row for row in document["rows"]}
    weights = np.array([rows[v]["n"] for v in variants], dtype=float)
    assert rows[AVERAGE_ROW]["n"] == weights.sum()
    for metric in metrics:
        values = np.array([rows[v][metric] for v in variants])
        assert np.isfinite(values).all() and rows[AVERAGE_ROW][f"{metric}_invalid"] == 0
        assert rows[AVERAGE_ROW][metric] == pytest.approx(np.sum(values * weights) / weights.sum(), abs=1e-9)


def test_rows_counts_and_the_count_weighted_average(full_run):
    document = json.loads((full_run / "evaluation.json").read_text())
    rows = {row["variant"]: row for row in document["rows"]}
    assert [row["variant"] for row in document["rows"]] == VARIANT_ORDER + [AVERAGE_ROW, POOLED_SET]
    # 6 test rows, 3 indoor and 3 outdoor: indoor variants see 3, outdoor variants 3, C all 6.
    assert {v: rows[v]["n"] for v in VARIANT_ORDER} == {"SER": 3, "SR": 3, "ER": 3, "R": 3, "SE": 3, "S": 3, "E": 3,
                                                        "C": 6}
    assert rows[AVERAGE_ROW]["n"] == 27 and rows[POOLED_SET]["n"] == 6
    assert document["unique_items_scored"] == 27  # the pooled set's items were scored once, in SER and SE
    assert document["task"] == "SB" and document["pesq_mode"] is None and document["sample_rate"] == 8000
    assert document["metrics"] == ["si_sdr", "si_sdri", "sdr"] and "pesq" not in rows["SER"]
    _check_count_weighted_average(document, VARIANT_ORDER, ["si_sdr", "si_sdri", "sdr"])
    for metric in ("si_sdr", "si_sdri", "sdr"):
        # The pooled row is exactly SER ∪ SE (each row unmodified), so it is their count-weighted mean.
        assert rows[POOLED_SET][metric] == pytest.approx((rows["SER"][metric] + rows["SE"][metric]) / 2, abs=1e-9)
    # An untrained network: far worse than the mixture.
    assert rows[AVERAGE_ROW]["si_sdri"] < -5 and rows[AVERAGE_ROW]["sdr"] < 0


def test_all_metrics_and_markdown_csv_json_items_agree(quality_run):
    document = json.loads((quality_run / "evaluation.json").read_text())
    table = _read_csv(quality_run / "evaluation.csv")
    markdown = _markdown_rows(quality_run / "evaluation.md")
    items = _read_csv(quality_run / "evaluation_items.csv")
    assert [row["variant"] for row in table] == [row["variant"] for row in document["rows"]] == list(markdown)
    assert list(markdown) == ["SER", "C", AVERAGE_ROW, POOLED_SET]  # thesis order whatever the order asked
    assert document["metrics"] == METRICS and document["pesq_mode"] == "nb"
    _check_count_weighted_average(document, ["SER", "C"], METRICS)
    average = document["rows"][2]
    assert average["n"] == 6 and average["si_sdri"] < -5 and average["pesqi"] < 0.2
    assert 1.0 <= average["pesq"] < 2.0 and 0.0 < average["stoi"] < 0.7
    for row, line in zip(document["rows"], table):
        assert set(line) == set(row)
        assert int(line["n"]) == row["n"] and markdown[row["variant"]][-1] == str(row["n"])
        for position, metric in enumerate(METRICS):
            assert float(line[metric]) == row[metric]
            decimals = 3 if metric.startswith("stoi") else 2
            assert markdown[row["variant"]][position] == f"{row[metric]:.{decimals}f}"
        chosen = [it for it in items if it["set"] == row["variant"]] if row["variant"] != AVERAGE_ROW else [
            it for it in items if it["set"] in ("SER", "C")]
        assert len(chosen) == row["n"]
        for metric in METRICS:
            assert np.mean([float(it[metric]) for it in chosen]) == pytest.approx(row[metric], abs=1e-9)
    # The pooled set's first 3 rows: its indoor items are SER items, scored once (same numbers).
    pooled = [it for it in items if it["set"] == POOLED_SET]
    ser = {it["id"]: it for it in items if it["set"] == "SER"}
    shared = [it for it in pooled if it["variant"] == "SER"]
    assert len(pooled) == 3 and shared and all(it["pesq"] == ser[it["id"]]["pesq"] for it in shared)


def test_thesis_aggregation_is_the_mean_of_batch_means(full_run):
    document = json.loads((full_run / "evaluation.json").read_text())
    items = _read_csv(full_run / "evaluation_items.csv")
    thesis = document["thesis_aggregation"]
    for variant in ("SER", "C"):
        values = [float(it["si_sdr"]) for it in items if it["set"] == variant]
        batches = [values[i : i + 2] for i in range(0, len(values), 2)]  # batch size 2
        assert thesis[variant]["si_sdr"] == pytest.approx(np.mean([np.mean(b) for b in batches]), abs=1e-9)
    # SER: 3 items in batches [2, 1]: the last item weighs twice as much as in the sample mean.
    ser = [float(it["si_sdr"]) for it in items if it["set"] == "SER"]
    assert thesis["SER"]["si_sdr"] == pytest.approx((ser[0] + ser[1]) / 4 + ser[2] / 2, abs=1e-9)
    assert thesis[AVERAGE_ROW]["si_sdr"] == pytest.approx(np.mean([thesis[v]["si_sdr"] for v in VARIANT_ORDER]))
    assert batch_mean([1.0, 2.0, float("nan"), 4.0, 5.0], 2) == pytest.approx((1.5 + 4.0 + 5.0) / 3)


def test_figure_is_written(full_run):
    from PIL import Image

    with Image.open(full_run / "evaluation.png") as image:
        width, height = image.size
        assert width > 800 and height > 800
        colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(colours[:: 97], axis=0)) > 200  # spectrograms, not an empty canvas


def test_identity_separator_scores_zero_improvement_everywhere(mini_root, cache_dir):
    sets, skipped = build_evaluation_sets(mini_root, task="SB", variants=["SR", "E", "C"], max_samples=2,
                                          cache_dir=cache_dir)
    assert skipped == {} and [s.name for s in sets] == ["SR", "E", "C", POOLED_SET]
    result = evaluate_separator(IdentitySeparator(2), sets, batch_size=4, sdr=False, progress=False)
    for row in result.rows:
        for metric in ("si_sdri", "pesqi", "stoii"):
            assert row[metric] == 0.0, (row["variant"], metric)
    # SI-SDR of the mixture against each speaker, from the dataset items with an independent numpy SI-SDR.
    c_set = next(s for s in sets if s.name == "C").dataset
    expected = np.mean([
        np.mean([numpy_si_sdr(c_set[i]["input_values"].numpy(), c_set[i]["labels"][k].numpy()) for k in range(2)])
        for i in range(len(c_set))
    ])
    assert result.row("C")["si_sdr"] == pytest.approx(expected, abs=1e-3)


def test_oracle_es_task_clean_variant_is_near_perfect(mini_root, cache_dir):
    # ES on C: input = mix − every other stem = speaker 1 up to 16-bit rounding of the stems, so the identity
    # separator is an oracle there.
    sets, _ = build_evaluation_sets(mini_root, task="ES", variants=["C", "SER"], pooled=False, cache_dir=cache_dir,
                                    max_samples=2)
    result = evaluate_separator(IdentitySeparator(1), sets, batch_size=2, progress=False)
    clean, full = result.row("C"), result.row("SER")
    assert clean["si_sdr"] > 40 and clean["sdr"] > 40 and clean["pesq"] > 4.4 and clean["stoi"] > 0.999
    assert clean["si_sdri"] == 0.0 and clean["n"] == 2
    assert full["si_sdr"] < 20 and full["pesq"] < clean["pesq"]


def test_batch_size_does_not_change_the_numbers(tiny_model_dir, mini_root, cache_dir):
    from polsess_hf.evaluation import load_separator

    model = load_separator(tiny_model_dir)
    sets, _ = build_evaluation_sets(mini_root, variants=["SR", "C"], pooled=False, cache_dir=cache_dir)
    one = evaluate_separator(model, sets, batch_size=1, sdr=False, pesq=False, stoi=False, progress=False)
    four = evaluate_separator(model, sets, batch_size=4, sdr=False, pesq=False, stoi=False, progress=False)
    for a, b in zip(one.items, four.items, strict=True):
        assert (a["set"], a["id"]) == (b["set"], b["id"])
        assert a["si_sdr"] == pytest.approx(b["si_sdr"], abs=1e-4)


def test_libri2mix_clean_and_noisy_items_of_different_lengths(tiny_model_dir, libri_root, tmp_path):
    from polsess_hf.data import load_libri2mix
    from polsess_hf.evaluation import load_separator
    from polsess_hf.metrics import separation_metrics

    out = tmp_path / "libri"
    assert main(_cli(tiny_model_dir, libri_root, out, tmp_path / "cache", "--batch-size", "3", "--no-pesq")) == 0
    document = json.loads((out / "evaluation.json").read_text())
    assert document["dataset"] == "librimix"
    assert [(r["variant"], r["n"]) for r in document["rows"]] == [("mix_clean", 3), ("mix_both", 3), (AVERAGE_ROW, 6)]
    assert "pesq" not in document["rows"][0] and "stoi" in document["rows"][0]
    # Each item separately at its own length (no zero padding) gives the same numbers as the batched run.
    model = load_separator(tiny_model_dir)
    dataset = load_libri2mix(libri_root, "test", mixture="mix_both")
    items = [it for it in _read_csv(out / "evaluation_items.csv") if it["set"] == "mix_both"]
    for index, item in enumerate(items):
        example = dataset[index]
        with torch.no_grad():
            estimates = model(input_values=example["input_values"][None]).estimates
        expected = separation_metrics(estimates, example["labels"][None], example["input_values"][None],
                                      sample_rate=8000, sdr=False, pesq=False, stoi=False).values
        assert item["id"] == example["id"]
        assert float(item["si_sdr"]) == pytest.approx(float(expected["si_sdr"][0]), abs=1e-4)

    identity = evaluate_separator(IdentitySeparator(2), build_evaluation_sets(libri_root)[0], sdr=False, pesq=False,
                                  stoi=False, progress=False)
    assert [row["si_sdri"] for row in identity.rows] == [0.0, 0.0, 0.0]


def test_clear_errors(tiny_model_dir, mini_root, cache_dir, libri_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="model folder 'no/such/folder/x' does not exist"):
        main(_cli("no/such/folder/x", mini_root, out, cache_dir))
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(SystemExit, match="empty_model' has no config.json"):
        main(_cli(tmp_path / "empty_model", mini_root, out, cache_dir))
    with pytest.raises(SystemExit, match="could not load model 'nobody/no-such-model' from the Hub"):
        main(_cli("nobody/no-such-model", mini_root, out, cache_dir))
    with pytest.raises(SystemExit, match="data root '.*missing_root' does not exist"):
        main(_cli(tiny_model_dir, tmp_path / "missing_root", out, cache_dir))
    (tmp_path / "not_a_corpus").mkdir()
    with pytest.raises(SystemExit, match="corpus_not_a_corpus_train_final.csv"):
        main(_cli(tiny_model_dir, tmp_path / "not_a_corpus", out, cache_dir))
    with pytest.raises(SystemExit, match=r"unknown MM-IPC variant\(s\) \['XYZ'\].*valid: \['SER'"):
        main(_cli(tiny_model_dir, mini_root, out, cache_dir, "--variants", "SER", "XYZ"))
    with pytest.raises(SystemExit, match="task ES needs a model with n_src=1, but the model has n_src=2"):
        main(_cli(tiny_model_dir, mini_root, out, cache_dir, "--task", "ES"))
    with pytest.raises(SystemExit, match="Libri2Mix has none"):
        main(_cli(tiny_model_dir, libri_root, out, cache_dir, "--variants", "SER"))
    wide = save_tiny_model(tmp_path / "wide_model", sampling_rate=16000)
    with pytest.raises(SystemExit, match="the model works at 16000 Hz but the corpus is not at that rate"):
        main(_cli(wide, mini_root, out, cache_dir))
    with pytest.raises(SystemExit, match="no Libri2Mix folder .*wav16k/min/test/mix_clean"):
        main(_cli(wide, libri_root, out, cache_dir))
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda was asked for but torch sees no CUDA device"):
            main(_cli(tiny_model_dir, mini_root, out, cache_dir, "--device", "cuda"))
    monkeypatch.setitem(sys.modules, "pesq", None)
    with pytest.raises(SystemExit, match="PESQ needs the 'pesq' package.*--no-pesq"):
        main(_cli(tiny_model_dir, mini_root, out, cache_dir))
    assert not out.exists()  # every error came before anything was written


def test_task_is_read_from_the_training_config(tmp_path, mini_root, cache_dir):
    import yaml

    from polsess_hf.evaluation import load_separator, resolve_task

    single = save_tiny_model(tmp_path / "single", n_src=1)
    model = load_separator(single)
    with pytest.raises(ValueError, match="n_src=1 and no training_config.yaml says its task: pass task ES or EB"):
        resolve_task(model, single)
    (single / "training_config.yaml").write_text(yaml.safe_dump({"data": {"task": "EB"}}))
    assert resolve_task(model, single) == "EB" and resolve_task(model, single, "ES") == "ES"


def test_console_script_and_example(tmp_path, tiny_model_dir, mini_root, cache_dir, monkeypatch, capsys):
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    scripts = dict(
        line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    module, function = scripts["polsess-evaluate"].split(":")
    assert getattr(importlib.import_module(module), function) is main

    # The example script as `python examples/evaluate_separation.py ...` runs it (in this process: fast).
    out = tmp_path / "example"
    argv = _cli(tiny_model_dir, mini_root, out, cache_dir, "--variants", "C", "--max-samples", "1", "--no-pesq",
                "--no-stoi", "--no-sdr")
    monkeypatch.setattr(sys, "argv", ["evaluate_separation.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / "evaluate_separation.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert "| C |" in capsys.readouterr().out
    assert [row["variant"] for row in _read_csv(out / "evaluation.csv")] == ["C", AVERAGE_ROW, POOLED_SET]
