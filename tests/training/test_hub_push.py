"""Train → push to a local Hub (tests/hub_server.py) → AutoModel.from_pretrained("user/repo") in a fresh process
gives identical outputs; the model card carries SI-SDR/SI-SDRi in model-index; push failures keep the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from hub_server import LocalHub
from test_run_separation import REPO, SCRIPT, _write_config


@pytest.fixture
def local_hub():
    hub = LocalHub().start()
    yield hub
    hub.stop()


def _hub_env(hub: LocalHub, home: Path) -> dict:
    return {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_local_test_token", "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "0"}


LOAD_AND_RUN = """
import sys, torch
from transformers import AutoModel
assert "polsess_hf" not in sys.modules
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "polsess_hf" not in sys.modules, "the Hub copy must not need the package"
torch.manual_seed(0)
with torch.no_grad():
    torch.save(model(torch.randn(2, 4000)).estimates, sys.argv[2])
"""


@pytest.mark.slow
def test_train_push_and_load_from_the_local_hub(tmp_path, mini_root, local_hub):
    config = _write_config(tmp_path / "c.yaml", mini_root, tmp_path / "run", num_train_epochs=1)
    env = _hub_env(local_hub, tmp_path / "hf_home")
    process = subprocess.run(
        [sys.executable, str(SCRIPT), str(config), "--push_to_hub", "true", "--hub_model_id", "user/tiny-sep"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-4000:]
    files = local_hub.repos["user/tiny-sep"]
    assert {"config.json", "model.safetensors", "README.md", "training_config.yaml"} <= set(files)
    assert any(name.startswith("modeling_") and name.endswith(".py") for name in files)
    card = files["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    metrics = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert set(metrics) == {"si-sdr", "si-sdri"}
    import json

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert metrics["si-sdri"] == pytest.approx(results["best_eval"]["eval_si_sdri"], abs=1e-3)
    assert "How to use" in card and "curriculum" in card

    # Fresh processes: the Hub copy (trust_remote_code, no polsess_hf import) and the local best checkpoint.
    env_clean = {**env, "PYTHONPATH": ""}
    hub_out, local_out = tmp_path / "hub.pt", tmp_path / "local.pt"
    for source, target in (("user/tiny-sep", hub_out), (str(tmp_path / "run" / "best"), local_out)):
        loaded = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, source, str(target)], cwd=tmp_path,
                                env=env_clean, capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr[-4000:]
    torch.testing.assert_close(torch.load(hub_out), torch.load(local_out), rtol=0, atol=0)


def _fake_trainer(repo_id: str):
    return types.SimpleNamespace(
        args=types.SimpleNamespace(hub_model_id=repo_id, hub_token="hf_local_test_token", hub_private_repo=None),
        model_type="convtasnet",
    )


def _best_folder(tmp_path: Path) -> tuple[Path, dict, dict]:
    from polsess_hf.models import MODEL_CLASSES

    from tiny_configs import TINY_CONVTASNET

    config_class, model_class = MODEL_CLASSES["convtasnet"]
    best = tmp_path / "best"
    model_class(config_class(**TINY_CONVTASNET)).save_pretrained(best)
    config = {"model": {"model_type": "convtasnet"}, "data": {"task": "SB", "validation_variants": ["SER", "SE"],
              "curriculum": "standard", "data_root": "/x/mini"}, "training": {"learning_rate": 1e-3}}
    results = {"best_epoch": 1, "best_metric": 1.0, "best_metric_name": "eval_si_sdr", "num_parameters": 10,
               "best_eval": {"eval_si_sdr": 1.0, "eval_si_sdri": 3.5}}
    return best, config, results


@pytest.mark.parametrize("failure", ["server_down", "http_500"])
def test_push_failure_is_reported_and_keeps_the_local_checkpoint(tmp_path, local_hub, monkeypatch, capsys, failure):
    from polsess_hf.training.hub import push_best_model

    best, config, results = _best_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in best.iterdir()}
    if failure == "server_down":
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    else:
        monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
        local_hub.fail_next_commits = 10
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests/conftest.py sets offline mode for the suite
    assert push_best_model(_fake_trainer("user/failing"), best, config, results) is None
    message = results["hub_error"]
    assert "push to the Hub failed for user/failing" in message and str(best.resolve()) in message
    assert "ERROR: push to the Hub failed" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in best.iterdir()}
    assert {k: v for k, v in after.items() if k != "README.md"} == before  # nothing lost; the card was added
    if failure == "http_500":
        assert local_hub.repos["user/failing"] == {}
