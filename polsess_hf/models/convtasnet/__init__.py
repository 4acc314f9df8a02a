"""Conv-TasNet separator (the PolSESS thesis baseline, SpeechBrain lobes, made exact-length and faster)."""

from .configuration_convtasnet import ConvTasNetConfig
from .modeling_convtasnet import ConvTasNetModel, ConvTasNetPreTrainedModel

__all__ = ["ConvTasNetConfig", "ConvTasNetModel", "ConvTasNetPreTrainedModel"]
