"""Thesis SPMamba checkpoints → :class:`SPMambaModel` (used by :mod:`polsess_hf.conversion`).

The thesis network (``models/spmamba.py``) already uses the names our model keeps: ``conv.{0,1}``,
``blocks.i.{intra,inter}_{norm,mamba,linear}``, ``blocks.i.attn_conv_{Q,K,V}_h.{0,1,2}``,
``blocks.i.attn_concat_proj.{0,1,2}``, ``deconv``, and inside every Mamba block mamba_ssm's own
``{forward,backward}_blocks.0.{norm.weight, mixer.{in_proj.weight, conv1d.weight, conv1d.bias, x_proj.weight,
dt_proj.weight, dt_proj.bias, A_log, D, out_proj.weight}}``. The state dict therefore converts unchanged (a
``torch.compile`` ``_orig_mod.`` prefix, should one be present, is stripped); what needs care is the configuration.

Thesis keyword arguments (``config["model"]["spmamba"]``) and what becomes of them:

==================== ===================== ================================================================
thesis               ours                  note
==================== ===================== ================================================================
n_srcs               n_src                 ignored: the task decides (ES/EB → 1, SB → 2), as the thesis did
n_fft, emb_dim, …    same name
stride               hop_length
n_layers             num_blocks
activation           activation            the thesis built ReLU for anything but "prelu"; so do we
input_dim            —                     dead (never read)
lstm_hidden_units    —                     dead (never wired into the Mamba blocks; parameters identical)
window               —                     must be "hann" (the forward pass always used a Hann window)
sample_rate          —                     removed from the thesis on 2026-04-19; old checkpoints carry it
==================== ===================== ================================================================

Usage::

    python examples/convert_thesis_checkpoint.py runs/spmamba_sb/best.pt hf/spmamba-polsess-sb
"""

from __future__ import annotations

import torch
from huggingface_hub.errors import StrictDataclassError

from ...conversion import CheckpointConversionError
from .configuration_spmamba import SPMambaConfig

__all__ = ["config_from_thesis", "convert_state_dict", "THESIS_DEFAULTS", "DEAD_ARGUMENTS"]

# Defaults of the thesis' `SPMambaParams` (config.py), which is what a checkpoint's config falls back to.
THESIS_DEFAULTS = {
    "input_dim": 64,
    "n_srcs": 1,
    "n_fft": 256,
    "stride": 64,
    "window": "hann",
    "n_layers": 6,
    "lstm_hidden_units": 256,
    "attn_n_head": 4,
    "attn_approx_qk_dim": 512,
    "emb_dim": 16,
    "emb_ks": 8,
    "emb_hs": 1,
    "activation": "prelu",
    "eps": 1e-5,
}
# Accepted and dropped: never read by the thesis network (or, for sample_rate, removed from it).
DEAD_ARGUMENTS = ("input_dim", "lstm_hidden_units", "sample_rate")

_RENAMED = {
    "n_fft": "n_fft",
    "stride": "hop_length",
    "n_layers": "num_blocks",
    "attn_n_head": "attn_n_head",
    "attn_approx_qk_dim": "attn_approx_qk_dim",
    "emb_dim": "emb_dim",
    "emb_ks": "emb_ks",
    "emb_hs": "emb_hs",
    "eps": "eps",
}


def config_from_thesis(kwargs: dict, n_src: int, **overrides) -> SPMambaConfig:
    """Build the config from the thesis ``SPMamba`` keyword arguments (see the module docstring).

    ``overrides`` (e.g. ``mamba_backend="torch"``) are passed to the config as they are.
    """
    known = set(THESIS_DEFAULTS) | set(DEAD_ARGUMENTS)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise CheckpointConversionError(
            f"unknown SPMamba argument(s) {unknown} in the thesis checkpoint; expected only {sorted(known)}"
        )
    args = {**THESIS_DEFAULTS, **kwargs}
    if str(args["window"]).lower() != "hann":
        raise CheckpointConversionError(
            f"thesis SPMamba window={args['window']!r} is not supported: the thesis forward pass always used a Hann "
            "window whatever this said, so only window='hann' describes the trained network"
        )
    activation = "prelu" if args["activation"] == "prelu" else "relu"
    values = {ours: args[theirs] for theirs, ours in _RENAMED.items()}
    try:
        return SPMambaConfig(**values, activation=activation, n_src=n_src, **overrides)
    except (TypeError, ValueError, StrictDataclassError) as error:
        raise CheckpointConversionError(f"thesis SPMamba arguments {values} do not form a valid network: {error}") from error


def convert_state_dict(state_dict: dict, config: SPMambaConfig) -> dict:
    """The thesis keys are already ours; strip a ``_orig_mod.`` prefix and detach. Keys that match nothing are kept
    under their own name, so the strict load reports them (with names the user will recognise)."""
    converted = {}
    for key, value in state_dict.items():
        new_key = key.removeprefix("_orig_mod.")
        if new_key in converted:
            raise CheckpointConversionError(
                f"thesis keys map twice onto {new_key!r} (second: {key!r}); the checkpoint is inconsistent"
            )
        converted[new_key] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return converted
