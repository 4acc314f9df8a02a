"""DPRNN (dual-path RNN) separator."""

from .configuration_dprnn import DPRNNConfig
from .modeling_dprnn import DPRNNModel, DPRNNPreTrainedModel

__all__ = ["DPRNNConfig", "DPRNNModel", "DPRNNPreTrainedModel"]
