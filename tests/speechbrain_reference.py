"""Import SpeechBrain (test/benchmark reference only) without torchaudio.

speechbrain 1.1.2 is installed with ``--no-deps``: its torchaudio dependency has no build for torch 2.13, and an
installed torchaudio breaks transformers' Trainer. The parts we compare against (``lobes.models.dual_path``,
``lobes.models.conv_tasnet``) only read ``torchaudio.__version__`` at import time, so a stand-in module is placed
in ``sys.modules`` while speechbrain imports and removed right after, so transformers keeps seeing "no torchaudio".
The polsess_hf package itself never imports speechbrain.
"""

from __future__ import annotations

import importlib
import sys
import types


def import_speechbrain_module(name: str):
    """Import ``speechbrain.<name>`` (e.g. ``lobes.models.dual_path``) with a temporary torchaudio stand-in."""
    full_name = f"speechbrain.{name}"
    if full_name in sys.modules:
        return sys.modules[full_name]
    had_torchaudio = "torchaudio" in sys.modules
    if not had_torchaudio:
        stand_in = types.ModuleType("torchaudio")
        stand_in.__version__ = "2.13.0"
        sys.modules["torchaudio"] = stand_in
    try:
        return importlib.import_module(full_name)
    finally:
        if not had_torchaudio:
            sys.modules.pop("torchaudio", None)
