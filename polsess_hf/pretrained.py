"""Loading a polsess_hf separator by folder or Hub id, with errors that say what was wrong (one place for the
evaluation and inference commands)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_pretrained_separator(model_name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """A polsess_hf separator from a local folder or a Hub id, in fp32 eval mode on ``device``.

    ``trust_remote_code`` is not needed: importing polsess_hf registered every architecture with ``AutoModel``.
    Raises ``FileNotFoundError`` for a missing folder or one without ``config.json``, ``OSError`` when neither a
    folder nor the Hub provides the model, ``ValueError`` for a model that is not a polsess_hf separator.
    """
    from transformers import AutoModel

    from .models import SeparationPreTrainedModel

    name = str(model_name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"model {name!r} is a file; pass the folder that holds config.json")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model folder {str(path)!r} has no config.json; pass a folder written by save_pretrained "
                "(e.g. <output_dir>/best of run_separation.py) or a Hub id"
            )
        source = str(path)
    elif not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {name!r} does not exist (and it is not a Hub id such as user/model)")
    else:
        source = name
    try:
        model = AutoModel.from_pretrained(source)
    except OSError as error:
        where = "the folder" if source != name else "the Hub (not a local folder)"
        raise OSError(f"could not load model {name!r} from {where}: {error}") from error
    if not isinstance(model, SeparationPreTrainedModel):
        raise ValueError(f"{name!r} is a {type(model).__name__}, not a polsess_hf separator")
    return model.float().eval().to(device)
