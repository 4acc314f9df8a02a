"""SeparationTrainer pieces: loss, metrics, optimizer, gated scheduler, non-finite skip, config parsing."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset

from polsess_hf.losses import neg_pit_si_sdr_loss, si_sdr
from polsess_hf.models import MODEL_CLASSES
from polsess_hf.training import (
    GatedReduceLROnPlateau,
    NonFiniteLossError,
    SeparationTrainer,
    SeparationTrainingArguments,
    batch_metrics,
    parse_config,
    separation_loss,
)

from tiny_configs import TINY_CONVTASNET


def _tiny_model(seed: int = 0, n_src: int = 2):
    torch.manual_seed(seed)
    config_class, model_class = MODEL_CLASSES["convtasnet"]
    return model_class(config_class(**TINY_CONVTASNET, n_src=n_src))


def test_sb_loss_is_negative_pit_si_sdr_and_es_loss_is_tm_sisdr():
    torch.manual_seed(0)
    estimates, labels = torch.randn(3, 2, 800), torch.randn(3, 2, 800)
    assert torch.allclose(separation_loss(estimates, labels), neg_pit_si_sdr_loss(estimates, labels))
    # The permutation is searched: swapping the estimates leaves the loss unchanged.
    assert torch.allclose(separation_loss(estimates.flip(1), labels), separation_loss(estimates, labels))
    one_est, one_lab = torch.randn(3, 1, 800) + 0.5, torch.randn(3, 1, 800) + 0.5
    expected = -si_sdr(one_est[:, 0], one_lab[:, 0], eps=torch.finfo(torch.float32).eps, zero_mean=False).mean()
    assert torch.allclose(separation_loss(one_est, one_lab), expected)
    # TM-SISDR is not zero-mean: with DC offsets it differs from the zero-mean value.
    zero_mean = -si_sdr(one_est[:, 0], one_lab[:, 0]).mean()
    assert not torch.allclose(expected, zero_mean, atol=1e-3)


def test_batch_metrics_improvement_over_the_mixture():
    torch.manual_seed(1)
    sources = torch.randn(2, 2, 4000)
    mixture = sources.sum(1)
    perfect, gain = batch_metrics(sources.flip(1) * 3.0, sources, mixture)  # scale- and permutation-invariant
    assert (perfect > 60).all()
    baseline = si_sdr(mixture.unsqueeze(1).expand_as(sources), sources, eps=torch.finfo(torch.float32).eps,
                      zero_mean=False).mean(1)
    assert torch.allclose(gain, perfect - baseline)
    # Returning the mixture itself as both estimates improves by ~0 dB (only the zero-mean mismatch remains).
    same, same_gain = batch_metrics(mixture.unsqueeze(1).repeat(1, 2, 1), sources, mixture)
    assert same_gain.abs().max() < 0.05


class _Items(Dataset):
    def __init__(self, n=4, nan_at=(), length=800, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            sources = torch.randn(2, length, generator=generator)
            mixture = sources.sum(0)
            if i in nan_at:
                mixture = mixture.clone()
                mixture[10] = float("nan")
            self.items.append({"input_values": mixture, "labels": sources})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _collate(items):
    return {"input_values": torch.stack([i["input_values"] for i in items]),
            "labels": torch.stack([i["labels"] for i in items])}


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=1, num_train_epochs=1, report_to="none",
        save_strategy="no", eval_strategy="no", load_best_model_at_end=False, disable_tqdm=True, use_cpu=True,
        logging_strategy="epoch", lr_scheduler_type="constant", max_grad_norm=0.0, seed=0,
        dataloader_num_workers=0, weight_decay=1e-2,
    )
    values.update(overrides)
    return SeparationTrainingArguments(**values)


def _train(tmp_path, dataset, **overrides):
    model = _tiny_model()
    trainer = SeparationTrainer(model=model, args=_args(tmp_path, **overrides), train_dataset=dataset,
                                data_collator=_collate)
    trainer.train()
    return trainer


def test_adam_l2_is_coupled_weight_decay_on_every_parameter(tmp_path):
    trainer = SeparationTrainer(model=_tiny_model(), args=_args(tmp_path), train_dataset=_Items(), data_collator=_collate)
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is torch.optim.Adam
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] == 1e-2
    assert len(optimizer.param_groups[0]["params"]) == len(list(trainer.model.parameters()))
    trainer_w = SeparationTrainer(model=_tiny_model(), args=_args(tmp_path, optimizer_type="adamw"),
                                  train_dataset=_Items(), data_collator=_collate)
    assert isinstance(trainer_w.create_optimizer(), torch.optim.AdamW)


def test_gated_plateau_scheduler_only_steps_when_enabled():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    scheduler = GatedReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0, enabled=False)
    for value in (1.0, 0.5, 0.4):
        scheduler.step(value)
    assert optimizer.param_groups[0]["lr"] == 1.0
    scheduler.enabled = True
    scheduler.step(1.0)
    scheduler.step(0.5)  # no improvement, patience 0 -> halve
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert scheduler.state_dict()["enabled"] is True


def test_nonfinite_batch_is_skipped_without_touching_weights_or_adam_state(tmp_path):
    clean = _Items(n=3, seed=5)
    poisoned = _Items(n=3, seed=5, nan_at=(1,))
    trainer = _train(tmp_path / "a", poisoned, dataloader_drop_last=False, train_sampling_strategy="sequential")
    assert trainer.nonfinite_skipped == 1
    for parameter in trainer.model.parameters():
        assert torch.isfinite(parameter).all()
        state = trainer.optimizer.state[parameter] if parameter in trainer.optimizer.state else \
            trainer.optimizer.optimizer.state[parameter]
        assert int(state["step"]) == 2  # the NaN batch made no optimizer step
    # Same result as training on the two finite items only: the skipped batch left no trace.
    reference = _train(tmp_path / "b", torch.utils.data.Subset(clean, [0, 2]), train_sampling_strategy="sequential")
    for p, q in zip(trainer.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(p, q)
    logged = [e for e in trainer.state.log_history if "nonfinite_skipped" in e]
    assert logged and logged[-1]["nonfinite_skipped"] == 1


def test_consecutive_nonfinite_losses_abort_with_a_clear_message(tmp_path):
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite"):
        _train(tmp_path, _Items(n=4, nan_at=(0, 1, 2, 3)), max_consecutive_nonfinite=3)


def test_parse_config_yaml_cli_override_and_unknown_keys(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "model:\n  model_type: dprnn\n  model_config: {n_blocks: 2}\n"
        "data:\n  data_root: /x\n  curriculum: standard\n"
        "training:\n  learning_rate: 1.0e-3\n  num_train_epochs: 3\n  report_to: none\n"
    )
    model_args, data_args, training_args = parse_config(config, ["--learning_rate", "5e-4", "--seed", "123"])
    assert model_args.model_type == "dprnn" and model_args.model_config == {"n_blocks": 2}
    assert data_args.curriculum == "standard" and data_args.validation_variants == ["SER", "SE"]
    assert training_args.learning_rate == 5e-4 and training_args.seed == 123 and training_args.num_train_epochs == 3
    assert training_args.optimizer_type == "adam_l2" and training_args.metric_for_best_model == "si_sdr"
    assert training_args.lr_scheduler_kwargs == {"mode": "max", "factor": 0.95, "patience": 2}
    _, _, overridden = parse_config(config, ["--model_config", "{n_blocks: 4}", "--lr_factor", "0.5"])
    assert overridden.lr_scheduler_kwargs["factor"] == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rat: 1.0e-3\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_config(bad)
    with pytest.raises(ValueError, match="--no_such_key"):
        parse_config(config, ["--no_such_key", "1"])
    _, per_variant, per_args = parse_config(config, ["--per_variant_validation", "true"])
    assert per_variant.per_variant_validation and per_args.metric_for_best_model == "si_sdri"
    assert math.isclose(per_args.max_grad_norm, 5.0)
