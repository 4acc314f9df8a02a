"""Convert thesis DPRNN checkpoints (``traktorex/polsess_separation`` ``models/dprnn.py``) to :class:`DPRNNModel`.

Used by :mod:`polsess_hf.conversion` (``python examples/convert_thesis_checkpoint.py CKPT OUT``), which reads the
checkpoint, sets the number of sources from the task and refuses any missing or unexpected key.

Thesis keys (SpeechBrain names below ``encoder.``, ``separator.``, ``decoder.``) → ours::

    separator.dual_mdl.<i>.intra_mdl.mdl.rnn.<w>   → masker.blocks.<i>.intra_path.rnn.<w>   (torch.nn.LSTM names)
    separator.dual_mdl.<i>.intra_linear.w.<p>      → masker.blocks.<i>.intra_path.projection.<p>
    separator.dual_mdl.<i>.intra_norm.<p>          → masker.blocks.<i>.intra_norm.<p>
    (inter_* alike), separator.{norm, conv1d, prelu, conv2d, output.0, output_gate.0, end_conv1x1}
    → masker.{input_norm, input_projection, prelu, mask_projection, output, output_gate, output_projection}
"""

import re

from ...conversion import CheckpointConversionError
from ..dual_path import convert_dual_path_state_dict
from .configuration_dprnn import DPRNNConfig

__all__ = ["THESIS_DEFAULTS", "config_from_thesis", "convert_state_dict"]

# keyword arguments of the thesis `DPRNN.__init__` and their defaults (a checkpoint config may omit any of them)
THESIS_DEFAULTS = {
    "N": 64,
    "kernel_size": 16,
    "stride": 8,
    "C": 1,
    "num_layers": 6,
    "chunk_size": 100,
    "rnn_type": "LSTM",
    "hidden_size": 128,
    "num_rnn_layers": 1,
    "dropout": 0.0,
    "bidirectional": True,
    "norm_type": "ln",
}

_PATH_KEY = re.compile(r"^(intra|inter)_(mdl\.mdl\.rnn|linear\.w)\.(.+)$")


def config_from_thesis(kwargs: dict, n_src: int) -> DPRNNConfig:
    """Build the config from the thesis ``DPRNN(**kwargs)`` arguments; ``n_src`` comes from the task (the thesis
    overrode ``C``). Refuses unknown arguments and values this architecture cannot represent, naming them."""
    unknown = sorted(set(kwargs) - set(THESIS_DEFAULTS))
    if unknown:
        raise CheckpointConversionError(f"unknown thesis DPRNN argument(s) {unknown}; known: {sorted(THESIS_DEFAULTS)}")
    args = {**THESIS_DEFAULTS, **kwargs}
    if args["stride"] != args["kernel_size"] // 2:
        # SpeechBrain's Encoder always hops kernel_size // 2; `stride` reached only the decoder, so such a network
        # decoded at another rate than it encoded (k16/s4 gave 4008 samples from 8000).
        raise CheckpointConversionError(
            f"thesis DPRNN stride={args['stride']} with kernel_size={args['kernel_size']}: the encoder hopped "
            f"kernel_size // 2 = {args['kernel_size'] // 2} but the decoder hopped {args['stride']}; only "
            "stride == kernel_size // 2 is a consistent network"
        )
    if args["norm_type"] != "ln":
        raise CheckpointConversionError(f"thesis DPRNN norm_type={args['norm_type']!r} is not supported; expected 'ln' (GroupNorm(1))")
    try:
        return DPRNNConfig(
            n_filters=args["N"],
            kernel_size=args["kernel_size"],
            chunk_size=args["chunk_size"],
            n_blocks=args["num_layers"],
            rnn_type=args["rnn_type"],
            hidden_size=args["hidden_size"],
            num_rnn_layers=args["num_rnn_layers"],
            dropout=float(args["dropout"]),
            bidirectional=bool(args["bidirectional"]),
            n_src=n_src,
        )
    except Exception as error:  # noqa: BLE001 - the config's own message names the key and value
        raise CheckpointConversionError(f"thesis DPRNN arguments {kwargs} do not make a valid DPRNNConfig: {error}") from error


def _convert_path_key(name: str) -> str | None:
    match = _PATH_KEY.match(name)
    if match is None:
        return None
    side, module, parameter = match.groups()
    return f"{side}_path.{'rnn' if module.endswith('rnn') else 'projection'}.{parameter}"


def convert_state_dict(state_dict: dict, config: DPRNNConfig) -> dict:
    """Thesis DPRNN ``model_state_dict`` → :class:`DPRNNModel` state dict (unknown keys pass through unchanged)."""
    return convert_dual_path_state_dict(state_dict, "separator.", _convert_path_key)
