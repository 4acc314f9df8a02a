"""Configuration of SPMamba (Li et al. 2024, ``JusperLee/SPMamba``) as the PolSESS thesis trained it."""

import math

from huggingface_hub.dataclasses import strict

from ..configuration_separation import SeparationConfig, check_choice, check_positive

__all__ = ["SPMambaConfig", "MAMBA_BACKENDS", "ACTIVATIONS"]

# "auto": mamba-ssm's CUDA kernels when the model runs on CUDA and `mamba_ssm` imports, otherwise "torch".
MAMBA_BACKENDS = ("auto", "cpu", "torch", "reference")
ACTIVATIONS = ("prelu", "relu")


@strict(accept_kwargs=True)
class SPMambaConfig(SeparationConfig):
    r"""
    Configuration of an [`SPMambaModel`]: STFT → 2-D convolution embedding → GridNet blocks (bidirectional Mamba
    over frequency, bidirectional Mamba over time, full-band self-attention over frames) → transposed convolution
    to a complex spectrum per source → iSTFT. The defaults are the thesis SB baseline
    (`spmamba_sb_reduced.yaml`, "12 GB GPU"): 1,156,368 parameters with `n_src=2` and 1,156,078 with `n_src=1`.
    The preset `"paper"` is the official repository's network (6,094,498 / 6,094,208 parameters).

    Args:
        n_fft (`int`, *optional*, defaults to 256):
            STFT size (Hann window of the same length, `center=True`); the network sees `n_fft // 2 + 1`
            frequencies.
        hop_length (`int`, *optional*, defaults to 64):
            STFT hop in samples (the thesis' `stride`).
        num_blocks (`int`, *optional*, defaults to 4):
            Number of GridNet blocks (the thesis' `n_layers`; 6 in the paper).
        emb_dim (`int`, *optional*, defaults to 16):
            Channels D of the time-frequency embedding.
        emb_ks (`int`, *optional*, defaults to 4):
            Unfold kernel: each Mamba token is `emb_ks` neighbouring bins/frames of D channels, so the Mamba
            width is `emb_dim * emb_ks` (8 in the paper; the thesis found 4 better on PolSESS).
        emb_hs (`int`, *optional*, defaults to 1):
            Unfold hop (1 everywhere in the thesis and the paper).
        attn_n_head (`int`, *optional*, defaults to 2):
            Heads of the full-band frame attention (4 in the paper). Must divide `emb_dim`.
        attn_approx_qk_dim (`int`, *optional*, defaults to 256):
            Approximate query/key size per head; the query/key channels are `E = ceil(attn_approx_qk_dim /
            n_freqs)` (512 in the paper).
        activation (`str`, *optional*, defaults to `"prelu"`):
            Activation of the attention projections: `"prelu"` (one learned slope each) or `"relu"`.
        eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the GroupNorm after the embedding and of the 4-D layer norms.
        d_state (`int`, *optional*, defaults to 16):
            Mamba state size N per channel.
        d_conv (`int`, *optional*, defaults to 4):
            Kernel of Mamba's causal depthwise convolution.
        expand (`int`, *optional*, defaults to 4):
            Mamba inner width factor: `d_inner = expand * emb_dim * emb_ks`.
        rms_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the RMSNorm in front of every Mamba mixer.
        mamba_backend (`str`, *optional*, defaults to `"auto"`):
            How the selective scan runs: `"auto"` (on CUDA mamba-ssm's kernels when `mamba_ssm` imports, else
            `"torch"`; on CPU `"cpu"` when it can be built, else `"torch"`), `"cpu"` (a small C kernel compiled on
            first use with the system C compiler, fp32, forward and backward; needs `d_inner` a multiple of 8),
            `"torch"` (pure-PyTorch chunked scan, fp32 state, CPU and GPU) or `"reference"` (the sequential scan,
            slow; the executable specification). All read the same weights.
        n_src (`int`, *optional*, defaults to 2):
            Number of output sources (2 for SB, 1 for EB/ES).
        sampling_rate (`int`, *optional*, defaults to 8000):
            Sample rate of the training data in Hz (metadata).

    Example:

    ```python
    >>> from polsess_hf.models.spmamba import SPMambaConfig, SPMambaModel
    >>> config = SPMambaConfig()  # thesis "reduced" SB baseline
    >>> config.n_freqs, config.mamba_d_model, config.attn_qk_channels
    (129, 64, 2)
    >>> paper = SPMambaConfig.from_preset("paper")  # 6 blocks, emb_ks 8, 4 heads, qk 512
    >>> model = SPMambaModel(SPMambaConfig(mamba_backend="torch"))
    ```
    """

    model_type = "spmamba"

    # Named configurations: the thesis SB baseline ("reduced") and the paper / official repository network.
    PRESETS = {
        "reduced": {},
        "paper": {"num_blocks": 6, "emb_ks": 8, "attn_n_head": 4, "attn_approx_qk_dim": 512},
    }

    n_fft: int = 256
    hop_length: int = 64
    num_blocks: int = 4
    emb_dim: int = 16
    emb_ks: int = 4
    emb_hs: int = 1
    attn_n_head: int = 2
    attn_approx_qk_dim: int = 256
    activation: str = "prelu"
    eps: float = 1e-5
    d_state: int = 16
    d_conv: int = 4
    expand: int = 4
    rms_norm_eps: float = 1e-5
    mamba_backend: str = "auto"

    @property
    def n_freqs(self) -> int:
        """Frequency bins of the STFT: `n_fft // 2 + 1`."""
        return self.n_fft // 2 + 1

    @property
    def mamba_d_model(self) -> int:
        """Width of each Mamba token: `emb_dim * emb_ks`."""
        return self.emb_dim * self.emb_ks

    @property
    def mamba_d_inner(self) -> int:
        """Inner width of each Mamba mixer: `expand * mamba_d_model`."""
        return self.expand * self.mamba_d_model

    @property
    def mamba_dt_rank(self) -> int:
        """Rank of the Δ projection (mamba_ssm's `"auto"`): `ceil(mamba_d_model / 16)`."""
        return math.ceil(self.mamba_d_model / 16)

    @property
    def attn_qk_channels(self) -> int:
        """Query/key channels per head E = `ceil(attn_approx_qk_dim / n_freqs)`."""
        return math.ceil(self.attn_approx_qk_dim / self.n_freqs)

    def validate_architecture(self):
        for key in ("n_fft", "hop_length", "num_blocks", "emb_dim", "emb_ks", "emb_hs", "attn_n_head",
                    "attn_approx_qk_dim", "d_state", "d_conv", "expand"):  # fmt: skip
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"`{key}` must be an integer, got {key}={value!r} ({type(value).__name__})")
            check_positive(key, value)
        if self.n_fft < 2 or self.n_fft % 2:
            raise ValueError(f"`n_fft` must be an even integer ≥ 2, got n_fft={self.n_fft!r}")
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"`hop_length` must be ≤ n_fft={self.n_fft} (the iSTFT cannot reconstruct gaps), got hop_length={self.hop_length!r}"
            )
        if self.emb_ks > self.n_freqs:
            raise ValueError(f"`emb_ks` must be ≤ n_freqs = n_fft // 2 + 1 = {self.n_freqs}, got emb_ks={self.emb_ks!r}")
        if self.emb_hs > self.emb_ks:
            raise ValueError(
                f"`emb_hs` must be ≤ emb_ks={self.emb_ks} (a larger hop skips bins), got emb_hs={self.emb_hs!r}"
            )
        if self.emb_dim % self.attn_n_head:
            raise ValueError(
                f"`attn_n_head` must divide emb_dim={self.emb_dim} (value channels per head = emb_dim / heads), "
                f"got attn_n_head={self.attn_n_head!r}"
            )
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("mamba_backend", self.mamba_backend, MAMBA_BACKENDS)
        for key in ("eps", "rms_norm_eps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"`{key}` must be a number > 0, got {key}={value!r}")
