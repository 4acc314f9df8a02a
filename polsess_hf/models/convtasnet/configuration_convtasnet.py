"""Configuration of Conv-TasNet (Luo & Mesgarani 2019) as the PolSESS thesis trained it (SpeechBrain lobes)."""

from huggingface_hub.dataclasses import strict

from ..configuration_separation import SeparationConfig, check_choice, check_positive

__all__ = ["ConvTasNetConfig"]

MASK_ACTIVATIONS = ("relu", "sigmoid")


@strict(accept_kwargs=True)
class ConvTasNetConfig(SeparationConfig):
    r"""
    Configuration of a [`ConvTasNetModel`]: a learned filterbank encoder, a temporal convolutional network (TCN)
    mask estimator and a shared transposed-convolution decoder. The defaults are the thesis SB baseline
    (`sb_task.yaml`, SpeechBrain `conv_tasnet.MaskNet`): 8,708,672 parameters with `n_src=2` and 8,643,136 with
    `n_src=1`.

    Args:
        n_filters (`int`, *optional*, defaults to 256):
            Encoder filters N (the paper's N); the masks are estimated in this space.
        kernel_size (`int`, *optional*, defaults to 16):
            Encoder/decoder filter length in samples (the paper's L). The hop is always `kernel_size // 2`
            (see `stride`).
        bottleneck_channels (`int`, *optional*, defaults to 256):
            Channels of the residual path between the temporal blocks (the paper's B).
        hidden_channels (`int`, *optional*, defaults to 512):
            Channels inside each temporal block (the paper's H).
        skip_channels (`int`, *optional*, defaults to 0):
            Channels of the skip-connection path (the paper's Sc). `0` is the thesis/SpeechBrain network: no skip
            path, the masks are computed from the output of the last block. `> 0` is the paper's network: every
            block also emits a skip output, the skip outputs are summed, passed through a PReLU and the mask
            convolution reads that sum (the last block then has no residual output, it would be unused).
        conv_kernel_size (`int`, *optional*, defaults to 3):
            Kernel of the depthwise convolution in each block (the paper's P). Must be odd so that "same" padding
            is symmetric.
        n_blocks (`int`, *optional*, defaults to 8):
            Blocks per repeat (the paper's X); block `x` of a repeat has dilation `2**x`.
        n_repeats (`int`, *optional*, defaults to 4):
            Number of repeats of the `n_blocks` stack (the paper's R).
        mask_activation (`str`, *optional*, defaults to `"relu"`):
            Non-linearity applied to the mask scores: `"relu"` (thesis) or `"sigmoid"` (paper).
        norm_eps (`float`, *optional*, defaults to 1e-4):
            Epsilon of the input channel-wise layer norm (cLN) and of the global layer norms (gLN) in the blocks.
            1e-4 is what every thesis run trained and was evaluated with (the trainer patched SpeechBrain's
            `conv_tasnet.EPS` from 1e-8 to 1e-4 whenever mixed precision was on).
        n_src (`int`, *optional*, defaults to 2):
            Number of output sources (2 for SB, 1 for EB/ES).
        sampling_rate (`int`, *optional*, defaults to 8000):
            Sample rate of the training data in Hz (metadata).

    Example:

    ```python
    >>> from polsess_hf.models.convtasnet import ConvTasNetConfig, ConvTasNetModel
    >>> config = ConvTasNetConfig()  # thesis SB baseline
    >>> config.stride, config.receptive_field_frames
    (8, 2041)
    >>> paper = ConvTasNetConfig.from_preset("paper-best")  # N=512, B=128, Sc=128, R=3, sigmoid masks
    >>> model = ConvTasNetModel(config)
    ```
    """

    model_type = "convtasnet"

    # Named configurations: the thesis baseline and the paper's best non-causal setting (Table 2 of Luo &
    # Mesgarani 2019: N=512, L=16, B=128, Sc=128, H=512, P=3, X=8, R=3).
    PRESETS = {
        "thesis": {},
        "paper-best": {
            "n_filters": 512,
            "bottleneck_channels": 128,
            "skip_channels": 128,
            "hidden_channels": 512,
            "conv_kernel_size": 3,
            "n_blocks": 8,
            "n_repeats": 3,
            "mask_activation": "sigmoid",
        },
    }

    n_filters: int = 256
    kernel_size: int = 16
    bottleneck_channels: int = 256
    hidden_channels: int = 512
    skip_channels: int = 0
    conv_kernel_size: int = 3
    n_blocks: int = 8
    n_repeats: int = 4
    mask_activation: str = "relu"
    norm_eps: float = 1e-4

    # A property, not a field: SpeechBrain's encoder always hops kernel_size // 2 (the thesis' `stride` argument
    # only reached the decoder, where any other value broke the output length), so it cannot be chosen.
    @property
    def stride(self) -> int:
        """Encoder/decoder hop in samples (`kernel_size // 2`)."""
        return self.kernel_size // 2

    @property
    def receptive_field_frames(self) -> int:
        """Encoder frames seen by one output frame of the TCN: `1 + n_repeats·(P − 1)·(2**n_blocks − 1)`."""
        return 1 + self.n_repeats * (self.conv_kernel_size - 1) * (2**self.n_blocks - 1)

    def validate_architecture(self):
        # Types (int vs float vs bool) are already enforced by the strict dataclass; these are the value checks.
        for key in ("n_filters", "bottleneck_channels", "hidden_channels", "n_blocks", "n_repeats"):
            check_positive(key, getattr(self, key))
        if self.kernel_size < 2:
            raise ValueError(
                f"`kernel_size` must be an integer ≥ 2 (the hop is kernel_size // 2), got kernel_size={self.kernel_size!r}"
            )
        check_positive("skip_channels", self.skip_channels, allow_zero=True)
        if self.conv_kernel_size < 1 or self.conv_kernel_size % 2 == 0:
            raise ValueError(
                "`conv_kernel_size` must be an odd integer ≥ 1 (symmetric 'same' padding), got "
                f"conv_kernel_size={self.conv_kernel_size!r}"
            )
        check_choice("mask_activation", self.mask_activation, MASK_ACTIVATIONS)
        if not self.norm_eps > 0:
            raise ValueError(f"`norm_eps` must be > 0, got norm_eps={self.norm_eps!r}")
