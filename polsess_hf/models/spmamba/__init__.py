"""SPMamba separator (the PolSESS thesis' best model) with a pure-PyTorch Mamba and optional mamba-ssm kernels."""

from .configuration_spmamba import SPMambaConfig
from .modeling_spmamba import SPMambaModel, SPMambaPreTrainedModel

__all__ = ["SPMambaConfig", "SPMambaModel", "SPMambaPreTrainedModel"]
