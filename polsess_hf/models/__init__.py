"""polsess_hf separators. Importing this package registers every model with AutoConfig/AutoModel."""

from transformers import AutoConfig, AutoModel

from .configuration_separation import SeparationConfig
from .modeling_separation import SeparationPreTrainedModel
from .outputs import SeparationOutput

__all__ = ["SeparationConfig", "SeparationPreTrainedModel", "SeparationOutput", "MODEL_CLASSES"]

# model_type -> (config class, model class); filled below, one line per architecture.
MODEL_CLASSES: dict[str, tuple[type, type]] = {}


def _register(config_class: type, model_class: type) -> None:
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    MODEL_CLASSES[config_class.model_type] = (config_class, model_class)
    globals()[config_class.__name__] = config_class
    globals()[model_class.__name__] = model_class
    __all__.extend([config_class.__name__, model_class.__name__])


# Architectures register themselves here (kept in one block so merges stay trivial).
from .convtasnet import ConvTasNetConfig, ConvTasNetModel; _register(ConvTasNetConfig, ConvTasNetModel)  # noqa: E402,E702
from .dprnn import DPRNNConfig, DPRNNModel; _register(DPRNNConfig, DPRNNModel)  # noqa: E402,E702
from .sepformer import SepFormerConfig, SepFormerModel; _register(SepFormerConfig, SepFormerModel)  # noqa: E402,E702
from .spmamba import SPMambaConfig, SPMambaModel; _register(SPMambaConfig, SPMambaModel)  # noqa: E402,E702
