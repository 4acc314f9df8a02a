"""Configuration of DPRNN (Luo et al. 2020) as the PolSESS thesis trained it (SpeechBrain ``dual_path`` parts)."""

from huggingface_hub.dataclasses import strict

from ..configuration_separation import SeparationConfig, check_choice, check_positive, check_range

__all__ = ["DPRNNConfig"]

RNN_TYPES = ("LSTM", "GRU")


@strict(accept_kwargs=True)
class DPRNNConfig(SeparationConfig):
    r"""
    Configuration of a [`DPRNNModel`]: a learned filterbank encoder, a dual-path RNN mask network and a shared
    transposed-convolution decoder. The defaults are the thesis SB baseline (`dprnn_baseline.yaml`), 2,609,793
    parameters with `n_src=2` and 2,605,633 with `n_src=1`.

    Args:
        n_filters (`int`, *optional*, defaults to 64):
            Encoder filters N; also the feature size the dual-path blocks work at.
        kernel_size (`int`, *optional*, defaults to 16):
            Encoder/decoder filter length in samples. The hop is always `kernel_size // 2` (see `stride`).
        chunk_size (`int`, *optional*, defaults to 100):
            Chunk length K in encoder frames; chunks overlap by 50 % (see `hop_size`).
        n_blocks (`int`, *optional*, defaults to 6):
            Number of dual-path blocks (each: intra-chunk RNN, then inter-chunk RNN).
        rnn_type (`str`, *optional*, defaults to `"LSTM"`):
            `"LSTM"` or `"GRU"`.
        hidden_size (`int`, *optional*, defaults to 128):
            RNN units per direction.
        num_rnn_layers (`int`, *optional*, defaults to 1):
            Stacked RNN layers inside each intra/inter path.
        bidirectional (`bool`, *optional*, defaults to `True`):
            Direction of the inter-chunk RNN (the intra-chunk RNN is always bidirectional). `False` makes the
            inter path causal across chunks; its output projection is then sized `hidden_size → n_filters`
            (SpeechBrain sized it `2·hidden_size` and crashed).
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout between stacked RNN layers (PyTorch semantics: no effect when `num_rnn_layers=1`).
        n_src (`int`, *optional*, defaults to 2):
            Number of output sources (2 for SB, 1 for EB/ES).
        sampling_rate (`int`, *optional*, defaults to 8000):
            Sample rate of the training data in Hz (metadata).

    Example:

    ```python
    >>> from polsess_hf.models.dprnn import DPRNNConfig, DPRNNModel
    >>> config = DPRNNConfig.from_preset("paper-best")  # kernel 2 (stride 1), chunk 250
    >>> config.stride, config.hop_size
    (1, 125)
    >>> model = DPRNNModel(DPRNNConfig())
    ```
    """

    model_type = "dprnn"

    # Named configurations: the thesis baseline and the paper's best setting (kernel 2 / stride 1, K = 250).
    PRESETS = {
        "thesis": {},
        "paper-best": {"kernel_size": 2, "chunk_size": 250},
    }

    n_filters: int = 64
    kernel_size: int = 16
    chunk_size: int = 100
    n_blocks: int = 6
    rnn_type: str = "LSTM"
    hidden_size: int = 128
    num_rnn_layers: int = 1
    bidirectional: bool = True
    dropout: float | int = 0.0

    # Properties, not fields: SpeechBrain's encoder always hops kernel_size // 2 and its dual-path model always
    # hops chunk_size // 2, so letting users set them would only allow inconsistent configurations.
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
        check_positive("n_blocks", self.n_blocks)
        check_choice("rnn_type", self.rnn_type, RNN_TYPES)
        check_positive("hidden_size", self.hidden_size)
        check_positive("num_rnn_layers", self.num_rnn_layers)
        if isinstance(self.dropout, bool):
            raise ValueError(f"`dropout` must be a number in [0, 1), got dropout={self.dropout!r}")
        check_range("dropout", self.dropout, 0.0, 1.0)
        if self.dropout == 1.0:
            raise ValueError("`dropout` must be < 1.0 (1.0 zeroes every activation), got dropout=1.0")
