"""Configuration of SepFormer (Subakan et al. 2021) as the PolSESS thesis trained it (SpeechBrain ``dual_path``)."""

from huggingface_hub.dataclasses import strict

from ..configuration_separation import SeparationConfig, check_positive, check_range

__all__ = ["SepFormerConfig"]


@strict(accept_kwargs=True)
class SepFormerConfig(SeparationConfig):
    r"""
    Configuration of a [`SepFormerModel`]: a learned filterbank encoder, a dual-path transformer mask network
    (intra-chunk and inter-chunk pre-LN transformer stacks) and a shared transposed-convolution decoder. The
    defaults are the thesis SB baseline (`sepformer_baseline.yaml`): 25,679,361 parameters with `n_src=2` and
    25,613,569 with `n_src=1`.

    Args:
        n_filters (`int`, *optional*, defaults to 256):
            Encoder filters N.
        kernel_size (`int`, *optional*, defaults to 16):
            Encoder/decoder filter length in samples. The hop is always `kernel_size // 2` (see `stride`).
        chunk_size (`int`, *optional*, defaults to 250):
            Chunk length K in encoder frames; chunks overlap by 50 % (see `hop_size`).
        n_blocks (`int`, *optional*, defaults to 2):
            Number of dual-path blocks (each: intra-chunk stack, then inter-chunk stack).
        intra_layers (`int`, *optional*, defaults to 8):
            Transformer layers in each intra-chunk stack.
        inter_layers (`int`, *optional*, defaults to 8):
            Transformer layers in each inter-chunk stack.
        d_model (`int`, *optional*, defaults to 256):
            Transformer width; a 1×1 convolution maps `n_filters → d_model` before the blocks and back after.
        n_heads (`int`, *optional*, defaults to 8):
            Attention heads; must divide `d_model`.
        d_ffn (`int`, *optional*, defaults to 1024):
            Hidden size of the position-wise feed-forward network.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention weights, on both residual branches and inside the feed-forward network
            (the final thesis model used 0.0455).
        use_positional_encoding (`bool`, *optional*, defaults to `True`):
            Add a sinusoidal positional encoding to the input of every intra/inter stack (positions inside a chunk
            for intra, chunk index for inter). The thesis Series 1–3 checkpoints were trained **without** it
            (preset `"thesis-legacy"`); newer runs and the paper use it.
        n_src (`int`, *optional*, defaults to 2):
            Number of output sources (2 for SB, 1 for EB/ES).
        sampling_rate (`int`, *optional*, defaults to 8000):
            Sample rate of the training data in Hz (metadata).

    Example:

    ```python
    >>> from polsess_hf.models.sepformer import SepFormerConfig, SepFormerModel
    >>> config = SepFormerConfig.from_preset("thesis-legacy")  # Series 1–3 checkpoints: no positional encoding
    >>> config.use_positional_encoding, config.stride, config.hop_size
    (False, 8, 125)
    >>> model = SepFormerModel(SepFormerConfig(n_src=1))
    ```
    """

    model_type = "sepformer"

    PRESETS = {
        "thesis": {"use_positional_encoding": True},
        "thesis-legacy": {"use_positional_encoding": False},
    }

    n_filters: int = 256
    kernel_size: int = 16
    chunk_size: int = 250
    n_blocks: int = 2
    intra_layers: int = 8
    inter_layers: int = 8
    d_model: int = 256
    n_heads: int = 8
    d_ffn: int = 1024
    dropout: float | int = 0.0
    use_positional_encoding: bool = True

    # Properties, not fields: SpeechBrain's encoder always hops kernel_size // 2 and its dual-path model always
    # hops chunk_size // 2 (the thesis' `stride`/`hop_size` arguments were accepted and ignored).
    @property
    def stride(self) -> int:
        """Encoder/decoder hop in samples (`kernel_size // 2`)."""
        return self.kernel_size // 2

    @property
    def hop_size(self) -> int:
        """Hop between chunks in frames (`chunk_size // 2`, 50 % overlap)."""
        return self.chunk_size // 2

    def validate_architecture(self):
        check_positive("n_filters", self.n_filters)
        if self.kernel_size < 2:
            raise ValueError(f"`kernel_size` must be ≥ 2 (the hop is kernel_size // 2), got kernel_size={self.kernel_size!r}")
        if self.chunk_size < 2:
            raise ValueError(
                f"`chunk_size` must be ≥ 2 (chunks overlap by chunk_size // 2 frames), got chunk_size={self.chunk_size!r}"
            )
        for key in ("n_blocks", "intra_layers", "inter_layers", "d_model", "n_heads", "d_ffn"):
            check_positive(key, getattr(self, key))
        if self.d_model % self.n_heads != 0:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0]
            raise ValueError(
                f"`d_model` must be divisible by `n_heads`, got d_model={self.d_model} and n_heads={self.n_heads}; "
                f"allowed n_heads for d_model={self.d_model}: {divisors}"
            )
        if self.use_positional_encoding and self.d_model % 2 != 0:
            raise ValueError(
                f"`d_model` must be even when use_positional_encoding=True (sin/cos pairs), got d_model={self.d_model}"
            )
        if isinstance(self.dropout, bool):
            raise ValueError(f"`dropout` must be a number in [0, 1), got dropout={self.dropout!r}")
        check_range("dropout", self.dropout, 0.0, 1.0)
        if self.dropout == 1.0:
            raise ValueError("`dropout` must be < 1.0 (1.0 zeroes every activation), got dropout=1.0")
