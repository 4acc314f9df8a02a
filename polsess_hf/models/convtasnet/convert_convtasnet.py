"""Thesis ConvTasNet checkpoints → :class:`ConvTasNetModel` (used by :mod:`polsess_hf.conversion`).

The thesis wrapper holds SpeechBrain modules under ``encoder.`` (``dual_path.Encoder``), ``mask_net.``
(``conv_tasnet.MaskNet``) and ``decoder.`` (``dual_path.Decoder``). SpeechBrain stores 1×1 convolutions as
``(out, in, 1)`` and norm parameters as ``(1, 1, C)``; ours are ``(out, in)`` Linear weights and ``(C,)`` vectors.
SpeechBrain's ``Sequential`` renames the second layer called "act" in each depthwise stage, so there the gLN is
``DSconv.act_0.{gamma,beta}`` and the PReLU is ``DSconv.act.weight``.

Usage::

    python examples/convert_thesis_checkpoint.py runs/convtasnet_sb/best.pt hf/convtasnet-polsess-sb
"""

from __future__ import annotations

import re

import torch

from ...conversion import CheckpointConversionError
from .configuration_convtasnet import ConvTasNetConfig

__all__ = ["config_from_thesis", "convert_state_dict", "THESIS_DEFAULTS", "KEY_PATTERNS"]

# Thesis-code defaults of `ConvTasNet(**kwargs)` (models/conv_tasnet.py at d935a25).
THESIS_DEFAULTS = {
    "N": 256,
    "kernel_size": 16,
    "stride": 8,
    "B": 256,
    "H": 512,
    "P": 3,
    "X": 8,
    "R": 4,
    "C": 1,
    "norm_type": "gLN",
    "causal": False,
    "mask_nonlinear": "relu",
}

_RENAMED = {"N": "n_filters", "kernel_size": "kernel_size", "B": "bottleneck_channels", "H": "hidden_channels",
            "P": "conv_kernel_size", "X": "n_blocks", "R": "n_repeats"}  # fmt: skip

# Thesis key pattern → our key template (``{block}`` = r·X + x). Order does not matter: the patterns are disjoint.
_BLOCK = r"mask_net\.temporal_conv_net\.temporalblock_(\d+)_(\d+)\.layers\."
KEY_PATTERNS = {
    r"encoder\.conv1d\.weight": "encoder.conv1d.weight",
    r"decoder\.weight": "decoder.weight",
    r"mask_net\.layer_norm\.gamma": "masker.input_norm.weight",
    r"mask_net\.layer_norm\.beta": "masker.input_norm.bias",
    r"mask_net\.bottleneck_conv1x1\.conv\.weight": "masker.bottleneck.weight",
    r"mask_net\.mask_conv1x1\.conv\.weight": "masker.mask_conv.weight",
    _BLOCK + r"conv\.conv\.weight": "masker.blocks.{block}.in_conv.weight",
    _BLOCK + r"act\.weight": "masker.blocks.{block}.in_act.weight",
    _BLOCK + r"norm\.gamma": "masker.blocks.{block}.in_norm.weight",
    _BLOCK + r"norm\.beta": "masker.blocks.{block}.in_norm.bias",
    _BLOCK + r"DSconv\.conv_0\.conv\.weight": "masker.blocks.{block}.depthwise_conv.weight",
    _BLOCK + r"DSconv\.act\.weight": "masker.blocks.{block}.out_act.weight",
    _BLOCK + r"DSconv\.act_0\.gamma": "masker.blocks.{block}.out_norm.weight",
    _BLOCK + r"DSconv\.act_0\.beta": "masker.blocks.{block}.out_norm.bias",
    _BLOCK + r"DSconv\.conv_1\.conv\.weight": "masker.blocks.{block}.res_conv.weight",
}
_COMPILED = [(re.compile(pattern + r"$"), template) for pattern, template in KEY_PATTERNS.items()]


def config_from_thesis(kwargs: dict, n_src: int) -> ConvTasNetConfig:
    """Build the config from the thesis ``ConvTasNet`` keyword arguments.

    ``C`` is dropped (the thesis forced the source count from the task; ``n_src`` carries it) and ``stride`` is
    dropped when it equals ``kernel_size // 2`` (SpeechBrain's encoder ignores it). Anything the thesis network
    could not have been, or that we cannot reproduce, is refused with the key and the allowed values.
    ``norm_eps`` is 1e-4: every thesis ConvTasNet config trained with AMP, which patched SpeechBrain's EPS to 1e-4.
    """
    unknown = sorted(set(kwargs) - set(THESIS_DEFAULTS))
    if unknown:
        raise CheckpointConversionError(
            f"unknown ConvTasNet argument(s) {unknown} in the thesis checkpoint; expected only {sorted(THESIS_DEFAULTS)}"
        )
    args = {**THESIS_DEFAULTS, **kwargs}
    if args["norm_type"] != "gLN":
        raise CheckpointConversionError(
            f"thesis ConvTasNet norm_type={args['norm_type']!r} is not supported; only 'gLN' (every thesis config) converts"
        )
    if args["causal"]:
        raise CheckpointConversionError(f"thesis ConvTasNet causal={args['causal']!r} is not supported; only causal=False converts")
    if args["mask_nonlinear"] != "relu":
        raise CheckpointConversionError(
            f"thesis ConvTasNet mask_nonlinear={args['mask_nonlinear']!r} is not supported; only 'relu' converts "
            "(SpeechBrain's 'softmax' normalises over the filters, not the speakers)"
        )
    if args["stride"] != args["kernel_size"] // 2:
        raise CheckpointConversionError(
            f"thesis ConvTasNet stride={args['stride']!r} with kernel_size={args['kernel_size']!r}: the encoder always "
            f"hops kernel_size // 2 = {args['kernel_size'] // 2} but the decoder used stride, so that network "
            "reconstructed at the wrong rate; only stride == kernel_size // 2 converts"
        )
    return ConvTasNetConfig(**{ours: args[theirs] for theirs, ours in _RENAMED.items()}, n_src=n_src, norm_eps=1e-4)


def _convert_key(key: str, n_blocks: int) -> str | None:
    for pattern, template in _COMPILED:
        match = pattern.match(key)
        if match:
            if "{block}" in template:
                repeat, block = int(match.group(1)), int(match.group(2))
                return template.format(block=repeat * n_blocks + block)
            return template
    return None


def convert_state_dict(state_dict: dict, config: ConvTasNetConfig) -> dict:
    """Rename thesis keys to ours and reshape ``(out, in, 1)`` → ``(out, in)``, ``(1, 1, C)`` → ``(C,)``.

    Keys that match no pattern are passed through under their original name, so the strict load reports them
    as unexpected (with the names the user will recognise) instead of silently dropping them.
    """
    converted = {}
    for key, value in state_dict.items():
        new_key = _convert_key(key, config.n_blocks)
        if new_key is None:
            converted[key] = value
            continue
        if new_key.endswith(("_norm.weight", "_norm.bias")) and value.dim() == 3:
            value = value.reshape(-1)  # (1, 1, C) → (C,)
        elif new_key.endswith(("_conv.weight", "bottleneck.weight")) and "depthwise" not in new_key and value.dim() == 3 and value.shape[-1] == 1:
            value = value[..., 0]  # 1×1 conv (out, in, 1) → Linear (out, in)
        if new_key in converted:
            raise CheckpointConversionError(f"thesis keys map twice onto {new_key!r} (second: {key!r}); the checkpoint is inconsistent")
        converted[new_key] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return converted
