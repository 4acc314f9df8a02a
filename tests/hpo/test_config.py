"""The study YAML: the shipped configs load, and mistakes fail at load time with the file and key named."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from polsess_hf.hpo.config import load_hpo_config, make_pruner, make_sampler, parse_hpo_config
from polsess_hf.hpo.objective import trial_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {
    "study": {"name": "t", "output_dir": "out"},
    "base": {"model": {"model_type": "dprnn", "model_config": {"n_blocks": 1}}, "data": {"task": "SB"},
             "training": {"seed": 7, "learning_rate": 1e-3}},
    "stages": [
        {"name": "s1", "n_trials": 4, "train_max_samples": 20, "num_train_epochs": 3, "curriculum": "standard",
         "pruner": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
         "space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                   "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.3}}},
        {"name": "s2", "n_trials": 2, "num_train_epochs": 4, "narrow": {"top_quantile": 0.5}},
    ],
    "validation": {"top_k": 2, "seeds": [1, 2], "num_train_epochs": 5, "train_max_samples": 40},
}


def _with(path: str, value):
    raw = copy.deepcopy(MINIMAL)
    keys = path.split(".")
    node = raw
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value
    return raw


def test_shipped_configs_load():
    thesis = load_hpo_config(REPO / "configs/hpo/dprnn_progressive.yaml")
    assert [s.name for s in thesis.stages] == ["stage1", "stage2", "stage3a", "stage3b"]
    assert [s.train_max_samples for s in thesis.stages] == [2000, 4000, 8000, 8000]
    assert [(s.num_train_epochs, s.early_stopping_patience) for s in thesis.stages] == [(50, 12), (60, 15), (80, 15), (80, 15)]
    assert thesis.stages[0].space["learning_rate"].low == 1e-5 and thesis.stages[0].space["learning_rate"].log
    assert thesis.stages[3].space_from == "stage3a"
    assert isinstance(make_pruner(thesis.stages[0].pruner, 50), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner(thesis.stages[3].pruner, 80), optuna.pruners.MedianPruner)
    v = thesis.validation
    assert (v.top_k, v.seeds, v.train_max_samples, v.num_train_epochs, v.curriculum) == \
        (5, [42, 123, 456], 16000, 80, "standard_1_4_10")
    assert v.from_stages == ["stage3a", "stage3b"]
    tiny = load_hpo_config(REPO / "configs/hpo/tiny.yaml", output_dir="elsewhere")
    assert str(tiny.study.output_dir) == "elsewhere" and tiny.storage_url().endswith("elsewhere/study.db")


def test_defaults_and_trial_config_precedence(tmp_path):
    config = parse_hpo_config(MINIMAL)
    assert config.stages[1].narrow == {"from": "s1", "top_quantile": 0.5, "padding": 0.1, "min_trials": 3}
    assert config.validation.from_stages == ["s2"] and config.validation.min_distance == 0.1
    assert config.storage_url() == f"sqlite:///{(Path('out') / 'study.db').resolve()}"
    sections = trial_config(config.base, config.stages[0].training_values(),
                            {"learning_rate": 5e-3, "model.dropout": 0.2}, output_dir=tmp_path / "t0", seed=7,
                            checkpoint=True, save_best_model=False)
    assert sections["model"]["model_config"] == {"n_blocks": 1, "dropout": 0.2}
    assert sections["data"]["train_max_samples"] == 20 and sections["data"]["curriculum"] == "standard"
    assert sections["training"]["learning_rate"] == 5e-3 and sections["training"]["num_train_epochs"] == 3
    assert sections["training"]["save_strategy"] == "epoch" and sections["training"]["report_to"] == "none"
    # The trial config is a valid run_separation.py config.
    from polsess_hf.training.arguments import parse_config

    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(sections))
    model_args, data_args, training_args = parse_config(path)
    assert model_args.model_config["dropout"] == 0.2 and training_args.learning_rate == 5e-3
    assert training_args.lr_scheduler_kwargs["factor"] == 0.95 and data_args.train_max_samples == 20


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("stages.0.n_trial", 3, "stages[0]: unknown key(s) ['n_trial']"),
        ("stages.0.pruner", {"type": "hyperband", "min_resourse": 1}, "HyperbandPruner has no argument(s) ['min_resourse']"),
        ("stages.0.pruner", {"type": "asha"}, "pruner.type must be one of"),
        ("stages.0.sampler", {"type": "cmaes"}, "sampler.type must be one of"),
        ("stages.0.space", {"model.dropuot": {"type": "uniform", "low": 0, "high": 0.1}}, "dprnn config has no field 'dropuot'"),
        ("stages.0.space", {"lr": {"type": "uniform", "low": 0, "high": 0.1}}, "not a training/data key"),
        ("stages.0.space", {"num_train_epochs": {"type": "int", "low": 1, "high": 3}}, "set by the stage itself"),
        ("stages.0.curriculum", "standard_9", "unknown curriculum name"),
        ("stages.0.num_train_epochs", 0, "num_train_epochs: expected an integer ≥ 1"),
        ("stages.1.narrow", {"from": "s3"}, "narrow.from must name an earlier stage"),
        ("stages.1.narrow", {"top_quantile": 0}, "top_quantile: expected a number in"),
        ("stages.0.overrides", {"output_dir": "x"}, "set by the study itself"),
        ("stages.0.overrides", {"learning_rat": 1}, "unknown training config key(s) ['learning_rat']"),
        ("validation.seeds", [1, 1], "distinct integers"),
        ("validation.from_stages", ["s9"], "no stage named 's9'"),
        ("study.name", "a b", "study.name must be"),
        ("study.grace_period", 10, "must exceed heartbeat_interval"),
    ],
)
def test_config_errors_name_file_and_key(path, value, message):
    with pytest.raises(ValueError) as error:
        parse_hpo_config(_with(path, value), source=Path("my_study.yaml"))
    assert "my_study.yaml" in str(error.value) and message in str(error.value), str(error.value)


def test_a_stage_needs_a_space(tmp_path):
    raw = _with("stages.1.narrow", None)
    with pytest.raises(ValueError, match="give a search space"):
        parse_hpo_config(raw)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "base": "missing.yaml"}))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_hpo_config(path)


def test_samplers_and_pruners():
    assert isinstance(make_sampler({"type": "gp", "n_startup_trials": 2}, 0), optuna.samplers.GPSampler)
    tpe = make_sampler({"type": "tpe"}, 3)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    hyperband = make_pruner({"type": "hyperband", "min_resource": 2}, max_epochs=27)
    assert hyperband._max_resource == 27  # epochs are the resource
    patient = make_pruner({"type": "median", "patience": 2}, 10)
    assert isinstance(patient, optuna.pruners.PatientPruner)
    assert isinstance(make_pruner({"type": "none"}, 5), optuna.pruners.NopPruner)


def test_a_stored_space_guards_against_an_edited_config(tmp_path):
    """The space a stage ran with is stored in its study; a resumed run with a different space is refused."""
    from polsess_hf.hpo.search import stage_space
    from polsess_hf.hpo.storage import make_storage

    config = parse_hpo_config(_with("study.output_dir", str(tmp_path / "out")))
    storage = make_storage(config.storage_url())
    first = stage_space(config, storage, config.stages[0])
    assert first.to_config() == config.stages[0].space.to_config()
    assert stage_space(config, storage, config.stages[0]).to_config() == first.to_config()  # read back
    edited = parse_hpo_config(_with("stages.0.space", {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}))
    edited.study.output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="differs from the one study 't.s1' was run with"):
        stage_space(edited, storage, edited.stages[0])


def test_analyze_without_a_study_says_so(tmp_path):
    from polsess_hf.hpo.analysis import main

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(FileNotFoundError, match="no study database"):
        main([str(path), "--output-dir", str(tmp_path / "nothing")])
