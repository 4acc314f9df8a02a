"""polsess_hf: speech separation for realistic Polish recordings (PolSESS) as Hugging Face models.

``import polsess_hf`` registers ConvTasNet, DPRNN, SepFormer and SPMamba with ``AutoConfig``/``AutoModel``.
"""

__version__ = "0.1.0"

from . import losses  # noqa: E402
from .models import *  # noqa: E402,F401,F403
from .models import __all__ as _models_all  # noqa: E402

__all__ = ["losses", "separate", "__version__", *_models_all]


def __getattr__(name):
    # PEP 562: `polsess_hf.separate` loads the inference module (and SciPy) on first use, not at import.
    if name == "separate":
        from .inference import separate

        return separate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
