"""The base configuration every polsess_hf separator config derives from.

It adds the two fields every separator carries (``n_src``, ``sampling_rate``), refuses unknown keys (a typo in
a YAML must not silently build a different network), and gives one place for messages that name the key, the
value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

__all__ = ["SeparationConfig", "check_choice", "check_positive", "check_range"]

# Keys that transformers itself writes into config.json or passes through from_pretrained; they are not
# model hyper-parameters and are accepted (and then handled by PreTrainedConfig) rather than refused.
_HF_PASSTHROUGH_KEYS = frozenset(
    {
        "model_type",
        "name_or_path",
        "_name_or_path",
        "auto_map",
        "torch_dtype",
        "num_labels",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "_commit_hash",
        "use_cache",
        "tie_word_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "decoder_start_token_id",
    }
)


def check_positive(key: str, value: int | float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        expected = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"`{key}` must be {expected}, got {key}={value!r}")


def check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"`{key}` must be in [{low}, {high}], got {key}={value!r}")


def check_choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{key}` must be one of {sorted(allowed)}, got {key}={value!r}")


@strict(accept_kwargs=True)
class SeparationConfig(PreTrainedConfig):
    r"""
    Base class of the separator configurations.

    Args:
        n_src (`int`, *optional*, defaults to 2):
            Number of sources the network outputs: 2 for the SB task (two speakers), 1 for EB/ES.
        sampling_rate (`int`, *optional*, defaults to 8000):
            Sample rate the weights were trained at, in Hz (metadata: the networks never read it, but inference
            resamples the input to it). PolSESS is 8 kHz.
    """

    n_src: int = 2
    sampling_rate: int = 8000

    def __post_init__(self, **kwargs):
        unknown = sorted(key for key in kwargs if key not in _HF_PASSTHROUGH_KEYS)
        if unknown:
            known = sorted(f.name for f in self.__dataclass_fields__.values() if not f.name.startswith("_"))
            raise ValueError(
                f"{type(self).__name__} got unknown key(s) {unknown}; known keys are {known}"
            )
        super().__post_init__(**kwargs)

    def validate_separation(self):
        """Checks shared by every separator (called by the strict dataclass machinery at creation)."""
        if isinstance(self.n_src, bool) or self.n_src < 1:
            raise ValueError(f"`n_src` must be an integer ≥ 1, got n_src={self.n_src!r}")
        check_positive("sampling_rate", self.sampling_rate)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SeparationConfig":
        """Build a named configuration (see the class' ``PRESETS``) with optional field overrides."""
        presets = getattr(cls, "PRESETS", {})
        if name not in presets:
            raise ValueError(f"{cls.__name__} has no preset {name!r}; available presets: {sorted(presets)}")
        return cls(**{**presets[name], **overrides})
