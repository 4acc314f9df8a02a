"""SepFormer (dual-path transformer) separator."""

from .configuration_sepformer import SepFormerConfig
from .modeling_sepformer import SepFormerModel, SepFormerPreTrainedModel

__all__ = ["SepFormerConfig", "SepFormerModel", "SepFormerPreTrainedModel"]
