"""Convert thesis SepFormer checkpoints (``traktorex/polsess_separation`` ``models/sepformer.py``) to
:class:`SepFormerModel`, including the legacy Series 1–3 checkpoints.

Used by :mod:`polsess_hf.conversion` (``python examples/convert_thesis_checkpoint.py CKPT OUT``), which reads the
checkpoint, sets the number of sources from the task and refuses any missing or unexpected key.

Legacy checkpoints (before 2026-03): no positional encoding, and the thesis' own ``TransformerWrapper`` stored the
SpeechBrain ``TransformerEncoder`` as ``.transformer.`` where ``SBTransformerBlock`` stores it as ``.mdl.``; their
configs lack ``use_positional_encoding``, which then means ``False`` (the thesis loader's rule). Checkpoints with
positional encoding carry ``…_mdl.pos_enc.pe`` buffers; they are checked against the sinusoid formula and dropped
(ours is computed, not stored).

Thesis keys (below ``masknet.dual_mdl.<i>.{intra,inter}_mdl.mdl.``) → ours (below
``masker.blocks.<i>.{intra,inter}_path.``)::

    layers.<j>.self_att.att.in_proj_{weight,bias}  → layers.<j>.self_attn.in_proj_{weight,bias}
    layers.<j>.self_att.att.out_proj.<p>            → layers.<j>.self_attn.out_proj.<p>
    layers.<j>.pos_ffn.ffn.{0,3}.<p>                → layers.<j>.feed_forward.{fc1,fc2}.<p>
    layers.<j>.norm{1,2}.norm.<p>                   → layers.<j>.{self_attn_norm,feed_forward_norm}.<p>
    norm.norm.<p>                                   → final_norm.<p>
"""

import re

import torch

from ...conversion import CheckpointConversionError
from ..dual_path import convert_dual_path_state_dict
from .configuration_sepformer import SepFormerConfig
from .modeling_sepformer import sinusoidal_positional_encoding

__all__ = ["THESIS_DEFAULTS", "config_from_thesis", "convert_state_dict"]

# keyword arguments of the thesis `SepFormer.__init__` and their defaults (use_positional_encoding: see below)
THESIS_DEFAULTS = {
    "N": 256,
    "kernel_size": 16,
    "stride": 8,
    "C": 2,
    "causal": False,
    "num_blocks": 2,
    "num_layers": 8,
    "d_model": 256,
    "nhead": 8,
    "d_ffn": 1024,
    "dropout": 0.0,
    "chunk_size": 250,
    "hop_size": 125,
    "use_positional_encoding": True,
}
# Accepted and ignored by the thesis network (documented dead arguments): the hop was always chunk_size // 2 and
# nothing read `causal`.
DEAD_ARGUMENTS = ("hop_size", "causal")

_LAYER_KEYS = {
    "self_att.att.in_proj_weight": "self_attn.in_proj_weight",
    "self_att.att.in_proj_bias": "self_attn.in_proj_bias",
    "self_att.att.out_proj.weight": "self_attn.out_proj.weight",
    "self_att.att.out_proj.bias": "self_attn.out_proj.bias",
    "pos_ffn.ffn.0.weight": "feed_forward.fc1.weight",
    "pos_ffn.ffn.0.bias": "feed_forward.fc1.bias",
    "pos_ffn.ffn.3.weight": "feed_forward.fc2.weight",
    "pos_ffn.ffn.3.bias": "feed_forward.fc2.bias",
    "norm1.norm.weight": "self_attn_norm.weight",
    "norm1.norm.bias": "self_attn_norm.bias",
    "norm2.norm.weight": "feed_forward_norm.weight",
    "norm2.norm.bias": "feed_forward_norm.bias",
}
_PATH_KEY = re.compile(r"^(intra|inter)_mdl\.mdl\.(?:layers\.(\d+)\.)?(.+)$")
_POSITIONAL_KEY = re.compile(r"^masknet\.dual_mdl\.\d+\.(intra|inter)_mdl\.pos_enc\.pe$")


def config_from_thesis(kwargs: dict, n_src: int) -> SepFormerConfig:
    """Build the config from the thesis ``SepFormer(**kwargs)`` arguments; ``n_src`` comes from the task.

    A config without ``use_positional_encoding`` is a legacy (Series 1–3) checkpoint: ``False``.
    """
    unknown = sorted(set(kwargs) - set(THESIS_DEFAULTS))
    if unknown:
        raise CheckpointConversionError(f"unknown thesis SepFormer argument(s) {unknown}; known: {sorted(THESIS_DEFAULTS)}")
    args = {**THESIS_DEFAULTS, "use_positional_encoding": False, **kwargs}
    if args["stride"] != args["kernel_size"] // 2:
        raise CheckpointConversionError(
            f"thesis SepFormer stride={args['stride']} with kernel_size={args['kernel_size']}: only stride == "
            f"kernel_size // 2 = {args['kernel_size'] // 2} is a consistent network (the thesis asserted it too)"
        )
    try:
        return SepFormerConfig(
            n_filters=args["N"],
            kernel_size=args["kernel_size"],
            chunk_size=args["chunk_size"],
            n_blocks=args["num_blocks"],
            intra_layers=args["num_layers"],
            inter_layers=args["num_layers"],
            d_model=args["d_model"],
            n_heads=args["nhead"],
            d_ffn=args["d_ffn"],
            dropout=float(args["dropout"]),
            use_positional_encoding=bool(args["use_positional_encoding"]),
            n_src=n_src,
        )
    except Exception as error:  # noqa: BLE001 - the config's own message names the key and value
        raise CheckpointConversionError(f"thesis SepFormer arguments {kwargs} do not make a valid SepFormerConfig: {error}") from error


def _convert_path_key(name: str) -> str | None:
    match = _PATH_KEY.match(name)
    if match is None:
        return None
    side, layer, rest = match.groups()
    if layer is None:
        return f"{side}_path.final_norm.{rest[len('norm.norm.'):]}" if rest.startswith("norm.norm.") else None
    target = _LAYER_KEYS.get(rest)
    return None if target is None else f"{side}_path.layers.{layer}.{target}"


def convert_state_dict(state_dict: dict, config: SepFormerConfig) -> dict:
    """Thesis SepFormer ``model_state_dict`` (new or legacy) → :class:`SepFormerModel` state dict.

    Unknown keys pass through unchanged (the strict load then reports them). Raises ``CheckpointConversionError`` when the
    checkpoint's positional-encoding buffers disagree with the config or with the sinusoid formula.
    """
    # legacy wrapper name (see module docstring)
    state_dict = {key.replace(".transformer.", ".mdl."): value for key, value in state_dict.items()}
    positional = {key: value for key, value in state_dict.items() if _POSITIONAL_KEY.match(key)}
    if positional and not config.use_positional_encoding:
        raise CheckpointConversionError(
            f"the checkpoint has positional-encoding buffers ({sorted(positional)[0]}, …) but its config says "
            "use_positional_encoding=False; the weights were trained with positional encoding"
        )
    for key, table in positional.items():
        table = table.reshape(-1, table.shape[-1]).float()
        expected = sinusoidal_positional_encoding(table.shape[0], table.shape[1])
        if table.shape[1] != config.d_model or not torch.allclose(table, expected, atol=1e-5):
            raise CheckpointConversionError(
                f"{key} of shape {tuple(table.shape)} is not the sinusoidal table for d_model={config.d_model} "
                "that SepFormerModel computes"
            )
    state_dict = {key: value for key, value in state_dict.items() if key not in positional}
    return convert_dual_path_state_dict(state_dict, "masknet.", _convert_path_key)
