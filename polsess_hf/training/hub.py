"""Publishing the best checkpoint: a model card (one template per architecture) and the push to the Hub.

The card is rendered with ``huggingface_hub.ModelCard``/``EvalResult`` so that SI-SDR and SI-SDRi on PolSESS
appear in the ``model-index`` metadata (what the Hub shows as evaluation results). Templates live in
``model_cards/<model_type>.md`` at the repository root (``model_cards/default.md`` otherwise).

A push failure (server down, HTTP 500, no token) never touches the local checkpoint: it is logged with the
repository, endpoint and local folder, and returned as an error string.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import yaml

logger = logging.getLogger(__name__)

__all__ = ["render_model_card", "push_best_model", "MODEL_CARD_DIR"]

MODEL_CARD_DIR = Path(__file__).resolve().parents[2] / "model_cards"


def _template(model_type: str) -> Path:
    specific = MODEL_CARD_DIR / f"{model_type}.md"
    if specific.is_file():
        return specific
    default = MODEL_CARD_DIR / "default.md"
    if default.is_file():
        return default
    raise FileNotFoundError(f"no model card template {specific} (nor {default})")


def render_model_card(repo_id: str, config: dict[str, Any], results: dict[str, Any], model_type: str):
    """Build the ``ModelCard`` of a trained separator.

    Args:
        repo_id: ``user/name`` on the Hub.
        config: the training config sections ``{"model", "data", "training"}`` (see ``training_config.yaml``).
        results: the runner's results (``best_eval`` holds ``eval_si_sdr``/``eval_si_sdri``).
        model_type: architecture name (selects ``model_cards/<model_type>.md``).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    data, training = config["data"], config["training"]
    best = results.get("best_eval") or {}
    dataset_name = f"PolSESS ({Path(str(data.get('data_root') or 'PolSESS')).name})"
    variants = "+".join(data.get("validation_variants") or []) or "all"
    eval_results = []
    for key, metric_type, metric_name in (("eval_si_sdr", "si-sdr", "SI-SDR"), ("eval_si_sdri", "si-sdri", "SI-SDRi")):
        if key in best:
            eval_results.append(
                EvalResult(
                    task_type="audio-to-audio",
                    task_name="Speech separation",
                    dataset_type="polsess",
                    dataset_name=dataset_name,
                    dataset_split="validation",
                    dataset_config=f"{data.get('task', 'SB')}-{variants}",
                    metric_type=metric_type,
                    metric_name=f"{metric_name} (dB)",
                    metric_value=round(float(best[key]), 3),
                )
            )
    card_data = ModelCardData(
        model_name=repo_id,
        library_name="transformers",
        pipeline_tag="audio-to-audio",
        tags=["speech-separation", "polsess", "polsess_hf", model_type],
        eval_results=eval_results or None,
    )
    hyperparameters = {
        key: training.get(key)
        for key in ("optimizer_type", "learning_rate", "weight_decay", "max_grad_norm", "lr_factor", "lr_patience",
                    "num_train_epochs", "per_device_train_batch_size", "early_stopping_patience", "precision", "seed")
    }
    return ModelCard.from_template(
        card_data,
        template_path=str(_template(model_type)),
        repo_id=repo_id,
        model_type=model_type,
        task=data.get("task", "SB"),
        dataset_name=dataset_name,
        validation_variants=variants,
        curriculum=yaml.safe_dump(data.get("curriculum"), default_flow_style=True).strip(),
        train_max_samples=data.get("train_max_samples") or "all",
        hyperparameters=yaml.safe_dump(hyperparameters, sort_keys=False).strip(),
        model_config=yaml.safe_dump(config["model"], sort_keys=False).strip(),
        best_epoch=results.get("best_epoch"),
        si_sdr=f"{best.get('eval_si_sdr', float('nan')):.2f}",
        si_sdri=f"{best.get('eval_si_sdri', float('nan')):.2f}",
        num_parameters=f"{results.get('num_parameters', 0):,}",
    )


def push_best_model(trainer, best_dir: Path, config: dict[str, Any], results: dict[str, Any]) -> Optional[str]:
    """Write ``README.md`` (model card) into ``best_dir`` and upload the folder to ``hub_model_id``.

    ``best_dir`` holds ``config.json``, ``model.safetensors``, the bundled model code (``trust_remote_code``)
    and ``training_config.yaml``. Returns the commit URL, or None after a logged failure (``results`` then gets
    ``hub_error``); the local folder stays as it is either way.
    """
    from huggingface_hub import HfApi, constants

    args = trainer.args
    repo_id = args.hub_model_id
    if not repo_id:
        raise ValueError("push_to_hub is true but hub_model_id is not set (e.g. hub_model_id: user/convtasnet-polsess)")
    best_dir = Path(best_dir)
    model_type = getattr(trainer, "model_type", None) or config["model"]["model_type"]
    card = render_model_card(repo_id, config, results, model_type)
    card.save(best_dir / "README.md")
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    try:
        api = HfApi(endpoint=endpoint, token=args.hub_token)
        api.create_repo(repo_id, exist_ok=True, private=args.hub_private_repo)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(best_dir),
            commit_message=f"polsess_hf: best checkpoint (epoch {results.get('best_epoch')}, "
            f"{results.get('best_metric_name')} {results.get('best_metric', float('nan')):.2f} dB)",
        )
    except Exception as error:  # noqa: BLE001 - any failure is reported, training results stay local
        message = (
            f"push to the Hub failed for {repo_id} at {endpoint}: {type(error).__name__}: {error}. "
            f"The best checkpoint is safe in {best_dir.resolve()}; push it later with "
            f"`huggingface-cli upload {repo_id} {best_dir}`"
        )
        logger.error(message)
        print(f"ERROR: {message}", flush=True)
        results["hub_error"] = message
        return None
    url = getattr(commit, "commit_url", None) or str(commit)
    print(f"pushed the best checkpoint to {repo_id}: {url}", flush=True)
    return url
